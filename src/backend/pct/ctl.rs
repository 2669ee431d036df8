//! The shim's side of the control socket (crates/pvelxc-init/PROTOCOL.md): accept the init's
//! connection, learn its host pid (SO_PEERCRED: no pct call needed), hand over stdio or take the
//! pty master, then `start`, `signal`, and the `started` / `exited` reports.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pvelxc_init::proto::{self, FrameReader, Msg};
use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::sys::fdio;
use crate::sys::stdio::{ProcessIo, StdioPaths};

/// The init's `exited` report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exited {
    pub exit_code: i32,
}

/// A live connection to a CT's init.
pub struct Ctl {
    writer: Mutex<Option<UnixStream>>,
    /// The init's pid in the shim's (host) pid namespace.
    pub host_pid: u32,
    started: watch::Receiver<Option<i32>>,
    exited: watch::Receiver<Option<Exited>>,
}

fn io_err(what: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(what.to_string(), e)
}

/// Wait (bounded) for the init to connect, then set up its stdio.
pub async fn accept(
    listener: UnixListener,
    timeout: Duration,
    stdio: &StdioPaths,
) -> Result<(Arc<Ctl>, ProcessIo)> {
    listener
        .set_nonblocking(true)
        .map_err(io_err("control socket"))?;
    let l = tokio::net::UnixListener::from_std(listener).map_err(io_err("control socket"))?;
    let (stream, _) = tokio::time::timeout(timeout, l.accept())
        .await
        .map_err(|_| {
            Error::DeadlineExceeded(format!(
                "the CT's init did not connect to the control socket within {}s",
                timeout.as_secs()
            ))
        })?
        .map_err(io_err("accept on the control socket"))?;
    let cred = stream.peer_cred().map_err(io_err("SO_PEERCRED"))?;
    let host_pid = cred
        .pid()
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p > 0)
        .ok_or_else(|| Error::internal("the init's pid is not visible from the shim"))?;
    // Only the CT's PID 1 may be the init (nothing else runs in the CT before Start).
    if ns_pid_of(host_pid) != Some(1) {
        return Err(Error::internal(format!(
            "the control socket's peer (host pid {host_pid}) is not the CT's init"
        )));
    }
    let stream = stream.into_std().map_err(io_err("control socket"))?;
    stream
        .set_nonblocking(false)
        .map_err(io_err("control socket"))?;
    let terminal = stdio.terminal;
    let paths = stdio.clone();
    let (stream, reader, io) =
        tokio::task::spawn_blocking(move || handshake(stream, terminal, &paths))
            .await
            .map_err(|e| Error::internal(format!("control handshake: {e}")))??;
    let (started_tx, started) = watch::channel(None);
    let (exited_tx, exited) = watch::channel(None);
    let rd = stream.try_clone().map_err(io_err("control socket"))?;
    std::thread::Builder::new()
        .name(format!("ctl-{host_pid}"))
        .spawn(move || read_loop(rd, reader, started_tx, exited_tx))
        .map_err(io_err("spawn control reader"))?;
    Ok((
        Arc::new(Ctl {
            writer: Mutex::new(Some(stream)),
            host_pid,
            started,
            exited,
        }),
        io,
    ))
}

/// hello, then pty (terminal) or stdio (pipes).
fn handshake(
    stream: UnixStream,
    terminal: bool,
    paths: &StdioPaths,
) -> Result<(UnixStream, FrameReader, ProcessIo)> {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io_err("control socket"))?;
    let mut reader = FrameReader::new();
    let next = |reader: &mut FrameReader| -> Result<(Msg, Vec<OwnedFd>)> {
        proto::recv_msg(stream.as_fd(), reader)
            .map_err(io_err("read from the CT's init"))?
            .ok_or_else(|| Error::internal("the CT's init closed the control socket"))
    };
    let (hello, _) = next(&mut reader)?;
    match hello {
        Msg::Hello { version, .. } if version == proto::PROTOCOL_VERSION => {}
        Msg::Hello { version, .. } => {
            return Err(Error::internal(format!(
                "the CT's init speaks protocol {version}, the shim {}",
                proto::PROTOCOL_VERSION
            )))
        }
        Msg::Error { msg } => return Err(Error::internal(format!("the CT's init: {msg}"))),
        other => {
            return Err(Error::internal(format!(
                "unexpected {other:?} from the CT's init"
            )))
        }
    }
    let io = if terminal {
        let mut stray = 0u32;
        loop {
            match next(&mut reader)? {
                (Msg::Pty, mut fds) if !fds.is_empty() => {
                    break ProcessIo::Pty {
                        master: fds.remove(0),
                    }
                }
                (Msg::Error { msg }, _) => {
                    return Err(Error::internal(format!("the CT's init: {msg}")))
                }
                (m, _) => {
                    // Bounded: a flood of messages cannot keep this thread forever.
                    stray += 1;
                    if stray > 16 {
                        return Err(Error::internal("the CT's init sent no pty"));
                    }
                    log::debug!("control: ignoring {m:?} before the pty")
                }
            }
        }
    } else {
        let mut mine: [Option<OwnedFd>; 3] = [None, None, None];
        let mut theirs: Vec<OwnedFd> = Vec::new();
        let want = [
            !paths.stdin.is_empty(),
            !paths.stdout.is_empty(),
            !paths.stderr.is_empty(),
        ];
        for (i, w) in want.iter().enumerate() {
            if !w {
                continue;
            }
            let (r, wr) = fdio::pipe().map_err(io_err("pipe"))?;
            let (m, t) = if i == 0 { (wr, r) } else { (r, wr) };
            mine[i] = Some(m);
            theirs.push(t);
        }
        let msg = Msg::Stdio {
            stdin: want[0],
            stdout: want[1],
            stderr: want[2],
        };
        let fds: Vec<_> = theirs.iter().map(|f| f.as_fd()).collect();
        proto::send_msg(stream.as_fd(), &msg, &fds)
            .map_err(io_err("send stdio to the CT's init"))?;
        drop(fds);
        drop(theirs);
        let [stdin, stdout, stderr] = mine;
        ProcessIo::Pipes {
            stdin,
            stdout,
            stderr,
        }
    };
    stream
        .set_read_timeout(None)
        .map_err(io_err("control socket"))?;
    Ok((stream, reader, io))
}

fn read_loop(
    stream: UnixStream,
    mut reader: FrameReader,
    started: watch::Sender<Option<i32>>,
    exited: watch::Sender<Option<Exited>>,
) {
    loop {
        match proto::recv_msg(stream.as_fd(), &mut reader) {
            Ok(Some((Msg::Started { pid }, _))) => {
                let _ = started.send(Some(pid));
            }
            Ok(Some((Msg::Exited { exit_code, .. }, _))) => {
                let _ = exited.send(Some(Exited { exit_code }));
            }
            Ok(Some((Msg::Error { msg }, _))) => log::warn!("CT init: {msg}"),
            Ok(Some((m, _))) => log::debug!("control: ignoring {m:?}"),
            Ok(None) => return,
            Err(e) => {
                log::debug!("control socket: {e}");
                return;
            }
        }
    }
}

impl Ctl {
    fn send(&self, msg: &Msg) -> std::io::Result<()> {
        let g = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        match g.as_ref() {
            Some(s) => proto::send_msg(s.as_fd(), msg, &[]),
            None => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    /// Let the process run; returns once the init reported it started (or exited), with the
    /// process's in-CT pid when it started.
    pub async fn start(&self, timeout: Duration) -> Result<Option<i32>> {
        self.send(&Msg::Start)
            .map_err(io_err("send start to the CT's init"))?;
        let mut started = self.started.clone();
        let mut exited = self.exited.clone();
        let wait = async {
            tokio::select! {
                r = started.wait_for(Option::is_some) => r.map(|_| ()),
                r = exited.wait_for(Option::is_some) => r.map(|_| ()),
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(())) => Ok(*self.started.borrow()),
            // Connection gone: the CT died; the exit watcher reports it.
            Ok(Err(_)) => Ok(None),
            Err(_) => Err(Error::DeadlineExceeded(format!(
                "the CT's init did not start the process within {}s",
                timeout.as_secs()
            ))),
        }
    }

    /// Deliver a signal through the init; false when the connection is gone.
    pub fn signal(&self, signo: i32, all: bool) -> bool {
        self.send(&Msg::Signal { signo, all }).is_ok()
    }

    /// The exit the init reported, once the control connection has been read to its end (the
    /// init sends it just before it exits, so it may still sit in the socket when the init's
    /// death is seen), waiting at most `limit` for the reader.
    pub async fn final_exit(&self, limit: Duration) -> Option<Exited> {
        let mut rx = self.exited.clone();
        let _ = tokio::time::timeout(limit, async {
            loop {
                if rx.borrow_and_update().is_some() {
                    return;
                }
                // Err: the reader ended (EOF), nothing more will come.
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        *self.exited.borrow()
    }

    /// Drop our end (the CT is being destroyed).
    pub fn close(&self) {
        let mut g = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = g.take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A pidfd: waits for a (not necessarily child) process to exit, immune to pid reuse.
pub struct PidFd {
    pid: u32,
    fd: Option<OwnedFd>,
}

impl PidFd {
    /// `fd` is None when the process is already gone.
    pub fn open(pid: u32) -> Result<PidFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ESRCH) {
                return Ok(PidFd { pid, fd: None });
            }
            return Err(Error::io(format!("pidfd_open({pid})"), e));
        }
        // SAFETY: the kernel just gave us this descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(PidFd { pid, fd: Some(fd) })
    }

    /// Signal the process through its pidfd (never a reused pid).
    pub fn signal(&self, signo: i32) -> Result<()> {
        let Some(fd) = &self.fd else {
            return Err(Error::NotFound("process already finished".into()));
        };
        // SAFETY: pidfd_send_signal(pidfd, sig, NULL, 0) on a pidfd we own.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                signo,
                std::ptr::null::<libc::siginfo_t>(),
                0u32,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::ESRCH) => Error::NotFound("process already finished".into()),
                Some(libc::EINVAL) => Error::invalid(format!("invalid signal {signo}")),
                _ => Error::io(format!("pidfd_send_signal({})", self.pid), e),
            });
        }
        Ok(())
    }

    pub async fn wait(self) -> Result<()> {
        let Some(fd) = self.fd else { return Ok(()) };
        let afd = fdio::register(fd).map_err(io_err("pidfd"))?;
        let _ = afd.readable().await.map_err(io_err("pidfd"))?;
        log::debug!("pid {} exited (pidfd {})", self.pid, afd.as_raw_fd());
        Ok(())
    }
}

/// The host pid of the child of `parent` whose pid in its own (innermost) pid namespace is
/// `ns_pid`: the CT's process as the init reports it, seen from the host.
pub fn child_with_ns_pid(parent: u32, ns_pid: i32) -> Option<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|c| c.parse::<u32>().ok())
        .find(|c| ns_pid_of(*c) == Some(ns_pid))
}

/// The innermost pid of a host pid (the last `NSpid:` field of /proc/<pid>/status).
fn ns_pid_of(pid: u32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// The parent of a process (for a CT's init: the `lxc-start` monitor).
pub fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}
