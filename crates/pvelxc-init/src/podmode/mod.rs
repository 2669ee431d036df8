//! The pod modes of the init binary (see `pvelxc_init::pod` for the contract):
//! `unpack DIR`, `remove DIR`.
//!
//! * [`unpack`]: a tar stream on stdin becomes a new directory.
//! * [`remove_main`]: a container's directory removed, only below the pod directory.
//!
//! Exit codes: 0 success; 2 usage or a refused path; 1 on failure.

pub mod unpack;

use pvelxc_init::pod;
use pvelxc_init::process;
use std::path::Path;

/// `pvelxc-init: <mode>: <msg>` on stderr, in one write.
pub fn log(mode: &str, msg: &str) {
    process::write_stderr(&format!("pvelxc-init: {mode}: {msg}\n"));
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
}
