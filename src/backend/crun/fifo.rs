//! Starting a created crun container the way `crun start` does, without running crun.
//!
//! `crun create` leaves the container's init blocked reading `<root>/<id>/exec.fifo` (it holds
//! the read end); `crun start` opens the fifo for writing, unlinks it (from then on crun's
//! `state` says "running") and writes one byte, which lets the init exec the user's program.
//! The same protocol in crun 1.8 to 1.2x. A writer open that finds no reader fails with ENXIO
//! instead of blocking: then the init is gone or the runtime uses another protocol (runc's
//! init is the writer), and the caller falls back to the runtime's own `start`.

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long Start waits for the released init to exec the user's program.
const EXEC_WAIT: Duration = Duration::from_millis(100);
/// Within this much of it, the wait polls every 50 µs without yielding to the runtime (an init
/// execs within a millisecond or so); after, once per timer tick.
const EXEC_SPIN: Duration = Duration::from_millis(2);

/// Why the fifo could not be used (the caller then runs the runtime's `start`).
#[derive(Debug)]
pub struct NotUsable(pub String);

/// Release the init of container `id` under runtime root `root`.
pub fn release(root: &Path, id: &str) -> Result<(), NotUsable> {
    let path = root.join(id).join("exec.fifo");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|e| NotUsable(format!("open {}: {e}", path.display())))?;
    let is_fifo = f
        .metadata()
        .map(|m| m.file_type().is_fifo())
        .unwrap_or(false);
    if !is_fifo {
        return Err(NotUsable(format!("{} is not a fifo", path.display())));
    }
    std::fs::remove_file(&path)
        .map_err(|e| NotUsable(format!("unlink {}: {e}", path.display())))?;
    (&f).write_all(&[0])
        .map_err(|e| NotUsable(format!("write {}: {e}", path.display())))
}

/// The program process `pid` runs (`/proc/<pid>/exe`), None once it is gone.
pub fn program_of(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// Wait, bounded by [`EXEC_WAIT`], until the released init `pid` no longer runs `before` (the
/// runtime's code): it has exec'd the user's program, or ended. `crun start` returns about
/// that late; a caller listing the container's processes right after Start sees the program.
pub async fn wait_exec(pid: u32, before: Option<PathBuf>) {
    let Some(before) = before else {
        return;
    };
    let start = Instant::now();
    while program_of(pid).as_ref() == Some(&before) {
        let waited = start.elapsed();
        if waited > EXEC_WAIT {
            log::debug!("init {pid} still runs the runtime's code after {waited:?}");
            return;
        }
        if waited < EXEC_SPIN {
            std::thread::sleep(Duration::from_micros(50));
        } else {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn mkfifo(p: &Path) {
        nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    }

    #[test]
    fn a_waiting_reader_gets_one_byte_and_the_fifo_is_gone() {
        let root = tempfile::tempdir().expect("dir");
        std::fs::create_dir(root.path().join("c1")).expect("mkdir");
        let path = root.path().join("c1/exec.fifo");
        mkfifo(&path);
        // What crun's init holds: a non-blocking read end.
        let mut reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .expect("reader");
        release(root.path(), "c1").expect("release");
        assert!(!path.exists(), "unlinked, as crun start does");
        let mut b = [9u8; 2];
        assert_eq!(reader.read(&mut b).expect("read"), 1);
        assert_eq!(b[0], 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_wait_ends_when_the_program_changes_or_is_gone() {
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "read x; exec sleep 5"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        let pid = child.id();
        let before = program_of(pid);
        assert!(before.is_some());
        let t = Instant::now();
        wait_exec(pid, before.clone()).await;
        assert!(
            t.elapsed() >= EXEC_WAIT,
            "no exec yet: waits the whole bound"
        );
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"go\n").expect("write");
        let t = Instant::now();
        wait_exec(pid, before).await;
        assert!(t.elapsed() < EXEC_WAIT, "the exec ends the wait");
        assert_ne!(program_of(pid), program_of(std::process::id()));
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(program_of(pid), None);
    }

    #[test]
    fn no_reader_or_no_fifo_falls_back() {
        let root = tempfile::tempdir().expect("dir");
        std::fs::create_dir(root.path().join("c1")).expect("mkdir");
        assert!(release(root.path(), "c1").is_err(), "no fifo");
        let path = root.path().join("c1/exec.fifo");
        mkfifo(&path);
        // runc's protocol (or a dead init): nobody reads, the open fails instead of blocking.
        assert!(release(root.path(), "c1").is_err());
        assert!(path.exists(), "left for the runtime's own start");
        // A symlink planted in place of the fifo is not followed.
        std::fs::remove_file(&path).expect("rm");
        let target = root.path().join("target");
        mkfifo(&target);
        let _reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&target)
            .expect("reader");
        std::os::unix::fs::symlink(&target, &path).expect("symlink");
        assert!(release(root.path(), "c1").is_err());
        assert!(target.exists());
    }
}
