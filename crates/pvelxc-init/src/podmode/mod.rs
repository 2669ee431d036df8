//! The pod modes of the init binary (see `pvelxc_init::pod` for the contract and PROTOCOL.md,
//! "Pod containers"): `unpack DIR`, `container FILE`, `exec-in PID FILE`, `remove DIR`.
//!
//! * [`unpack`]: a tar stream on stdin becomes a new directory.
//! * [`container`]: the helper (stays the `pct exec` process) and the container's process in
//!   new mount (and pid) namespaces; [`mounts`] builds its root (OCI options: [`opts`]),
//!   [`cgroup`] its cgroups (limit files: [`cglimits`]).
//! * [`execin`]: a process in the namespaces and cgroups of a running container.
//! * [`helper`]: what both helpers share: signal forwarding, the exit status, the child's
//!   parent-death signal and session.
//! * [`sys`]: the syscall wrappers (mount, openat2, mount_setattr, setns, pivot_root).
//!
//! Exit codes: 0 success; 2 usage or a refused path; `unpack`/`remove` 1 on failure;
//! `container`/`exec-in` the process's status (128+signal when killed), 126 for a setup
//! failure, 127/126 for an exec failure (as runc).

pub mod cglimits;
pub mod cgroup;
pub mod container;
pub mod execin;
pub mod helper;
pub mod mounts;
pub mod opts;
pub mod sys;
pub mod unpack;

use pvelxc_init::pod;
use pvelxc_init::process;
use std::io::Read;
use std::path::Path;

/// Most bytes read of a spec file (`container`'s `ctr-<name>.json`, `exec-in`'s Process).
pub const MAX_SPEC: u64 = 1 << 20;

/// `pvelxc-init: <mode>: <msg>` on stderr, in one write.
pub fn log(mode: &str, msg: &str) {
    process::write_stderr(&format!("pvelxc-init: {mode}: {msg}\n"));
}

/// At most `max` bytes of a file; more is an error (nothing beyond `max`+1 is read).
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, String> {
    let f = std::fs::File::open(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    let mut buf = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("read {}: {e}", path.display()))?;
    if buf.len() as u64 > max {
        return Err(format!("read {}: larger than {max} bytes", path.display()));
    }
    Ok(buf)
}

/// `pvelxc-init remove DIR`: 0 removed (or already gone), 1 failure, 2 a path outside
/// [`pod::POD_DIR`].
pub fn remove_main(dir: &Path) -> i32 {
    if let Err(e) = removable(dir) {
        log("remove", &e);
        return 2;
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => {
            log("remove", &format!("{}: {e}", dir.display()));
            1
        }
    }
}

/// `/.pvelxc-pod/<valid name>[/<component>...]`, written plainly (no `.`, `..`, `//`), and
/// no symlink among the ancestors (`remove_dir_all` itself follows none below DIR).
pub fn removable(dir: &Path) -> Result<(), String> {
    let refuse = || format!("refused: {:?} is not below {}/<name>", dir, pod::POD_DIR);
    let s = dir.to_str().ok_or_else(refuse)?;
    let rest = s
        .strip_prefix(pod::POD_DIR)
        .and_then(|r| r.strip_prefix('/'))
        .ok_or_else(refuse)?;
    let parts: Vec<&str> = rest.split('/').collect();
    if !pod::valid_name(parts[0])
        || parts[1..]
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(refuse());
    }
    let mut anc = dir.parent();
    while let Some(a) = anc {
        if a == Path::new("/") {
            break;
        }
        match std::fs::symlink_metadata(a) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!("refused: {} is a symlink", a.display()))
            }
            _ => {}
        }
        anc = a.parent();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removable_paths() {
        for ok in [
            "/.pvelxc-pod/c1",
            "/.pvelxc-pod/c1/rootfs",
            "/.pvelxc-pod/a.b_c-1/x/y",
        ] {
            assert!(removable(Path::new(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "/.pvelxc-pod",
            "/.pvelxc-pod/",
            "/.pvelxc-pod/..",
            "/.pvelxc-pod/c1/../../etc",
            "/.pvelxc-pod/c1/./x",
            "/.pvelxc-pod//c1",
            "/.pvelxc-pod/c1//x",
            "/.pvelxc-podx/c1",
            "/etc",
            "/",
            ".pvelxc-pod/c1",
            "/.pvelxc-pod/a b",
        ] {
            assert!(removable(Path::new(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn bounded_read() {
        let d = std::env::temp_dir().join(format!("pvelxc-podmode-ut-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("f");
        std::fs::write(&f, b"12345").unwrap();
        assert_eq!(read_bounded(&f, 5).unwrap(), b"12345");
        assert!(read_bounded(&f, 4).unwrap_err().contains("larger than 4"));
        assert!(read_bounded(&d.join("missing"), 4).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
