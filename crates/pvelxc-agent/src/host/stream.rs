//! Guest process stdio as seen by the host.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc::UnboundedReceiver;

use super::conn::Conn;
use super::VmError;

/// A guest process's stdout or stderr: chunks in order, then end of stream (the guest's EOF,
/// or the VM going away). Also usable as a tokio [`AsyncRead`].
pub struct OutputStream {
    rx: UnboundedReceiver<Vec<u8>>,
    pending: Vec<u8>,
    pos: usize,
}

impl OutputStream {
    pub(crate) fn new(rx: UnboundedReceiver<Vec<u8>>) -> Self {
        OutputStream {
            rx,
            pending: Vec::new(),
            pos: 0,
        }
    }

    /// The next chunk, `None` at end of stream.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        if self.pos < self.pending.len() {
            let rest = self.pending.split_off(self.pos);
            self.pending.clear();
            self.pos = 0;
            return Some(rest);
        }
        self.rx.recv().await
    }

    /// Everything until end of stream.
    pub async fn read_to_end(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(c) = self.recv().await {
            out.extend_from_slice(&c);
        }
        out
    }
}

impl AsyncRead for OutputStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        while this.pos >= this.pending.len() {
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(chunk)) => {
                    this.pending = chunk;
                    this.pos = 0;
                }
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = buf.remaining().min(this.pending.len() - this.pos);
        buf.put_slice(&this.pending[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

/// Writes to a guest process's stdin.
#[derive(Clone)]
pub struct StdinSink {
    pub(crate) conn: Arc<Conn>,
    pub(crate) id: String,
}

impl StdinSink {
    pub async fn write(&self, data: &[u8]) -> Result<(), VmError> {
        self.conn.write_stdin(&self.id, data).await
    }

    /// Closes the process's stdin (a terminal gets ^D).
    pub async fn close(&self) -> Result<(), VmError> {
        self.conn.close_stdin(&self.id).await
    }
}

/// Handles to a started guest process.
pub struct ProcessIo {
    pub id: String,
    /// Its pid in the guest.
    pub pid: u32,
    pub stdin: StdinSink,
    pub stdout: OutputStream,
    /// Empty with a terminal (the pty merges it into stdout).
    pub stderr: OutputStream,
}
