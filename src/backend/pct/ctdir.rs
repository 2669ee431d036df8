//! The per-container host directory D (`<state_dir>/<vmid>`, mounted at `/.pvelxc` in the CT):
//! the static init, process.json, exec specs, the control socket and the exit file.
//! Owners and modes follow crates/pvelxc-init/PROTOCOL.md (unprivileged CT root = 100000).

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Process;

use super::vmid::Vmid;
use crate::error::{Error, Result};

/// Host uid/gid of CT root (Proxmox's default mapping for unprivileged CTs).
pub const UNPRIVILEGED_ROOT: u32 = 100_000;
pub const CTL_SOCK: &str = "ctl.sock";
pub const EXIT_FILE: &str = "exit";

fn io(what: impl std::fmt::Display, p: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    let ctx = format!("{what} {}", p.display());
    move |e| Error::io(ctx, e)
}

fn chmod(p: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(io("chmod", p))
}

fn chown(p: &Path, id: u32) -> Result<()> {
    std::os::unix::fs::chown(p, Some(id), Some(id)).map_err(io("chown", p))
}

/// The init binary the shim ships: `init_path`, else `pvelxc-init` next to the shim.
pub fn find_init(init_path: &str) -> std::result::Result<PathBuf, String> {
    let p = if init_path.is_empty() {
        std::env::current_exe()
            .map_err(|e| format!("cannot locate the shim binary: {e}"))?
            .with_file_name("pvelxc-init")
    } else {
        PathBuf::from(init_path)
    };
    if !p.is_file() {
        return Err(format!(
            "the CT init {} does not exist (set [pct] init_path, or install a static pvelxc-init \
             next to the shim)",
            p.display()
        ));
    }
    if is_dynamic_elf(&p).unwrap_or(false) {
        return Err(format!(
            "the CT init {} is dynamically linked; CTs have no libc to offer it: build it with \
             RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release -p pvelxc-init \
             --target x86_64-unknown-linux-gnu",
            p.display()
        ));
    }
    Ok(p)
}

/// Whether an ELF64 little-endian file has a PT_INTERP program header.
fn is_dynamic_elf(p: &Path) -> std::io::Result<bool> {
    let mut f = std::fs::File::open(p)?;
    let mut buf = Vec::new();
    f.by_ref().take(64 * 1024).read_to_end(&mut buf)?;
    let u16_at = |o: usize| buf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        buf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        buf.get(o..o + 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    };
    if buf.get(..5) != Some(b"\x7fELF\x02") {
        return Ok(false);
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return Ok(false);
    };
    for i in 0..usize::from(phnum) {
        let off = phoff as usize + i * usize::from(phentsize);
        if u32_at(off) == Some(3) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// D for a VMID.
pub fn path(state_dir: &Path, vmid: Vmid) -> PathBuf {
    state_dir.join(vmid.to_string())
}

/// A world-executable copy of the init in `state_dir`, keyed by the source's identity, so
/// every D can hard-link it.
fn cached_init(state_dir: &Path, init: &Path) -> Result<PathBuf> {
    let md = std::fs::metadata(init).map_err(io("stat", init))?;
    let name = format!(
        ".init-{:x}-{:x}-{:x}-{:x}",
        md.dev(),
        md.ino(),
        md.size(),
        md.mtime()
    );
    let cached = state_dir.join(name);
    if cached.is_file() {
        return Ok(cached);
    }
    let tmp = state_dir.join(format!(".init.tmp-{}", std::process::id()));
    std::fs::copy(init, &tmp).map_err(io("copy init to", &tmp))?;
    chmod(&tmp, 0o755)?;
    std::fs::rename(&tmp, &cached).map_err(io("rename", &cached))?;
    Ok(cached)
}

/// Make D with the init and process.json; returns the listening control socket.
pub fn prepare(
    state_dir: &Path,
    vmid: Vmid,
    unprivileged: bool,
    init: &Path,
    process: &Process,
) -> Result<(PathBuf, UnixListener)> {
    std::fs::create_dir_all(state_dir).map_err(io("create", state_dir))?;
    // Searchable by the CT's mapped root (LXC binds D from inside the user namespace).
    let mode = std::fs::metadata(state_dir)
        .map_err(io("stat", state_dir))?
        .permissions()
        .mode();
    if mode & 0o001 == 0 {
        chmod(state_dir, (mode & 0o7777) | 0o011)?;
    }
    let d = path(state_dir, vmid);
    // A stale D of a destroyed CT with the same VMID: start clean.
    if d.exists() {
        std::fs::remove_dir_all(&d).map_err(io("remove stale", &d))?;
    }
    std::fs::create_dir(&d).map_err(io("create", &d))?;
    let owner = if unprivileged { UNPRIVILEGED_ROOT } else { 0 };
    chown(&d, owner)?;
    chmod(&d, 0o700)?;

    let cached = cached_init(state_dir, init)?;
    let dst = d.join("init");
    if std::fs::hard_link(&cached, &dst).is_err() {
        std::fs::copy(&cached, &dst).map_err(io("copy init to", &dst))?;
        chmod(&dst, 0o755)?;
    }
    write_json(&d.join("process.json"), process)?;

    let sock = d.join(CTL_SOCK);
    if sock.as_os_str().len() > 107 {
        return Err(Error::invalid(format!(
            "control socket path {} is too long; use a shorter [pct] state_dir",
            sock.display()
        )));
    }
    let l = UnixListener::bind(&sock).map_err(io("bind", &sock))?;
    chown(&sock, owner)?;
    chmod(&sock, 0o600)?;
    Ok((d, l))
}

/// Write a spec file (root-owned, 0644: readable in an unprivileged CT).
pub fn write_json(p: &Path, process: &Process) -> Result<()> {
    let data = serde_json::to_vec(process)?;
    std::fs::write(p, data).map_err(io("write", p))?;
    chmod(p, 0o644)
}

/// The init's exit record, if it wrote one.
pub fn read_exit(d: &Path) -> Option<pvelxc_init::proto::ExitRecord> {
    let b = std::fs::read(d.join(EXIT_FILE)).ok()?;
    pvelxc_init::proto::ExitRecord::from_json(&b).ok()
}

/// Remove D (best effort when it is already gone).
pub fn remove(d: &Path) -> Result<()> {
    match std::fs::remove_dir_all(d) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("remove {}", d.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_detection() {
        // The test binary itself is dynamically linked; /bin/sh too.
        assert!(is_dynamic_elf(Path::new("/bin/sh")).unwrap());
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("x");
        std::fs::write(&f, "#!/bin/sh\n").unwrap();
        assert!(!is_dynamic_elf(&f).unwrap());
        assert!(find_init(&f.display().to_string()).is_ok());
        assert!(find_init("/bin/sh")
            .unwrap_err()
            .contains("dynamically linked"));
        assert!(find_init("/nonexistent/init")
            .unwrap_err()
            .contains("does not exist"));
    }

    #[test]
    fn prepare_layout() {
        let d = tempfile::tempdir().unwrap();
        let init = d.path().join("init-src");
        std::fs::write(&init, "x").unwrap();
        let state = d.path().join("state");
        let p = Process::default();
        let vmid = Vmid::new(300_999).unwrap();
        let (dir, _l) = prepare(&state, vmid, false, &init, &p).unwrap();
        assert_eq!(dir, state.join("300999"));
        let m = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(m(&dir), 0o700);
        assert_eq!(m(&dir.join("init")), 0o755);
        assert_eq!(m(&dir.join("process.json")), 0o644);
        assert!(dir.join(CTL_SOCK).exists());
        assert!(read_exit(&dir).is_none());
        std::fs::write(
            dir.join(EXIT_FILE),
            b"{\"pid\":2,\"exit_code\":3,\"signal\":null,\"time_ns\":1}\n",
        )
        .unwrap();
        assert_eq!(read_exit(&dir).unwrap().exit_code, 3);
        remove(&dir).unwrap();
        remove(&dir).unwrap();
    }
}
