//! Guest process stdio as seen by the host.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc::Receiver;

use super::conn::Conn;
use super::VmError;

/// A guest process's stdout or stderr: chunks in order (each at most
/// [`super::OUTPUT_CHUNK`] bytes), then end of stream (the guest's EOF, or the VM going
/// away). Also usable as a tokio [`AsyncRead`].
///
/// Bounded: at most [`super::OUTPUT_QUEUE`] chunks wait here; while they do, the
/// connection stops reading from the guest (for every process). Read stdout and stderr
/// concurrently, or drop the stream you do not want (its output is then discarded).
pub struct OutputStream {
    rx: Receiver<Vec<u8>>,
    /// The connection's count of queued output bytes (decremented as chunks leave `rx`).
    queued: Arc<AtomicUsize>,
    pending: Vec<u8>,
    pos: usize,
}

impl OutputStream {
    pub(crate) fn new(rx: Receiver<Vec<u8>>, queued: Arc<AtomicUsize>) -> Self {
        OutputStream {
            rx,
            queued,
            pending: Vec::new(),
            pos: 0,
        }
    }

    fn taken(&self, chunk: Option<Vec<u8>>) -> Option<Vec<u8>> {
        if let Some(c) = &chunk {
            self.queued.fetch_sub(c.len(), Ordering::Relaxed);
        }
        chunk
    }

    /// The next chunk, `None` at end of stream.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        if self.pos < self.pending.len() {
            let rest = self.pending.split_off(self.pos);
            self.pending.clear();
            self.pos = 0;
            return Some(rest);
        }
        let c = self.rx.recv().await;
        self.taken(c)
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

impl Drop for OutputStream {
    fn drop(&mut self) {
        // Chunks still queued are freed with the channel: stop counting them.
        self.rx.close();
        while let Ok(c) = self.rx.try_recv() {
            self.queued.fetch_sub(c.len(), Ordering::Relaxed);
        }
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
                    this.queued.fetch_sub(chunk.len(), Ordering::Relaxed);
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
