//! Start: fork the process behind an exec barrier, with its stdio or tty, and execve it.

use pvelxc_init::process::{self, Prepared};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::Init;

impl Init {
    pub(super) fn spawn(&mut self) -> Result<libc::pid_t, String> {
        let devnull = File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| format!("open /dev/null: {e}"))?;
        let src: [RawFd; 3] = match &self.pty {
            Some(p) => [p.slave.as_raw_fd(); 3],
            None => {
                let pick = |o: &Option<OwnedFd>| {
                    o.as_ref()
                        .map(|f| f.as_raw_fd())
                        .unwrap_or(devnull.as_raw_fd())
                };
                [
                    pick(&self.stdio[0]),
                    pick(&self.stdio[1]),
                    pick(&self.stdio[2]),
                ]
            }
        };
        let tty = self.pty.as_ref().map(|p| p.slave.as_raw_fd());
        // Exec barrier: an O_CLOEXEC pipe whose write end the child holds until execve
        // (or _exit). Started is only sent once the child is in its own session and
        // runs the target program, so signals the shim sends after Started (including
        // to the process group) always reach it.
        let mut pfd = [0 as libc::c_int; 2];
        // SAFETY: pipe2 into a local array.
        if unsafe { libc::pipe2(pfd.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(format!("pipe2: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: fresh fds from pipe2, owned from here on.
        let (barrier_r, barrier_w) =
            unsafe { (OwnedFd::from_raw_fd(pfd[0]), OwnedFd::from_raw_fd(pfd[1])) };
        // SAFETY: single-threaded process; the child only runs child_main and exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(format!("fork: {}", std::io::Error::last_os_error()));
        }
        if pid == 0 {
            drop(barrier_r);
            let code = child_main(&self.prepared, src, tty);
            // SAFETY: leave without running the parent's atexit/destructors.
            unsafe { libc::_exit(code) };
        }
        drop(barrier_w);
        let mut byte = [0u8; 1];
        loop {
            // SAFETY: read into a local buffer; returns 0 once every write end is closed.
            let n = unsafe {
                libc::read(
                    barrier_r.as_raw_fd(),
                    byte.as_mut_ptr() as *mut libc::c_void,
                    1,
                )
            };
            if n >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                break;
            }
        }
        drop(barrier_r);
        // Parent: the child owns the stdio now.
        self.stdio = [None, None, None];
        self.pty = None;
        drop(devnull);
        Ok(pid)
    }
}

/// Runs in the forked child: stdio/tty, the Process, execve. Returns an exit code
/// only on failure. Async-signal-safe (no allocation), like `pvelxc_guest::run`.
fn child_main(p: &Prepared, src: [RawFd; 3], tty: Option<RawFd>) -> i32 {
    process::reset_signals();
    // SAFETY: plain syscalls on fds the parent owns and keeps open across fork.
    unsafe {
        if libc::setsid() < 0 {
            process::Failure::last("setsid").report(process::TAG);
            return 126;
        }
        if let Some(t) = tty {
            if libc::ioctl(t, libc::TIOCSCTTY, 0) != 0 {
                process::Failure::last("TIOCSCTTY").report(process::TAG);
                return 126;
            }
        }
        // Move sources above 2 first so dup2 never clobbers a source.
        let mut hi = [0; 3];
        for i in 0..3 {
            hi[i] = libc::fcntl(src[i], libc::F_DUPFD_CLOEXEC, 10);
            if hi[i] < 0 {
                process::Failure::last("dup stdio").report(process::TAG);
                return 126;
            }
        }
        for (i, h) in hi.iter().enumerate() {
            if libc::dup2(*h, i as libc::c_int) < 0 {
                process::Failure::last("dup2 stdio").report(process::TAG);
                return 126;
            }
        }
    }
    if let Err(e) = process::apply(p) {
        e.report(process::TAG);
        return 126;
    }
    process::exec(p, process::TAG)
}
