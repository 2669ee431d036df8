//! A backend whose processes exist only in memory: each exit fires when the test (or a kill)
//! says so, after a number of scheduler turns the test chooses, so the service's event
//! ordering can be checked over many interleavings without containerd or root.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use oci_spec::runtime::{LinuxResources, Process};
use tokio::sync::{mpsc, oneshot};

use crate::backend::{Backend, BundleRecord, CreateRequest, Instance, Spawned, Target};
use crate::config::{BackendKind, Config};
use crate::error::{Error, Result};
use crate::service::model::{EventSink, TaskEvent};
use crate::sys::cgroup::Metrics;
use crate::sys::reaper::Exit;
use crate::sys::stdio::{ProcessIo, StdioPaths};

/// Records every event in order.
#[derive(Default)]
pub struct Recorder(Mutex<Vec<TaskEvent>>);

impl EventSink for Recorder {
    fn publish(&self, ev: TaskEvent) {
        self.0.lock().expect("recorder").push(ev);
    }
}

impl Recorder {
    pub fn events(&self) -> Vec<TaskEvent> {
        self.0.lock().expect("recorder").clone()
    }
}

#[derive(Default)]
pub struct FakeBackend {
    pub fail_create: AtomicBool,
    /// Scheduler turns between a kill and the exit it causes (set per test case).
    pub exit_delay: AtomicU32,
    pub made: Mutex<Vec<Arc<FakeInstance>>>,
}

#[async_trait]
impl Backend for FakeBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Crun
    }

    fn usable(&self, _: &Config) -> std::result::Result<(), String> {
        Ok(())
    }

    async fn create(&self, _req: CreateRequest) -> Result<(Arc<dyn Instance>, Spawned)> {
        if self.fail_create.load(Ordering::SeqCst) {
            return Err(Error::FailedPrecondition("fake create failed".into()));
        }
        let (tx, rx) = oneshot::channel();
        let inst = Arc::new(FakeInstance {
            init: Mutex::new(Some(tx)),
            execs: Arc::default(),
            next_pid: AtomicU32::new(101),
            dead: Arc::default(),
            delay: self.exit_delay.load(Ordering::SeqCst),
            calls: Mutex::new(Vec::new()),
        });
        self.made.lock().expect("made").push(inst.clone());
        Ok((inst, spawned(100, rx)))
    }

    async fn cleanup(&self, _: &BundleRecord, _: &Config) -> Result<()> {
        Ok(())
    }
}

fn spawned(pid: u32, rx: oneshot::Receiver<Exit>) -> Spawned {
    Spawned {
        pid,
        io: ProcessIo::Null,
        exit: Box::pin(async move { rx.await.unwrap_or_else(|_| Exit::new(255)) }),
    }
}

type ExitSenders = Arc<Mutex<HashMap<String, oneshot::Sender<Exit>>>>;

pub struct FakeInstance {
    init: Mutex<Option<oneshot::Sender<Exit>>>,
    execs: ExitSenders,
    next_pid: AtomicU32,
    dead: Arc<AtomicBool>,
    delay: u32,
    pub calls: Mutex<Vec<String>>,
}

impl FakeInstance {
    fn call(&self, s: impl Into<String>) {
        self.calls.lock().expect("calls").push(s.into());
    }

    /// Fire one exit after `delay` scheduler turns.
    fn fire(&self, tx: oneshot::Sender<Exit>, code: u32) {
        let delay = self.delay;
        tokio::spawn(async move {
            for _ in 0..delay {
                tokio::task::yield_now().await;
            }
            let _ = tx.send(Exit::new(code));
        });
    }

    /// The init ends `delay` scheduler turns from now (a signal takes a while to kill a
    /// container): like a CT or a pid namespace, every exec then ends with it.
    pub fn end_init(&self, code: u32) {
        let Some(init) = self.init.lock().expect("init").take() else {
            return;
        };
        let (execs, dead, delay) = (self.execs.clone(), self.dead.clone(), self.delay);
        tokio::spawn(async move {
            for _ in 0..delay {
                tokio::task::yield_now().await;
            }
            let ended: Vec<_> = {
                let mut m = execs.lock().expect("execs");
                dead.store(true, Ordering::SeqCst);
                m.drain().collect()
            };
            for (_, tx) in ended {
                let _ = tx.send(Exit::new(137));
            }
            let _ = init.send(Exit::new(code));
        });
    }

    pub fn end_exec(&self, exec_id: &str, code: u32) {
        if let Some(tx) = self.execs.lock().expect("execs").remove(exec_id) {
            self.fire(tx, code);
        }
    }
}

#[async_trait]
impl Instance for FakeInstance {
    async fn start(&self) -> Result<Option<u32>> {
        self.call("start");
        Ok(None)
    }

    async fn exec(&self, exec_id: &str, _: &Process, _: &StdioPaths) -> Result<Spawned> {
        self.call(format!("exec {exec_id}"));
        let rx = {
            let mut m = self.execs.lock().expect("execs");
            if self.dead.load(Ordering::SeqCst) {
                return Err(Error::FailedPrecondition(
                    "the container has stopped".into(),
                ));
            }
            let (tx, rx) = oneshot::channel();
            m.insert(exec_id.to_string(), tx);
            rx
        };
        // The process runs; setting up the rest takes a while (an init may die meanwhile).
        for _ in 0..self.delay {
            tokio::task::yield_now().await;
        }
        Ok(spawned(self.next_pid.fetch_add(1, Ordering::SeqCst), rx))
    }

    async fn kill(&self, target: Target<'_>, signal: u32, _all: bool) -> Result<()> {
        self.call(format!("kill {target:?} {signal}"));
        match target {
            Target::Init => self.end_init(128 + signal),
            Target::Exec { id, .. } => self.end_exec(id, 128 + signal),
        }
        Ok(())
    }

    async fn pause(&self) -> Result<()> {
        self.call("pause");
        Ok(())
    }

    async fn resume(&self) -> Result<()> {
        self.call("resume");
        Ok(())
    }

    async fn pids(&self) -> Result<Vec<u32>> {
        Ok(vec![100])
    }

    async fn stats(&self) -> Result<Metrics> {
        Ok(Metrics::V2(Box::default()))
    }

    async fn update(&self, _: &LinuxResources) -> Result<()> {
        self.call("update");
        Ok(())
    }

    async fn delete(&self, force: bool) -> Result<()> {
        self.call(format!("delete force={force}"));
        if force {
            self.end_init(137);
        }
        Ok(())
    }

    fn oom_events(&self) -> Option<mpsc::UnboundedReceiver<()>> {
        None
    }
}

/// A bundle directory with a minimal config.json and a config file naming crun.
pub fn bundle(dir: &Path) -> std::path::PathBuf {
    let b = dir.join("bundle");
    std::fs::create_dir_all(b.join("rootfs")).expect("bundle");
    std::fs::write(
        b.join("config.json"),
        br#"{"ociVersion":"1.0.2","process":{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}},"root":{"path":"rootfs"}}"#,
    )
    .expect("config.json");
    std::fs::write(dir.join("config.toml"), "backend = \"crun\"\n").expect("config");
    b
}
