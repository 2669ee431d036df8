//! Per-container state dir, and finding/killing a QEMU by pid safely (crash cleanup).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Bytes the agent's run dir adds below the state dir: `/pvelxc-vm-<pid>-<n>/ctl.sock`
/// (pid up to 7 digits, counter up to 4), plus one for the terminating NUL.
const RUN_DIR_SUFFIX: usize = "/pvelxc-vm-".len() + 7 + 1 + 4 + "/ctl.sock".len() + 1;
/// `sun_path` size.
const SUN_PATH: usize = 108;

/// `<base>/<ns>/<id>`, or `<base>/h/<hash of ns/id>` when that would make the control socket
/// path too long for a unix socket.
pub fn state_dir(base: &str, ns: &str, id: &str) -> Result<PathBuf> {
    let plain = Path::new(base).join(ns).join(id);
    if plain.as_os_str().len() + RUN_DIR_SUFFIX <= SUN_PATH {
        return Ok(plain);
    }
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("{ns}/{id}").as_bytes());
    let name: String = h.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let hashed = Path::new(base).join("h").join(name);
    if hashed.as_os_str().len() + RUN_DIR_SUFFIX > SUN_PATH {
        return Err(Error::invalid(format!(
            "vm.state_dir {base:?} is too long for unix socket paths (keep it under 50 bytes)"
        )));
    }
    Ok(hashed)
}

/// The argv of `pid`, NUL-joined as in /proc (empty when gone).
fn cmdline(pid: u32) -> Vec<u8> {
    std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()
}

/// The process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !matches!(
            s.rfind(')')
                .and_then(|i| s[i + 1..].split_whitespace().next()),
            Some("Z") | Some("X") | None
        ),
        Err(_) => false,
    }
}

/// True when `pid` is alive and its command line names a path inside `dir` (QEMU's sockets and
/// logs live there), so a reused pid is never hit.
pub fn is_our_qemu(pid: u32, dir: &Path) -> bool {
    if pid == 0 || !alive(pid) {
        return false;
    }
    let cl = cmdline(pid);
    // With the trailing slash, so `<ns>/c1` never matches `<ns>/c10`.
    let mut needle = dir.as_os_str().as_encoded_bytes().to_vec();
    needle.push(b'/');
    needle.len() > 1 && cl.windows(needle.len()).any(|w| w == needle.as_slice())
}

/// SIGKILL the QEMU at `pid` if it is ours (see [`is_our_qemu`]) and wait (bounded) until it is
/// gone or a zombie. Returns whether it was found.
pub async fn kill_qemu(pid: u32, dir: &Path) -> bool {
    if !is_our_qemu(pid, dir) {
        return false;
    }
    // SAFETY: plain kill(2) on a pid verified just above to be our QEMU.
    unsafe {
        libc::kill(pid as i32, libc::SIGCONT);
        libc::kill(pid as i32, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if alive(pid) {
        log::warn!("QEMU {pid} still alive 10 s after SIGKILL");
    }
    true
}

/// Live processes whose command line names `dir` (QEMUs of this container, recorded or not).
pub fn qemus_using(dir: &Path) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    rd.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|p| *p != me && is_our_qemu(*p, dir))
        .collect()
}

/// Remove the state dir, and its parent when that is now empty (idempotent). The shares mounted
/// in it are detached first; while one stays mounted nothing is removed.
pub fn remove_dir(dir: &Path) -> Result<()> {
    super::share::unmount_all(dir)?;
    let left = super::share::mounts_below(dir);
    if !left.is_empty() {
        return Err(Error::internal(format!(
            "not removing {}: mounts below it: {left:?}",
            dir.display()
        )));
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("remove {}", dir.display()), e)),
    }
    // The per-namespace (or `h`) parent, once empty; never the configured base above it.
    if let Some(parent) = dir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_hashed_dirs() {
        let d = state_dir("/run/pvelxc/vm", "default", "c1").expect("dir");
        assert_eq!(d, PathBuf::from("/run/pvelxc/vm/default/c1"));
        let long = "a".repeat(64);
        let d = state_dir("/run/pvelxc/vm", "k8s.io", &long).expect("dir");
        assert!(d.starts_with("/run/pvelxc/vm/h/"), "{}", d.display());
        assert!(d.as_os_str().len() + RUN_DIR_SUFFIX <= SUN_PATH);
        assert_eq!(
            d,
            state_dir("/run/pvelxc/vm", "k8s.io", &long).expect("same")
        );
        assert!(state_dir(&"/x".repeat(40), "n", &long).is_err());
    }

    #[test]
    fn pid_check_requires_the_dir_in_the_cmdline() {
        let me = std::process::id();
        assert!(!is_our_qemu(me, Path::new("/run/pvelxc/vm/none/x")));
        assert!(!is_our_qemu(0, Path::new("/")));
        let exe = std::env::current_exe().expect("exe");
        // Our own argv[0] names the test binary's directory.
        let dir = exe.parent().expect("parent");
        assert!(is_our_qemu(me, dir));
    }
}
