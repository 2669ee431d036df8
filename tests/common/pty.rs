//! PTY: run a command with a real controlling terminal whose size we control (the child is
//! session leader with the pty as its controlling terminal). Bounded waits; the child is killed
//! on Drop.

use super::process::argv_string;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A child running on a pty we own (the child is session leader with the pty as its
/// controlling terminal, like a user's shell).
pub struct PtySession {
    child: Child,
    argv: String,
    master: OwnedFd,
    buf: Arc<Mutex<Vec<u8>>>,
    reader: Option<thread::JoinHandle<()>>,
}

fn winsize(rows: u16, cols: u16) -> libc::winsize {
    libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

impl PtySession {
    /// Spawn `cmd` on a new pty of `rows`x`cols`.
    pub fn spawn(mut cmd: Command, rows: u16, cols: u16) -> PtySession {
        let argv = argv_string(&cmd);
        let mut master: libc::c_int = -1;
        let mut slave: libc::c_int = -1;
        let ws = winsize(rows, cols);
        // SAFETY: openpty writes two fds; termios NULL = defaults.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &ws,
            )
        };
        assert_eq!(rc, 0, "openpty failed: {}", std::io::Error::last_os_error());
        // SAFETY: fresh fds from openpty, owned from here on.
        let master = unsafe { OwnedFd::from_raw_fd(master) };
        // SAFETY: as above, the other fresh fd of the pair.
        let slave = unsafe { OwnedFd::from_raw_fd(slave) };
        // SAFETY: set close-on-exec on the master so the child does not inherit it.
        unsafe {
            libc::fcntl(master.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC);
        }
        cmd.stdin(Stdio::from(slave.try_clone().expect("dup slave")))
            .stdout(Stdio::from(slave.try_clone().expect("dup slave")))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn `{argv}` on a pty: {e}"));
        let buf = Arc::new(Mutex::new(Vec::new()));
        let reader_fd = master.try_clone().expect("dup master");
        let b2 = buf.clone();
        let reader = thread::spawn(move || {
            let mut f = fs::File::from(reader_fd);
            let mut chunk = [0u8; 4096];
            loop {
                match f.read(&mut chunk) {
                    Ok(0) | Err(_) => break, // EIO once every slave fd is closed
                    Ok(n) => b2.lock().expect("pty buf").extend_from_slice(&chunk[..n]),
                }
            }
        });
        PtySession {
            child,
            argv,
            master,
            buf,
            reader: Some(reader),
        }
    }

    /// Output so far (raw, with \r\n).
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().expect("pty buf")).into_owned()
    }

    /// Type into the terminal.
    pub fn write(&self, data: &[u8]) {
        let mut f = fs::File::from(self.master.try_clone().expect("dup master"));
        f.write_all(data).expect("write to pty master");
    }

    /// Resize the terminal; the kernel sends SIGWINCH to the foreground process group.
    pub fn set_size(&self, rows: u16, cols: u16) {
        let ws = winsize(rows, cols);
        // SAFETY: TIOCSWINSZ with a valid winsize on our master fd.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ as _, &ws) };
        assert_eq!(rc, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
    }

    /// Wait (bounded) until the output contains `needle`.
    pub fn wait_output_contains(&mut self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        loop {
            if self.output().contains(needle) {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                thread::sleep(Duration::from_millis(100));
                if self.output().contains(needle) {
                    return;
                }
                panic!(
                    "`{}` exited ({st}) before printing {needle:?}; output: {:?}",
                    self.argv,
                    self.output()
                );
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {needle:?} from `{}`; output: {:?}",
                    self.argv,
                    self.output()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait (bounded) for exit; returns (exit code or 128+signal, output).
    pub fn finish(mut self, timeout: Duration) -> (i32, String) {
        let start = Instant::now();
        let st = loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                break st;
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "`{}` (on a pty) did not finish within {timeout:?}; output: {:?}",
                    self.argv,
                    self.output()
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        if let Some(r) = self.reader.take() {
            let deadline = Instant::now() + Duration::from_secs(3);
            while !r.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
        }
        let code = st
            .code()
            .or_else(|| st.signal().map(|s| 128 + s))
            .unwrap_or(-1);
        (code, self.output())
    }
}

impl Drop for PtySession {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Run `cmd` on a pty of the given size to completion (bounded).
pub fn run_in_pty(cmd: Command, rows: u16, cols: u16, timeout: Duration) -> (i32, String) {
    PtySession::spawn(cmd, rows, cols).finish(timeout)
}
