//! The OCI console socket: the runtime connects and sends the pty master with SCM_RIGHTS.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use tokio::net::UnixListener;

use crate::error::{Error, Result};

pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ConsoleSocket {
    /// Bind a socket at `path` (keep it short: sun_path is 108 bytes).
    pub fn bind(path: &Path) -> Result<ConsoleSocket> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)
            .map_err(|e| Error::io(format!("bind console socket {}", path.display()), e))?;
        Ok(ConsoleSocket {
            listener,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accept the runtime's connection and receive the pty master.
    pub async fn receive(&self) -> Result<OwnedFd> {
        let (stream, _) = self
            .listener
            .accept()
            .await
            .map_err(|e| Error::io("accept on console socket", e))?;
        loop {
            stream
                .readable()
                .await
                .map_err(|e| Error::io("console socket", e))?;
            match stream.try_io(tokio::io::Interest::READABLE, || {
                recv_fd(stream.as_raw_fd()).map_err(std::io::Error::from)
            }) {
                Ok(Some(fd)) => return Ok(fd),
                Ok(None) => return Err(Error::internal("console socket closed without a pty")),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(Error::io("receive pty master", e)),
            }
        }
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Receive one fd passed with SCM_RIGHTS; None when the peer closed without sending one.
pub fn recv_fd(sock: RawFd) -> nix::Result<Option<OwnedFd>> {
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut first = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel just installed these descriptors for us.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                if first.is_none() {
                    first = Some(owned);
                }
            }
        }
    }
    Ok(first)
}
