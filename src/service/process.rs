//! A container and its processes as the task service tracks them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use oci_spec::runtime::Process;
use tokio::sync::watch;

use super::model::{EventSink, TaskEvent};
use super::state::{ProcState, Status, Transition};
use crate::backend::Instance;
use crate::error::{Error, Result};
use crate::sys::reaper::Exit;
use crate::sys::stdio::{IoHandle, StdioPaths};

pub struct Proc {
    /// "" for the init process.
    pub exec_id: String,
    pub stdio: StdioPaths,
    /// The exec's process spec (None for init).
    pub spec: Option<Process>,
    state: Mutex<ProcState>,
    /// Held across Start (backend call + TaskStart event) and across exit publication, so a
    /// fast exit is never reported before its start.
    pub lifecycle: tokio::sync::Mutex<()>,
    exited: watch::Sender<Option<Exit>>,
    io: Mutex<Option<Arc<IoHandle>>>,
}

impl Proc {
    pub fn new(exec_id: &str, pid: u32, stdio: StdioPaths, spec: Option<Process>) -> Self {
        Proc {
            exec_id: exec_id.to_string(),
            stdio,
            spec,
            state: Mutex::new(ProcState::new(pid)),
            lifecycle: tokio::sync::Mutex::new(()),
            exited: watch::channel(None).0,
            io: Mutex::new(None),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, ProcState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn snapshot(&self) -> ProcState {
        self.state().clone()
    }

    /// Apply `t` and publish its event under the state lock, so no other transition of this
    /// process (an exit racing a pause, say) can publish its event in between.
    pub fn apply_publishing(
        &self,
        t: Transition,
        sink: &dyn EventSink,
        ev: TaskEvent,
    ) -> Result<()> {
        let mut st = self.state();
        st.apply(t)?;
        sink.publish(ev);
        Ok(())
    }

    pub fn set_pid(&self, pid: u32) {
        self.state().pid = pid;
    }

    pub fn status(&self) -> Status {
        self.state().status
    }

    /// Record the exit and wake every waiter.
    pub fn mark_exited(&self, exit: Exit) {
        self.exit_with(exit, |_| {});
    }

    /// Record the exit, call `publish` with the new state under the state lock (its event
    /// therefore follows every event of an earlier transition), then wake every waiter: a
    /// Wait never returns before the exit event went out.
    pub fn exit_with(&self, exit: Exit, publish: impl FnOnce(&ProcState)) {
        let recorded = {
            let mut st = self.state();
            let first = st.status != Status::Stopped;
            let _ = st.apply(Transition::Exit(exit));
            if first {
                publish(&st);
            }
            st.exit.unwrap_or(exit)
        };
        self.exited.send_replace(Some(recorded));
    }

    pub async fn wait(&self) -> Exit {
        let mut rx = self.exited.subscribe();
        loop {
            if let Some(e) = *rx.borrow_and_update() {
                return e;
            }
            if rx.changed().await.is_err() {
                return Exit::new(255);
            }
        }
    }

    pub async fn wait_timeout(&self, limit: Duration) -> Option<Exit> {
        tokio::time::timeout(limit, self.wait()).await.ok()
    }

    pub fn set_io(&self, io: IoHandle) -> Arc<IoHandle> {
        let io = Arc::new(io);
        *self.io.lock().unwrap_or_else(|p| p.into_inner()) = Some(io.clone());
        io
    }

    pub fn io(&self) -> Option<Arc<IoHandle>> {
        self.io.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stop all copying and close our ends of the stdio (delete).
    pub fn close_io(&self) {
        if let Some(io) = self.io.lock().unwrap_or_else(|p| p.into_inner()).take() {
            io.shutdown();
        }
    }
}

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub instance: Arc<dyn Instance>,
    pub init: Arc<Proc>,
    execs: Mutex<HashMap<String, Arc<Proc>>>,
}

impl Container {
    pub fn new(id: String, bundle: PathBuf, instance: Arc<dyn Instance>, init: Arc<Proc>) -> Self {
        Container {
            id,
            bundle,
            instance,
            init,
            execs: Mutex::new(HashMap::new()),
        }
    }

    fn execs(&self) -> MutexGuard<'_, HashMap<String, Arc<Proc>>> {
        self.execs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The init process for "", else the named exec.
    pub fn process(&self, exec_id: &str) -> Result<Arc<Proc>> {
        if exec_id.is_empty() {
            return Ok(self.init.clone());
        }
        self.execs().get(exec_id).cloned().ok_or_else(|| {
            Error::NotFound(format!("exec {exec_id} not found in container {}", self.id))
        })
    }

    pub fn add_exec(&self, p: Arc<Proc>) -> Result<()> {
        let mut m = self.execs();
        if m.contains_key(&p.exec_id) {
            return Err(Error::AlreadyExists(format!(
                "exec {} already exists in container {}",
                p.exec_id, self.id
            )));
        }
        m.insert(p.exec_id.clone(), p);
        Ok(())
    }

    pub fn remove_exec(&self, exec_id: &str) {
        self.execs().remove(exec_id);
    }

    pub fn exec_list(&self) -> Vec<Arc<Proc>> {
        self.execs().values().cloned().collect()
    }
}
