//! Starting, finding and stopping the shape's service manager.

use std::fs::{self, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill as send, Signal};
use nix::unistd::{fork, setsid, ForkResult, Pid};

use super::ns::Res;
use crate::paths::Root;

fn pid_file(root: &Path) -> PathBuf {
    root.join("run/manager.pid")
}
fn socket(root: &Path) -> PathBuf {
    root.join("run/manager.sock")
}
fn log_file(root: &Path) -> PathBuf {
    root.join("run/manager.log")
}

/// `pve-shape __manager --root R`: serve until killed.
pub fn run_manager(root: &Path) -> Res<()> {
    let node = fs::read_to_string(root.join("node"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "pve".into());
    let r = Root {
        root: root.to_path_buf(),
        node,
    };
    crate::manager::server::run(r).map_err(|e| e.to_string())
}

/// Pid of a live manager (answers on the socket).
pub fn ping(root: &Path) -> Res<i32> {
    crate::manager::ping(&socket(root))
        .map(|p| p as i32)
        .map_err(|e| e.to_string())
}

/// Start the manager detached (double fork: it is not a child of the command pve-shape
/// execs), in the current mount namespace; wait until it answers.
pub fn spawn(root: &Path) -> Res<()> {
    let exe = fs::read_link("/proc/self/exe").map_err(|e| format!("cannot find myself - {e}"))?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file(root))
        .map_err(|e| format!("unable to open '{}' - {e}", log_file(root).display()))?;
    let log2 = log
        .try_clone()
        .map_err(|e| format!("unable to dup log - {e}"))?;
    let _ = fs::remove_file(socket(root));
    // SAFETY: pve-shape is single-threaded; the child only calls setsid/fork/exec/_exit.
    match unsafe { fork() }.map_err(|e| format!("fork failed - {e}"))? {
        ForkResult::Child => {
            let _ = setsid();
            // SAFETY: as above
            if let Ok(ForkResult::Child) = unsafe { fork() } {
                let e = Command::new(&exe)
                    .arg("__manager")
                    .arg("--root")
                    .arg(root)
                    .current_dir("/")
                    .stdin(Stdio::null())
                    .stdout(Stdio::from(log))
                    .stderr(Stdio::from(log2))
                    .exec();
                eprintln!("pve-shape: cannot run the manager - {e}");
            }
            // SAFETY: _exit is always safe
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            let _ = nix::sys::wait::waitpid(child, None);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(pid) = ping(root) {
            fs::write(pid_file(root), format!("{pid}\n"))
                .map_err(|e| format!("unable to write '{}' - {e}", pid_file(root).display()))?;
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the service manager did not come up (see '{}')",
                log_file(root).display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Is `pid` this root's manager? (The pid file may be stale and the pid reused.)
fn is_our_manager(pid: i32, root: &Path) -> bool {
    let Ok(cmd) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
    args.contains(&&b"__manager"[..]) && args.contains(&root.as_os_str().as_encoded_bytes())
}

/// Stop the manager (SIGTERM, then SIGKILL after 5 s); idempotent.
pub fn kill(root: &Path) -> Res<()> {
    let pid = fs::read_to_string(pid_file(root))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok());
    if let Some(pid) = pid.filter(|p| *p > 1 && is_our_manager(*p, root)) {
        let _ = send(Pid::from_raw(pid), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while is_our_manager(pid, root) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if is_our_manager(pid, root) {
            let _ = send(Pid::from_raw(pid), Signal::SIGKILL);
            std::thread::sleep(Duration::from_millis(100));
        }
        if is_our_manager(pid, root) {
            return Err(format!("service manager {pid} does not stop"));
        }
    }
    let _ = fs::remove_file(pid_file(root));
    let _ = fs::remove_file(socket(root));
    Ok(())
}

/// Number of live `lxc-start -P <lxcpath>` processes (zombies have no cmdline).
pub fn lxc_starts_of(lxcpath: &Path) -> usize {
    let want = lxcpath.as_os_str().as_encoded_bytes();
    let Ok(rd) = fs::read_dir("/proc") else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            let Ok(c) = fs::read(e.path().join("cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
            args.first()
                .map(|a| a.ends_with(b"lxc-start"))
                .unwrap_or(false)
                && args.contains(&want)
        })
        .count()
}
