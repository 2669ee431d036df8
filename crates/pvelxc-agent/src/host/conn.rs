//! The control connection: request/response matching and event routing (reader task).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, watch};

use crate::proto::{decode, encode, Msg, Process, Stream, MAX_FRAME};

use super::stream::{OutputStream, ProcessIo, StdinSink};
use super::VmError;

/// Default answer timeout for requests (TCG guests are slow).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const STDIN_CHUNK: usize = 64 * 1024;

struct ProcSlot {
    stdout: Option<mpsc::UnboundedSender<Vec<u8>>>,
    stderr: Option<mpsc::UnboundedSender<Vec<u8>>>,
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
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads one frame; `Err` carries a human-readable reason (EOF included).
pub(crate) async fn read_msg(r: &mut OwnedReadHalf) -> Result<Msg, String> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME {
        return Err(format!("frame of {len} bytes is too large"));
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body)
        .await
        .map_err(|e| format!("read: {e}"))?;
    decode(&body).map_err(|e| e.to_string())
}

impl Conn {
    pub(crate) fn new(writer: OwnedWriteHalf) -> Arc<Conn> {
        Arc::new(Conn {
            writer: tokio::sync::Mutex::new(writer),
            state: Mutex::new(State::default()),
            next_req: AtomicU32::new(1),
        })
    }

    /// Routes guest messages until the connection ends.
    pub(crate) async fn read_loop(self: Arc<Self>, mut r: OwnedReadHalf) {
        let reason = loop {
            match read_msg(&mut r).await {
                Ok(msg) => self.dispatch(msg),
                Err(e) => break e,
            }
        };
        let mut st = lock(&self.state);
        st.dead = Some(reason);
        st.pending.clear();
        for slot in st.procs.values_mut() {
            slot.stdout = None;
            slot.stderr = None;
        }
    }

    fn dispatch(&self, msg: Msg) {
        let mut st = lock(&self.state);
        match msg {
            Msg::Output { id, stream, data } => {
                if let Some(slot) = st.procs.get(&id) {
                    let tx = if stream == Stream::Stderr {
                        &slot.stderr
                    } else {
                        &slot.stdout
                    };
                    if let Some(tx) = tx {
                        let _ = tx.send(data);
                    }
                }
            }
            Msg::Eof { id, stream } => {
                if let Some(slot) = st.procs.get_mut(&id) {
                    match stream {
                        Stream::Stderr => slot.stderr = None,
                        _ => slot.stdout = None,
                    }
                }
            }
            Msg::Exit { id, status } => {
                if let Some(slot) = st.procs.get_mut(&id) {
                    slot.stdout = None;
                    slot.stderr = None;
                    let _ = slot.exit.send(Some(status));
                }
            }
            reply => {
                if let Some(tx) = reply.req().and_then(|r| st.pending.remove(&r)) {
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
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (err_tx, err_rx) = mpsc::unbounded_channel();
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
                stdout: OutputStream::new(out_rx),
                stderr: OutputStream::new(err_rx),
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
