//! The control connection: request/response matching and event routing (reader task).
//!
//! Everything the guest sends is hostile input. Bounds on what it can make the host hold:
//! the reader keeps at most one frame plus one read ([`READ_CHUNK`]) of undecoded bytes;
//! output goes to each stream's consumer in chunks of at most [`OUTPUT_CHUNK`] bytes
//! through a channel of [`OUTPUT_QUEUE`] chunks; when a consumer is behind, the reader
//! waits for it and stops reading the port (backpressure reaches the guest through
//! virtio-serial), so a flooding guest cannot grow host memory. Output for unknown ids and
//! replies nobody waits for are dropped. Consumers must therefore read stdout and stderr
//! concurrently (or drop the one they do not want).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, watch};

use crate::proto::{decode, encode, FrameReader, Msg, Process, Stream, MAX_FRAME};

use super::stream::{OutputStream, ProcessIo, StdinSink};
use super::VmError;

/// Default answer timeout for requests (TCG guests are slow).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const STDIN_CHUNK: usize = 64 * 1024;
/// Bytes asked of the port per read.
pub(crate) const READ_CHUNK: usize = 64 * 1024;
/// Largest output chunk handed to a consumer (bigger `Output` frames are split).
pub const OUTPUT_CHUNK: usize = 64 * 1024;
/// Chunks queued per output stream before the reader waits for the consumer.
pub const OUTPUT_QUEUE: usize = 16;

struct ProcSlot {
    stdout: Option<mpsc::Sender<Vec<u8>>>,
    stderr: Option<mpsc::Sender<Vec<u8>>>,
    exit: watch::Sender<Option<i32>>,
}

#[derive(Default)]
struct State {
    pending: HashMap<u32, oneshot::Sender<Msg>>,
    procs: HashMap<String, ProcSlot>,
    /// Why the connection ended, once it has.
    dead: Option<String>,
}

pub(crate) struct Conn {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    state: Mutex<State>,
    next_req: AtomicU32,
    /// Output bytes queued for consumers (in channels, not yet taken by an OutputStream).
    queued: Arc<AtomicUsize>,
    /// Undecoded bytes held by the reader.
    unread: AtomicUsize,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads one frame; `Err` carries a human-readable reason (EOF included). Reads exactly one
/// frame (nothing after it), allocating as the body arrives rather than as declared.
pub(crate) async fn read_msg(r: &mut OwnedReadHalf) -> Result<Msg, String> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME {
        return Err(format!("frame of {len} bytes is too large"));
    }
    let mut body = Vec::new();
    (&mut *r)
        .take(u64::from(len))
        .read_to_end(&mut body)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if body.len() < len as usize {
        return Err("read: end of stream inside a frame".into());
    }
    decode(&body).map_err(|e| e.to_string())
}

impl Conn {
    pub(crate) fn new(writer: OwnedWriteHalf) -> Arc<Conn> {
        Arc::new(Conn {
            writer: tokio::sync::Mutex::new(writer),
            state: Mutex::new(State::default()),
            next_req: AtomicU32::new(1),
            queued: Arc::new(AtomicUsize::new(0)),
            unread: AtomicUsize::new(0),
        })
    }

    /// Bytes from the guest the host holds: undecoded frame bytes plus output queued for
    /// consumers. At most `FrameReader::capacity_bound(READ_CHUNK)` + 2 × [`OUTPUT_QUEUE`]
    /// × [`OUTPUT_CHUNK`] per live process (plus the chunk each `OutputStream` holds).
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.unread.load(Ordering::Relaxed) + self.queued.load(Ordering::Relaxed)
    }

    /// Routes guest messages until the connection ends (EOF, read error, protocol error).
    pub(crate) async fn read_loop(self: Arc<Self>, mut r: OwnedReadHalf) {
        let mut frames = FrameReader::new();
        let mut chunk = vec![0u8; READ_CHUNK];
        let reason = 'conn: loop {
            loop {
                match frames.next_msg() {
                    Ok(Some(msg)) => self.dispatch(msg).await,
                    Ok(None) => break,
                    Err(e) => break 'conn format!("protocol error: {e}"),
                }
            }
            self.unread.store(frames.buffered(), Ordering::Relaxed);
            match r.read(&mut chunk).await {
                Ok(0) if frames.buffered() == 0 => break "read: end of stream".to_string(),
                Ok(0) => break "read: end of stream inside a frame".to_string(),
                Ok(n) => {
                    if let Err(e) = frames.push(&chunk[..n]) {
                        break format!("protocol error: {e}");
                    }
                    self.unread.store(frames.buffered(), Ordering::Relaxed);
                }
                Err(e) => break format!("read: {e}"),
            }
        };
        drop(frames);
        self.unread.store(0, Ordering::Relaxed);
        let mut st = lock(&self.state);
        st.dead = Some(reason);
        st.pending.clear();
        for slot in st.procs.values_mut() {
            slot.stdout = None;
            slot.stderr = None;
        }
    }

    /// Queue one chunk for a consumer, waiting while its queue is full (the backpressure).
    /// `false` when the consumer is gone.
    async fn send_chunk(&self, tx: &mpsc::Sender<Vec<u8>>, c: Vec<u8>) -> bool {
        let n = c.len();
        self.queued.fetch_add(n, Ordering::Relaxed);
        if tx.send(c).await.is_ok() {
            return true;
        }
        self.queued.fetch_sub(n, Ordering::Relaxed);
        false
    }

    /// Hands `data` to a stream's consumer in chunks of at most [`OUTPUT_CHUNK`].
    async fn deliver(&self, tx: mpsc::Sender<Vec<u8>>, data: Vec<u8>) {
        if data.len() <= OUTPUT_CHUNK {
            self.send_chunk(&tx, data).await;
            return;
        }
        for c in data.chunks(OUTPUT_CHUNK) {
            if !self.send_chunk(&tx, c.to_vec()).await {
                return;
            }
        }
    }

    async fn dispatch(&self, msg: Msg) {
        match msg {
            Msg::Output { id, stream, data } => {
                let tx = {
                    let st = lock(&self.state);
                    st.procs.get(&id).and_then(|slot| match stream {
                        Stream::Stdout => slot.stdout.clone(),
                        Stream::Stderr => slot.stderr.clone(),
                        Stream::Stdin => None,
                    })
                };
                if let (Some(tx), false) = (tx, data.is_empty()) {
                    self.deliver(tx, data).await;
                }
            }
            Msg::Eof { id, stream } => {
                if let Some(slot) = lock(&self.state).procs.get_mut(&id) {
                    match stream {
                        Stream::Stdout => slot.stdout = None,
                        Stream::Stderr => slot.stderr = None,
                        Stream::Stdin => {}
                    }
                }
            }
            Msg::Exit { id, status } => {
                if let Some(slot) = lock(&self.state).procs.get_mut(&id) {
                    slot.stdout = None;
                    slot.stderr = None;
                    let _ = slot.exit.send(Some(status));
                }
            }
            reply => {
                let tx = reply
                    .req()
                    .and_then(|r| lock(&self.state).pending.remove(&r));
                if let Some(tx) = tx {
                    let _ = tx.send(reply);
                }
            }
        }
    }

    fn dead(&self) -> Option<String> {
        lock(&self.state).dead.clone()
    }

    async fn send(&self, msg: &Msg) -> Result<(), VmError> {
        if let Some(why) = self.dead() {
            return Err(VmError::Disconnected(why));
        }
        let frame = encode(msg);
        let mut w = self.writer.lock().await;
        w.write_all(&frame)
            .await
            .map_err(|e| VmError::Disconnected(format!("write: {e}")))
    }

    /// Sends the request built from a fresh request number and waits for its reply.
    pub(crate) async fn request(
        &self,
        build: impl FnOnce(u32) -> Msg,
        timeout: Duration,
    ) -> Result<Msg, VmError> {
        let req = self.next_req.fetch_add(1, Ordering::Relaxed).max(1);
        let (tx, rx) = oneshot::channel();
        {
            let mut st = lock(&self.state);
            if let Some(why) = &st.dead {
                return Err(VmError::Disconnected(why.clone()));
            }
            st.pending.insert(req, tx);
        }
        let msg = build(req);
        let what = format!("request {req}");
        if let Err(e) = self.send(&msg).await {
            lock(&self.state).pending.remove(&req);
            return Err(e);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Msg::Error { message, .. })) => Err(VmError::Guest(message)),
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(VmError::Disconnected(self.dead().unwrap_or_default())),
            Err(_) => {
                lock(&self.state).pending.remove(&req);
                Err(VmError::Timeout(format!("the reply to {what}")))
            }
        }
    }

    /// Sends a request whose success reply is `Ok`.
    pub(crate) async fn ack(&self, build: impl FnOnce(u32) -> Msg) -> Result<(), VmError> {
        match self.request(build, REQUEST_TIMEOUT).await? {
            Msg::Ok { .. } => Ok(()),
            other => Err(VmError::Protocol(format!("expected Ok, got {other:?}"))),
        }
    }

    /// Registers the stdio routes for `id`, then starts the process (Run or Exec).
    pub(crate) async fn start(
        self: &Arc<Self>,
        id: &str,
        process: &Process,
        run: bool,
    ) -> Result<ProcessIo, VmError> {
        let (out_tx, out_rx) = mpsc::channel(OUTPUT_QUEUE);
        let (err_tx, err_rx) = mpsc::channel(OUTPUT_QUEUE);
        {
            let mut st = lock(&self.state);
            if st.procs.get(id).is_some_and(|s| s.exit.borrow().is_none()) {
                return Err(VmError::Config(format!("process id {id:?} is in use")));
            }
            st.procs.insert(
                id.to_string(),
                ProcSlot {
                    stdout: Some(out_tx),
                    stderr: Some(err_tx),
                    exit: watch::channel(None).0,
                },
            );
        }
        let (id_s, p) = (id.to_string(), process.clone());
        let build = move |req| {
            if run {
                Msg::Run {
                    req,
                    id: id_s,
                    process: p,
                }
            } else {
                Msg::Exec {
                    req,
                    id: id_s,
                    process: p,
                }
            }
        };
        match self.request(build, REQUEST_TIMEOUT).await {
            Ok(Msg::Started { pid, .. }) => Ok(ProcessIo {
                id: id.to_string(),
                pid,
                stdin: StdinSink {
                    conn: self.clone(),
                    id: id.to_string(),
                },
                stdout: OutputStream::new(out_rx, self.queued.clone()),
                stderr: OutputStream::new(err_rx, self.queued.clone()),
            }),
            other => {
                lock(&self.state).procs.remove(id);
                match other {
                    Err(e) => Err(e),
                    Ok(m) => Err(VmError::Protocol(format!("expected Started, got {m:?}"))),
                }
            }
        }
    }

    pub(crate) async fn write_stdin(&self, id: &str, data: &[u8]) -> Result<(), VmError> {
        for chunk in data.chunks(STDIN_CHUNK) {
            self.send(&Msg::Stdin {
                id: id.to_string(),
                data: chunk.to_vec(),
            })
            .await?;
        }
        Ok(())
    }

    pub(crate) async fn close_stdin(&self, id: &str) -> Result<(), VmError> {
        self.ack(|req| Msg::CloseStdin {
            req,
            id: id.to_string(),
        })
        .await
    }

    /// Waits for the exit status of `id` (immediately if it already exited).
    pub(crate) async fn wait(&self, id: &str) -> Result<i32, VmError> {
        let mut rx = {
            let st = lock(&self.state);
            match st.procs.get(id) {
                Some(slot) => slot.exit.subscribe(),
                None => return Err(VmError::Config(format!("unknown process id {id:?}"))),
            }
        };
        loop {
            if let Some(status) = *rx.borrow_and_update() {
                return Ok(status);
            }
            if let Some(why) = self.dead() {
                return Err(VmError::Disconnected(why));
            }
            // Wake up periodically to notice a dead connection (the slot's sender lives on).
            let _ = tokio::time::timeout(Duration::from_millis(500), rx.changed()).await;
        }
    }

    /// The exit status of `id` if it has exited.
    pub(crate) fn exit_status(&self, id: &str) -> Option<i32> {
        lock(&self.state)
            .procs
            .get(id)
            .and_then(|s| *s.exit.borrow())
    }
}
