//! The task operations, on the shim's own types (`model.rs`): no protobuf below the edge.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use containerd_shim::ExitSignal;

use super::model::{EventSink, ExecTask, ProcInfo, TaskEvent};
use super::process::{Container, Proc};
use super::state::{Status, Transition};
use crate::backend::{registry, Backend, Spawned, Target};
use crate::config::BackendKind;
use crate::error::{Error, Result};
use crate::sys::reaper::Exit;
use crate::sys::stdio::IoHandle;

/// How long an exited process's output may take to drain before its exit is reported.
const DRAIN_LIMIT: Duration = Duration::from_secs(3);

/// Backend name → implementation (`registry::get` in the shim; a fake in the unit tests).
pub type BackendLookup = Arc<dyn Fn(BackendKind) -> Arc<dyn Backend> + Send + Sync>;

pub struct Service {
    pub(super) namespace: String,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    pub(super) events: Arc<dyn EventSink>,
    exit: Arc<ExitSignal>,
    pub(super) backends: BackendLookup,
}

impl Service {
    pub fn new(namespace: String, events: Arc<dyn EventSink>, exit: Arc<ExitSignal>) -> Self {
        Self::with_backends(namespace, events, exit, Arc::new(registry::get))
    }

    pub fn with_backends(
        namespace: String,
        events: Arc<dyn EventSink>,
        exit: Arc<ExitSignal>,
        backends: BackendLookup,
    ) -> Self {
        Service {
            namespace,
            containers: Mutex::new(HashMap::new()),
            events,
            exit,
            backends,
        }
    }

    pub(super) fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Container>>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn container(&self, id: &str) -> Result<Arc<Container>> {
        self.table()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("container {id} not found")))
    }

    /// Report a process's exit once its output drained and any in-flight start finished.
    pub(super) fn watch_exit(
        &self,
        c: Arc<Container>,
        p: Arc<Proc>,
        exit: crate::backend::ExitFuture,
    ) {
        let events = self.events.clone();
        tokio::spawn(async move {
            let code = exit.await;
            if let Some(io) = p.io() {
                io.wait_drained(DRAIN_LIMIT).await;
            }
            let _g = p.lifecycle.lock().await;
            if p.exec_id.is_empty() {
                // Exec processes die with their container: report them first, including an
                // exec whose start is in flight (its lifecycle lock tells when that is over).
                for e in c.exec_list() {
                    let started =
                        tokio::time::timeout(Duration::from_secs(2), e.lifecycle.lock()).await;
                    drop(started);
                    if matches!(e.status(), Status::Running | Status::Paused) {
                        let _ = e.wait_timeout(Duration::from_secs(2)).await;
                    }
                }
            }
            let id = c.id.clone();
            p.exit_with(code, |st| {
                events.publish(TaskEvent::Exit {
                    id,
                    exec_id: p.exec_id.clone(),
                    pid: st.pid,
                    exit: st.exit.unwrap_or(code),
                })
            });
        });
    }

    pub async fn start(&self, id: &str, exec_id: &str) -> Result<u32> {
        let c = self.container(id)?;
        let p = c.process(exec_id)?;
        let _g = p.lifecycle.lock().await;
        if p.status() != Status::Created {
            return Err(Error::precondition(format!(
                "cannot start a process that is {}",
                super::state::status_name(p.status())
            )));
        }
        if exec_id.is_empty() {
            if let Some(pid) = c.instance.start().await? {
                p.set_pid(pid);
            }
            let pid = p.snapshot().pid;
            p.apply_publishing(
                Transition::Start,
                self.events.as_ref(),
                TaskEvent::Start {
                    id: id.to_string(),
                    pid,
                },
            )?;
            return Ok(pid);
        }
        if c.init.status() == Status::Stopped {
            return Err(Error::precondition(format!(
                "container {id} is not running"
            )));
        }
        let spec = p
            .spec
            .clone()
            .ok_or_else(|| Error::internal("exec without a spec"))?;
        let Spawned { pid, io, exit } = c.instance.exec(exec_id, &spec, &p.stdio).await?;
        p.set_pid(pid);
        if let Err(e) = IoHandle::start(&p.stdio, io, id, &self.namespace)
            .await
            .map(|h| p.set_io(h))
        {
            let _ = c
                .instance
                .kill(Target::Exec { id: exec_id, pid }, 9, false)
                .await;
            return Err(e);
        }
        p.apply_publishing(
            Transition::Start,
            self.events.as_ref(),
            TaskEvent::ExecStarted {
                id: id.to_string(),
                exec_id: exec_id.to_string(),
                pid,
            },
        )?;
        self.watch_exit(c.clone(), p.clone(), exit);
        Ok(pid)
    }

    pub fn state(&self, id: &str, exec_id: &str) -> Result<ProcInfo> {
        let c = self.container(id)?;
        let p = c.process(exec_id)?;
        Ok(info(&c, &p))
    }

    pub async fn delete(&self, id: &str, exec_id: &str) -> Result<ProcInfo> {
        let c = self.container(id)?;
        let p = c.process(exec_id)?;
        p.snapshot().deletable()?;
        if !exec_id.is_empty() {
            p.close_io();
            c.remove_exec(exec_id);
            return Ok(info(&c, &p));
        }
        let never_started = p.status() == Status::Created;
        c.instance.delete(never_started).await?;
        if let Err(e) = crate::backend::BundleRecord::mark_deleted(&c.bundle) {
            log::warn!("{id}: cannot mark the record deleted: {e}");
        }
        if never_started {
            // The waiting init was killed by the forced delete; let its exit land.
            if p.wait_timeout(Duration::from_secs(5)).await.is_none() {
                p.mark_exited(Exit::new(137));
            }
        }
        for e in c.exec_list() {
            e.close_io();
        }
        p.close_io();
        self.table().remove(id);
        let st = p.snapshot();
        self.events.publish(TaskEvent::Delete {
            id: id.to_string(),
            pid: st.pid,
            exit: st.exit,
        });
        Ok(info(&c, &p))
    }

    pub async fn pids(&self, id: &str) -> Result<Vec<u32>> {
        self.container(id)?.instance.pids().await
    }

    pub async fn pause(&self, id: &str) -> Result<()> {
        let c = self.container(id)?;
        if c.init.status() != Status::Running {
            return Err(Error::precondition(format!(
                "cannot pause container {id}: it is {}",
                super::state::status_name(c.init.status())
            )));
        }
        c.instance.pause().await?;
        c.init.apply_publishing(
            Transition::Pause,
            self.events.as_ref(),
            TaskEvent::Paused { id: id.to_string() },
        )?;
        Ok(())
    }

    pub async fn resume(&self, id: &str) -> Result<()> {
        let c = self.container(id)?;
        if c.init.status() != Status::Paused {
            return Err(Error::precondition(format!(
                "cannot resume container {id}: it is {}",
                super::state::status_name(c.init.status())
            )));
        }
        c.instance.resume().await?;
        c.init.apply_publishing(
            Transition::Resume,
            self.events.as_ref(),
            TaskEvent::Resumed { id: id.to_string() },
        )?;
        Ok(())
    }

    pub async fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let c = self.container(id)?;
        let p = c.process(exec_id)?;
        let st = p.snapshot();
        if exec_id.is_empty() {
            if st.status == Status::Stopped {
                return Err(Error::NotFound(format!(
                    "process already finished: container {id}"
                )));
            }
            return c.instance.kill(Target::Init, signal, all).await;
        }
        match st.status {
            Status::Stopped => Err(Error::NotFound(format!(
                "process already finished: exec {exec_id}"
            ))),
            Status::Created => Err(Error::precondition(format!(
                "exec {exec_id} has not been started"
            ))),
            _ => {
                c.instance
                    .kill(
                        Target::Exec {
                            id: exec_id,
                            pid: st.pid,
                        },
                        signal,
                        all,
                    )
                    .await
            }
        }
    }

    pub fn exec(&self, req: ExecTask) -> Result<()> {
        super::model::validate_id("exec id", &req.exec_id)?;
        let c = self.container(&req.id)?;
        if c.init.status() == Status::Stopped {
            return Err(Error::precondition(format!(
                "container {} is not running",
                req.id
            )));
        }
        let mut spec = req.process;
        // The request, not the spec, says whether the client set up a terminal.
        spec.set_terminal(Some(req.stdio.terminal));
        c.add_exec(Arc::new(Proc::new(&req.exec_id, 0, req.stdio, Some(spec))))?;
        self.events.publish(TaskEvent::ExecAdded {
            id: req.id,
            exec_id: req.exec_id,
        });
        Ok(())
    }

    pub fn resize_pty(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()> {
        let p = self.container(id)?.process(exec_id)?;
        // Like runc's shim: resizing a process without a terminal is a no-op.
        match p.io() {
            Some(io) if io.has_pty() => io.resize(width, height),
            _ => Ok(()),
        }
    }

    pub fn close_io(&self, id: &str, exec_id: &str, stdin: bool) -> Result<()> {
        let p = self.container(id)?.process(exec_id)?;
        if stdin {
            if let Some(io) = p.io() {
                io.close_stdin();
            }
        }
        Ok(())
    }

    pub async fn update(
        &self,
        id: &str,
        resources: &oci_spec::runtime::LinuxResources,
    ) -> Result<()> {
        let c = self.container(id)?;
        if c.init.status() == Status::Stopped {
            return Err(Error::precondition(format!(
                "container {id} is not running"
            )));
        }
        c.instance.update(resources).await
    }

    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<Exit> {
        let p = self.container(id)?.process(exec_id)?;
        Ok(p.wait().await)
    }

    pub async fn stats(&self, id: &str) -> Result<crate::sys::cgroup::Metrics> {
        self.container(id)?.instance.stats().await
    }

    /// The init's pid of `id`, when the shim runs it.
    pub fn task_pid(&self, id: &str) -> Option<u32> {
        self.container(id).ok().map(|c| c.init.snapshot().pid)
    }

    pub fn shutdown(&self, now: bool) {
        if now || self.table().is_empty() {
            self.exit.signal();
        }
    }
}

fn info(c: &Container, p: &Proc) -> ProcInfo {
    ProcInfo {
        id: if p.exec_id.is_empty() {
            c.id.clone()
        } else {
            p.exec_id.clone()
        },
        exec_id: p.exec_id.clone(),
        bundle: c.bundle.clone(),
        stdio: p.stdio.clone(),
        state: p.snapshot(),
    }
}
