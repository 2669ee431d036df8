//! Init mode (no arguments): PID 1 of the CT. Boot (`ct.json`, `process.json`, ctl.sock,
//! the pty), then one poll loop over the signalfd and the control connection until the
//! process exits. One concern per file:
//! - [`link`]: the control connection to the shim (connect, greet, reconnect, messages);
//! - [`signals`]: the signalfd, signal delivery and reaping;
//! - [`pty`]: the console pty; [`spawn`]: starting the process; [`exit`]: the exit record.

mod exit;
mod link;
mod pty;
mod signals;
mod spawn;

use pvelxc_init::process::{self, Prepared, Process};
use pvelxc_init::proto::FrameReader;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::log;
use pty::{open_pty, Pty};
use signals::signalfd_all;

/// The CT-writable subdirectory of D (a small tmpfs) that holds the exit record.
const RW_DIR: &str = "rw";
/// How long the init keeps trying to reach ctl.sock at boot before giving up.
const CONNECT_DEADLINE: Duration = Duration::from_secs(60);
/// Reconnect period after the shim went away.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

struct Init {
    dir: PathBuf,
    spec: Process,
    prepared: Prepared,
    sigfd: OwnedFd,
    sock: Option<UnixStream>,
    reader: FrameReader,
    stdio: [Option<OwnedFd>; 3],
    pty: Option<Pty>,
    child: Option<libc::pid_t>,
    next_reconnect: Instant,
}

pub(super) fn init_main(dir: &Path) -> i32 {
    let sigfd = match signalfd_all() {
        Ok(f) => f,
        Err(e) => {
            log(&format!("signalfd: {e}"));
            return 255;
        }
    };
    // Container settings (read-only root, network on older Proxmox): before anything runs.
    let ct_err = match std::fs::read(dir.join("ct.json")) {
        Ok(b) => pvelxc_init::ct::CtSettings::from_json(&b)
            .and_then(|s| pvelxc_init::ct::apply(&s))
            .err(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(format!("read ct.json: {e}")),
    };
    let spec_res = std::fs::read(dir.join("process.json"))
        .map_err(|e| format!("read process.json: {e}"))
        .and_then(|b| process::from_json(&b))
        .and_then(|p| ct_err.map_or(Ok(p), Err));
    let (spec, prepared, err) = match spec_res.and_then(|s| process::prepare(&s).map(|p| (s, p))) {
        Ok((s, p)) => (s, p, None),
        Err(e) => (Process::default(), Prepared::default(), Some(e)),
    };
    let mut init = Init {
        dir: dir.to_path_buf(),
        spec,
        prepared,
        sigfd,
        sock: None,
        reader: FrameReader::new(),
        stdio: [None, None, None],
        pty: None,
        child: None,
        next_reconnect: Instant::now(),
    };
    init.connect_at_boot();
    if let Some(e) = err {
        init.fail(&e);
    }
    if init.spec.terminal {
        match open_pty(init.spec.console_size) {
            Ok(p) => init.pty = Some(p),
            Err(e) => init.fail(&e),
        }
    }
    init.greet();
    init.run()
}

impl Init {
    fn run(&mut self) -> ! {
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: self.sigfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.sock.as_ref().map(|s| s.as_raw_fd()).unwrap_or(-1),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let timeout = if self.sock.is_some() {
                -1
            } else {
                RECONNECT_EVERY.as_millis() as libc::c_int
            };
            // SAFETY: two valid pollfds (fd -1 is ignored by poll).
            let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    log(&format!("poll: {e}"));
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
            if fds[0].revents != 0 {
                self.on_signals();
            }
            if fds[1].revents != 0 {
                self.on_socket();
            }
            self.try_reconnect();
        }
    }
}
