//! A guest process's stdio on the host: the shim gets ordinary fds (pipe ends, or the master of a
//! host pty), and tasks here pump between the other ends and the agent's streams.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use pvelxc_agent::host::{OutputStream, ProcessIo as AgentIo, StdinSink, Vm};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::sys::fdio::FdIo;
use crate::sys::stdio::{ProcessIo, StdioPaths};

/// How often a host pty's size is compared with what the guest was told.
const RESIZE_POLL: Duration = Duration::from_millis(200);

/// The backend's ends, kept until the process starts.
pub enum HostEnds {
    Pipes {
        /// Read: what containerd sends to the process.
        stdin: Option<OwnedFd>,
        /// Write: the process's output.
        stdout: Option<OwnedFd>,
        stderr: Option<OwnedFd>,
    },
    /// The slave of the host pty whose master the shim holds.
    Pty { slave: OwnedFd },
}

/// Make the fds for a process: the shim's [`ProcessIo`] and our [`HostEnds`].
pub fn make(stdio: &StdioPaths, console: Option<(u16, u16)>) -> Result<(ProcessIo, HostEnds)> {
    if stdio.terminal {
        let ws = console.map(|(rows, cols)| nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        });
        let pty = nix::pty::openpty(ws.as_ref(), None)
            .map_err(|e| Error::io("openpty", std::io::Error::from(e)))?;
        for fd in [&pty.master, &pty.slave] {
            set_cloexec(fd)?;
        }
        raw(&pty.slave)?;
        return Ok((
            ProcessIo::Pty { master: pty.master },
            HostEnds::Pty { slave: pty.slave },
        ));
    }
    let (shim, ours) = stdio.pipes()?;
    let [oi, oo, oe] = ours;
    Ok((
        ProcessIo::pipes(shim),
        HostEnds::Pipes {
            stdin: oi,
            stdout: oo,
            stderr: oe,
        },
    ))
}

fn set_cloexec(fd: &OwnedFd) -> Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    fcntl(fd.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map(|_| ())
        .map_err(|e| Error::io("set FD_CLOEXEC", std::io::Error::from(e)))
}

/// The host pty only carries bytes: the guest's pty does the line discipline.
fn raw(fd: &OwnedFd) -> Result<()> {
    use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
    let mut t = tcgetattr(fd).map_err(|e| Error::io("tcgetattr", e.into()))?;
    cfmakeraw(&mut t);
    tcsetattr(fd, SetArg::TCSANOW, &t).map_err(|e| Error::io("tcsetattr", e.into()))
}

fn winsize(fd: &impl AsRawFd) -> Option<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes into the winsize struct we pass.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (rc == 0).then_some((ws.ws_row, ws.ws_col))
}

/// Copy a guest stream into `w` (then close it), or discard it when nobody listens.
async fn drain<W: AsyncWrite + Unpin>(mut s: OutputStream, w: Option<W>) {
    match w {
        Some(mut w) => {
            while let Some(chunk) = s.recv().await {
                if let Err(e) = w.write_all(&chunk).await {
                    log::debug!("vm stdio: {e}");
                    // Keep draining so the agent connection's buffers are released.
                    while s.recv().await.is_some() {}
                    return;
                }
            }
            let _ = w.flush().await;
        }
        None => while s.recv().await.is_some() {},
    }
}

fn fdio(fd: Option<OwnedFd>) -> Option<FdIo> {
    fd.and_then(|fd| match FdIo::new(fd) {
        Ok(f) => Some(f),
        Err(e) => {
            log::warn!("vm stdio: {e}");
            None
        }
    })
}

/// Forward what containerd writes to the process's stdin; EOF closes the guest's stdin.
async fn feed_stdin(src: Option<FdIo>, sink: StdinSink) {
    let Some(mut src) = src else {
        let _ = sink.close().await;
        return;
    };
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match src.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if sink.write(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = sink.close().await;
}

/// Start the pumps for a started guest process. They end by themselves when the process's output
/// ends and the process has exited.
pub fn connect(ends: HostEnds, io: AgentIo, vm: Arc<Vm>) {
    let AgentIo {
        id,
        stdin,
        stdout,
        stderr,
        ..
    } = io;
    match ends {
        HostEnds::Pipes {
            stdin: i,
            stdout: o,
            stderr: e,
        } => {
            tokio::spawn(drain(stdout, fdio(o)));
            tokio::spawn(drain(stderr, fdio(e)));
            tokio::spawn(async move {
                tokio::select! {
                    _ = feed_stdin(fdio(i), stdin) => {}
                    _ = vm.wait(&id) => {}
                }
            });
        }
        HostEnds::Pty { slave } => {
            let input = match slave.try_clone() {
                Ok(fd) => fdio(Some(fd)),
                Err(e) => {
                    log::warn!("vm stdio: dup pty: {e}");
                    None
                }
            };
            let size_fd = slave.try_clone().ok();
            tokio::spawn(async move {
                drain(stdout, fdio(Some(slave))).await;
                drain(stderr, None::<FdIo>).await;
            });
            tokio::spawn(async move {
                tokio::select! {
                    _ = pty_input(input, stdin, &vm, &id, size_fd) => {}
                    _ = vm.wait(&id) => {}
                }
            });
        }
    }
}

/// Keystrokes from the host pty to the guest, and window size changes as Resize requests.
async fn pty_input(
    input: Option<FdIo>,
    sink: StdinSink,
    vm: &Vm,
    id: &str,
    size_fd: Option<OwnedFd>,
) {
    let mut last = size_fd.as_ref().and_then(winsize);
    let mut tick = tokio::time::interval(RESIZE_POLL);
    let mut input = input;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            r = async {
                match input.as_mut() {
                    Some(f) => f.read(&mut buf).await,
                    None => std::future::pending().await,
                }
            } => match r {
                Ok(0) | Err(_) => input = None,
                Ok(n) => {
                    if sink.write(&buf[..n]).await.is_err() {
                        input = None;
                    }
                }
            },
            _ = tick.tick() => {
                let now = size_fd.as_ref().and_then(winsize);
                if let (Some((rows, cols)), true) = (now, now != last) {
                    if rows > 0 && cols > 0 {
                        if let Err(e) = vm.resize(id, rows, cols).await {
                            log::debug!("vm resize {id}: {e}");
                        }
                    }
                    last = now;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pty_has_size_and_pipes_follow_paths() {
        let stdio = StdioPaths {
            terminal: true,
            ..Default::default()
        };
        let (shim, ours) = make(&stdio, Some((33, 77))).expect("pty");
        let (ProcessIo::Pty { master }, HostEnds::Pty { slave }) = (shim, ours) else {
            panic!("expected a pty");
        };
        assert_eq!(winsize(&master), Some((33, 77)));
        assert_eq!(winsize(&slave), Some((33, 77)));

        let stdio = StdioPaths {
            stdout: "/x".into(),
            ..Default::default()
        };
        let (shim, ours) = make(&stdio, None).expect("pipes");
        let (
            ProcessIo::Pipes {
                stdin: None,
                stdout: Some(_),
                stderr: None,
            },
            HostEnds::Pipes {
                stdin: None,
                stdout: Some(_),
                stderr: None,
            },
        ) = (shim, ours)
        else {
            panic!("expected only stdout pipes");
        };
    }
}
