//! Table of the processes the agent started: stdio pumps, signals, resizes, reaping and exit reports.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use pvelxc_agent::proto::{write_frame, Msg, Process, Stream};

use super::log;
use super::spawn::{self, Spawned};

/// How long an exit report waits for the process's stdout/stderr to reach EOF (a background
/// descendant may hold them open).
const OUTPUT_GRACE: Duration = Duration::from_secs(2);
const CHUNK: usize = 32 * 1024;

/// The control port's write side, shared by every thread (one frame per lock).
pub type Writer = Arc<Mutex<File>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn send(w: &Writer, msg: &Msg) {
    if let Err(e) = write_frame(&mut *lock(w), msg) {
        log!("control port write: {e}");
    }
}

enum StdinOp {
    Data(Vec<u8>),
    Close,
}

/// Count of a process's output streams not yet at EOF.
#[derive(Default)]
struct OpenOutputs {
    open: Mutex<u32>,
    cv: Condvar,
}

impl OpenOutputs {
    fn done(&self) {
        let mut n = lock(&self.open);
        *n = n.saturating_sub(1);
        self.cv.notify_all();
    }
    fn wait(&self, timeout: Duration) {
        let n = lock(&self.open);
        let _ = self.cv.wait_timeout_while(n, timeout, |n| *n > 0);
    }
}

struct Entry {
    pid: u32,
    stdin: mpsc::Sender<StdinOp>,
    pty: Option<File>,
    outputs: Arc<OpenOutputs>,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<String, Entry>,
    by_pid: HashMap<u32, String>,
}

pub struct Table {
    inner: Mutex<Inner>,
    writer: Writer,
    /// Set when a child is started; wakes the reaper when it has no children.
    spawned: (Mutex<bool>, Condvar),
}

impl Table {
    pub fn new(writer: Writer) -> Arc<Table> {
        Arc::new(Table {
            inner: Mutex::new(Inner::default()),
            writer,
            spawned: (Mutex::new(false), Condvar::new()),
        })
    }

    /// Starts `process` under `id`; returns its pid.
    pub fn start(self: &Arc<Self>, id: &str, process: &Process) -> Result<u32, String> {
        let mut inner = lock(&self.inner);
        if inner.by_id.contains_key(id) {
            return Err(format!("process id {id:?} already exists"));
        }
        // Spawning under the lock keeps the reaper from reporting the child before it is registered.
        let s = spawn::spawn(process).map_err(|e| format!("starting {:?}: {e}", process.args))?;
        let Spawned {
            pid,
            stdin,
            stdout,
            stderr,
            pty,
        } = s;
        let outputs = Arc::new(OpenOutputs::default());
        *lock(&outputs.open) = if stderr.is_some() { 2 } else { 1 };
        self.pump(id, Stream::Stdout, stdout, &outputs);
        match stderr {
            Some(f) => self.pump(id, Stream::Stderr, f, &outputs),
            None => send(
                &self.writer,
                &Msg::Eof {
                    id: id.to_string(),
                    stream: Stream::Stderr,
                },
            ),
        }
        let (tx, rx) = mpsc::channel();
        let is_tty = pty.is_some();
        std::thread::spawn(move || stdin_writer(stdin, rx, is_tty));
        inner.by_id.insert(
            id.to_string(),
            Entry {
                pid,
                stdin: tx,
                pty,
                outputs,
            },
        );
        inner.by_pid.insert(pid, id.to_string());
        drop(inner);
        let (flag, cv) = &self.spawned;
        *lock(flag) = true;
        cv.notify_all();
        Ok(pid)
    }

    fn pump(&self, id: &str, stream: Stream, mut file: File, outputs: &Arc<OpenOutputs>) {
        let writer = self.writer.clone();
        let outputs = outputs.clone();
        let id = id.to_string();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; CHUNK];
            loop {
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => send(
                        &writer,
                        &Msg::Output {
                            id: id.clone(),
                            stream,
                            data: buf[..n].to_vec(),
                        },
                    ),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break, // EIO: pty slave closed
                }
            }
            send(&writer, &Msg::Eof { id, stream });
            outputs.done();
        });
    }

    fn with_entry<T>(
        &self,
        id: &str,
        f: impl FnOnce(&Entry) -> Result<T, String>,
    ) -> Result<T, String> {
        let inner = lock(&self.inner);
        let e = inner
            .by_id
            .get(id)
            .ok_or_else(|| format!("no process {id:?}"))?;
        f(e)
    }

    pub fn stdin(&self, id: &str, data: Vec<u8>) {
        let _ = self.with_entry(id, |e| {
            e.stdin.send(StdinOp::Data(data)).map_err(|e| e.to_string())
        });
    }

    pub fn close_stdin(&self, id: &str) -> Result<(), String> {
        self.with_entry(id, |e| {
            e.stdin
                .send(StdinOp::Close)
                .map_err(|_| "stdin already closed".into())
        })
    }

    pub fn signal(&self, id: &str, signo: i32) -> Result<(), String> {
        let sig = Signal::try_from(signo).map_err(|e| format!("signal {signo}: {e}"))?;
        let pid = self.with_entry(id, |e| Ok(e.pid))?;
        kill(Pid::from_raw(pid as i32), sig).map_err(|e| format!("kill {pid}: {e}"))
    }

    pub fn resize(&self, id: &str, rows: u16, cols: u16) -> Result<(), String> {
        self.with_entry(id, |e| match &e.pty {
            Some(m) => spawn::resize(m, rows, cols).map_err(|e| e.to_string()),
            None => Err(format!("process {id:?} has no terminal")),
        })
    }

    pub fn ids_by_pid(&self) -> HashMap<u32, String> {
        lock(&self.inner).by_pid.clone()
    }

    /// Reaps every child (PID 1 inherits orphans) and reports exits of the agent's processes.
    pub fn reap_forever(self: Arc<Self>) {
        loop {
            // SAFETY: zeroed siginfo_t is a valid out-buffer for waitid.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // Peek without reaping, so that a concurrent failed spawn can still wait for its child.
            // SAFETY: valid pointer to a siginfo_t.
            let rc =
                unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOWAIT) };
            if rc == -1 {
                match io::Error::last_os_error().raw_os_error() {
                    Some(libc::EINTR) => {}
                    _ => {
                        // ECHILD: sleep until something is started.
                        let (flag, cv) = &self.spawned;
                        let mut f = lock(flag);
                        if !*f {
                            f = cv
                                .wait_timeout(f, Duration::from_secs(1))
                                .map(|(g, _)| g)
                                .unwrap_or_else(|p| p.into_inner().0);
                        }
                        *f = false;
                    }
                }
                continue;
            }
            // SAFETY: waitid filled in a SIGCHLD siginfo.
            let pid = unsafe { info.si_pid() };
            let mut inner = lock(&self.inner);
            let mut status = 0;
            // SAFETY: valid pointer to an int.
            if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } != pid {
                continue;
            }
            let code = if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status)
            } else {
                libc::WEXITSTATUS(status)
            };
            let Some(id) = inner.by_pid.remove(&(pid as u32)) else {
                continue;
            };
            let Some(outputs) = inner.by_id.get(&id).map(|e| e.outputs.clone()) else {
                continue;
            };
            drop(inner);
            let table = self.clone();
            std::thread::spawn(move || {
                outputs.wait(OUTPUT_GRACE);
                let mut inner = lock(&table.inner);
                if inner.by_id.get(&id).is_some_and(|e| e.pid == pid as u32) {
                    inner.by_id.remove(&id);
                }
                // Sent under the lock: a new process with the same id cannot start before its Exit.
                send(&table.writer, &Msg::Exit { id, status: code });
            });
        }
    }
}

fn stdin_writer(mut f: File, rx: mpsc::Receiver<StdinOp>, tty: bool) {
    let mut broken = false;
    while let Ok(op) = rx.recv() {
        match op {
            StdinOp::Data(d) if !broken => broken = f.write_all(&d).is_err(),
            StdinOp::Data(_) => {}
            // A terminal has no half-close: send the EOF character (^D) instead.
            StdinOp::Close if tty => broken = f.write_all(&[4]).is_err(),
            StdinOp::Close => return,
        }
    }
}
