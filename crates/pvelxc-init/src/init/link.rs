//! The control connection to the shim (ctl.sock): connect at boot, Hello (+ the pty),
//! reconnect after the shim went away, and the shim's messages (Stdio, Start, Signal).

use pvelxc_init::proto::{self, FrameReader, Msg, PROTOCOL_VERSION};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{Init, CONNECT_DEADLINE, RECONNECT_EVERY};
use crate::log;

impl Init {
    fn ctl_path(&self) -> PathBuf {
        self.dir.join("ctl.sock")
    }

    pub(super) fn connect_at_boot(&mut self) {
        let deadline = Instant::now() + CONNECT_DEADLINE;
        let mut last = String::new();
        while Instant::now() < deadline {
            match UnixStream::connect(self.ctl_path()) {
                Ok(s) => {
                    self.sock = Some(s);
                    return;
                }
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        log(&format!("connect {}: {last}", self.ctl_path().display()));
        self.fail("could not reach the shim's ctl.sock");
    }

    /// Send a message; on failure drop the connection (we keep running).
    pub(super) fn send(&mut self, msg: &Msg, fds: &[std::os::fd::BorrowedFd<'_>]) {
        if let Some(s) = &self.sock {
            if let Err(e) = proto::send_msg(s.as_fd(), msg, fds) {
                log(&format!("send to shim: {e}; will reconnect"));
                self.disconnect();
            }
        }
    }

    fn disconnect(&mut self) {
        self.sock = None;
        self.reader = FrameReader::new();
        self.next_reconnect = Instant::now() + RECONNECT_EVERY;
    }

    /// Hello (+ the pty master while not started) on a fresh connection.
    pub(super) fn greet(&mut self) {
        let hello = Msg::Hello {
            version: PROTOCOL_VERSION,
            terminal: self.spec.terminal,
            // SAFETY: getpid cannot fail.
            pid: unsafe { libc::getpid() },
            started: self.child,
        };
        self.send(&hello, &[]);
        if self.child.is_none() {
            if let (Some(p), Some(s)) = (&self.pty, &self.sock) {
                if let Err(e) = proto::send_msg(s.as_fd(), &Msg::Pty, &[p.master.as_fd()]) {
                    log(&format!("send pty: {e}"));
                    self.disconnect();
                }
            }
        }
    }

    pub(super) fn try_reconnect(&mut self) {
        if self.sock.is_some() || Instant::now() < self.next_reconnect {
            return;
        }
        match UnixStream::connect(self.ctl_path()) {
            Ok(s) => {
                self.sock = Some(s);
                self.greet();
            }
            Err(_) => self.next_reconnect = Instant::now() + RECONNECT_EVERY,
        }
    }

    pub(super) fn on_socket(&mut self) {
        let Some(s) = &self.sock else { return };
        match proto::recv_into(s.as_fd(), &mut self.reader) {
            Ok(0) => {
                log("shim closed ctl.sock; will reconnect");
                self.disconnect();
                return;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => {
                log(&format!("read ctl.sock: {e}; will reconnect"));
                self.disconnect();
                return;
            }
        }
        loop {
            match self.reader.next_msg() {
                Ok(Some((msg, fds))) => self.on_msg(msg, fds),
                Ok(None) => return,
                Err(e) => {
                    log(&format!("protocol error: {e}; reconnecting"));
                    self.disconnect();
                    return;
                }
            }
        }
    }

    fn on_msg(&mut self, msg: Msg, fds: Vec<OwnedFd>) {
        match msg {
            Msg::Stdio {
                stdin,
                stdout,
                stderr,
            } if self.child.is_none() => {
                let mut it = fds.into_iter();
                let mut take = |present: bool| if present { it.next() } else { None };
                self.stdio = [take(stdin), take(stdout), take(stderr)];
            }
            Msg::Start if self.child.is_none() => match self.spawn() {
                Ok(pid) => {
                    self.child = Some(pid);
                    self.send(&Msg::Started { pid }, &[]);
                }
                Err(e) => self.fail(&e),
            },
            Msg::Start => {
                if let Some(pid) = self.child {
                    self.send(&Msg::Started { pid }, &[]);
                }
            }
            Msg::Signal { signo, all } => self.deliver(signo, all, false),
            other => log(&format!("ignoring unexpected message {other:?}")),
        }
    }
}
