//! The task operations, on the shim's own types.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use containerd_shim::api;
use containerd_shim::ExitSignal;
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::MessageField;

use super::convert::{self, timestamp};
use super::events::Events;
use super::process::{Container, Proc};
use super::state::{Status, Transition};
use crate::backend::{registry, BundleRecord, CreateRequest, Spawned, Target};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::options;
use crate::router;
use crate::sys::stdio::{IoHandle, StdioPaths};

/// How long an exited process's output may take to drain before its exit is reported.
const DRAIN_LIMIT: Duration = Duration::from_secs(3);

pub struct Service {
    namespace: String,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    events: Events,
    exit: Arc<ExitSignal>,
}

impl Service {
    pub fn new(namespace: String, events: Events, exit: Arc<ExitSignal>) -> Self {
        Service {
            namespace,
            containers: Mutex::new(HashMap::new()),
            events,
            exit,
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Container>>> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn container(&self, id: &str) -> Result<Arc<Container>> {
        self.table()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("container {id} not found")))
    }

    pub async fn create(&self, req: api::CreateTaskRequest) -> Result<u32> {
        convert::validate_id("container id", &req.id)?;
        if self.table().contains_key(&req.id) {
            return Err(Error::AlreadyExists(format!(
                "container {} already exists",
                req.id
            )));
        }
        if !req.checkpoint.is_empty() {
            return Err(Error::Unimplemented(
                "restoring from a checkpoint is not supported by containerd-shim-pvelxc-v2".into(),
            ));
        }
        let bundle = PathBuf::from(&req.bundle);
        if !bundle.is_absolute() || !bundle.is_dir() {
            return Err(Error::invalid(format!(
                "bundle {:?} is not a directory",
                req.bundle
            )));
        }
        let opts = match req.options.as_ref() {
            Some(any) => options::decode(any)?,
            None => options::RuntimeOptions::default(),
        };
        let loaded = Config::load(opts.config_path.as_deref())?;
        let spec = load_spec(&bundle)?;
        let annotations = spec.annotations().clone().unwrap_or_default();
        let config = Arc::new(loaded.config);
        let decision = router::route(
            &config,
            &router::Request {
                namespace: &self.namespace,
                container_id: &req.id,
                annotations: &annotations,
            },
            |k| registry::get(k).admit(&annotations),
            |k| registry::get(k).usable(&config),
        )?;
        log::info!(
            "{}: backend {} ({})",
            req.id,
            decision.backend,
            decision.reason
        );
        let backend = registry::get(decision.backend);
        BundleRecord {
            backend: Some(decision.backend),
            namespace: self.namespace.clone(),
            id: req.id.clone(),
            config_path: loaded.path.map(|p| p.display().to_string()),
            data: HashMap::new(),
        }
        .save(&bundle)?;

        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let (instance, spawned) = backend
            .create(CreateRequest {
                namespace: self.namespace.clone(),
                id: req.id.clone(),
                bundle: bundle.clone(),
                spec,
                rootfs: convert::mounts(&req.rootfs),
                stdio: stdio.clone(),
                options: opts,
                config,
            })
            .await?;
        let Spawned { pid, io, exit } = spawned;
        let init = Arc::new(Proc::new("", pid, stdio.clone(), None));
        match IoHandle::start(&stdio, io) {
            Ok(h) => {
                init.set_io(h);
            }
            Err(e) => {
                let _ = instance.delete(true).await;
                return Err(e);
            }
        }
        let c = Arc::new(Container::new(
            req.id.clone(),
            bundle,
            instance.clone(),
            init.clone(),
        ));
        self.table().insert(req.id.clone(), c.clone());

        let mut ev = TaskCreate::new();
        ev.container_id = req.id.clone();
        ev.bundle = req.bundle.clone();
        ev.rootfs = req.rootfs.clone();
        let mut tio = TaskIO::new();
        tio.stdin = req.stdin;
        tio.stdout = req.stdout;
        tio.stderr = req.stderr;
        tio.terminal = req.terminal;
        ev.io = MessageField::some(tio);
        ev.pid = pid;
        self.events.send(ev);

        self.watch_exit(c.clone(), init, exit);
        if let Some(mut oom) = instance.oom_events() {
            let events = self.events.clone();
            let id = req.id.clone();
            tokio::spawn(async move {
                while oom.recv().await.is_some() {
                    let mut ev = TaskOOM::new();
                    ev.container_id = id.clone();
                    events.send(ev);
                }
            });
        }
        Ok(pid)
    }

    /// Report a process's exit once its output drained and any in-flight start finished.
    fn watch_exit(&self, c: Arc<Container>, p: Arc<Proc>, exit: crate::backend::ExitFuture) {
        let events = self.events.clone();
        tokio::spawn(async move {
            let code = exit.await;
            if let Some(io) = p.io() {
                io.wait_drained(DRAIN_LIMIT).await;
            }
            let _g = p.lifecycle.lock().await;
            if p.exec_id.is_empty() {
                // Exec processes die with their container: report them first.
                for e in c.exec_list() {
                    if matches!(e.status(), Status::Running) {
                        let _ = e.wait_timeout(Duration::from_secs(2)).await;
                    }
                }
            }
            p.mark_exited(code);
            let st = p.snapshot();
            let mut ev = TaskExit::new();
            ev.container_id = c.id.clone();
            ev.id = if p.exec_id.is_empty() {
                c.id.clone()
            } else {
                p.exec_id.clone()
            };
            ev.pid = st.pid;
            ev.exit_status = st.exit_code();
            ev.exited_at = timestamp(st.exited_at());
            events.send(ev);
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
            p.apply(Transition::Start)?;
            let pid = p.snapshot().pid;
            let mut ev = TaskStart::new();
            ev.container_id = id.to_string();
            ev.pid = pid;
            self.events.send(ev);
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
        if let Err(e) = IoHandle::start(&p.stdio, io).map(|h| p.set_io(h)) {
            let _ = c
                .instance
                .kill(Target::Exec { id: exec_id, pid }, 9, false)
                .await;
            return Err(e);
        }
        p.apply(Transition::Start)?;
        self.watch_exit(c.clone(), p.clone(), exit);
        let mut ev = TaskExecStarted::new();
        ev.container_id = id.to_string();
        ev.exec_id = exec_id.to_string();
        ev.pid = pid;
        self.events.send(ev);
        Ok(pid)
    }

    pub fn state(&self, id: &str, exec_id: &str) -> Result<api::StateResponse> {
        let c = self.container(id)?;
        let p = c.process(exec_id)?;
        let st = p.snapshot();
        let mut r = api::StateResponse::new();
        r.id = if exec_id.is_empty() {
            id.to_string()
        } else {
            exec_id.to_string()
        };
        r.exec_id = exec_id.to_string();
        r.bundle = c.bundle.display().to_string();
        r.pid = st.pid;
        r.status = convert::status(st.status);
        r.stdin = p.stdio.stdin.clone();
        r.stdout = p.stdio.stdout.clone();
        r.stderr = p.stdio.stderr.clone();
        r.terminal = p.stdio.terminal;
        r.exit_status = st.exit_code();
        r.exited_at = timestamp(st.exited_at());
        Ok(r)
    }

    pub async fn delete(&self, id: &str, exec_id: &str) -> Result<api::DeleteResponse> {
        let c = self.container(id)?;
        let p = c.process(exec_id)?;
        p.snapshot().deletable()?;
        if !exec_id.is_empty() {
            p.close_io();
            c.remove_exec(exec_id);
            let st = p.snapshot();
            return Ok(convert::delete_response(st.pid, &st));
        }
        let never_started = p.status() == Status::Created;
        c.instance.delete(never_started).await?;
        if never_started {
            // The waiting init was killed by the forced delete; let its exit land.
            if p.wait_timeout(Duration::from_secs(5)).await.is_none() {
                p.mark_exited(crate::sys::reaper::Exit::new(137));
            }
        }
        for e in c.exec_list() {
            e.close_io();
        }
        p.close_io();
        self.table().remove(id);
        let st = p.snapshot();
        let mut ev = TaskDelete::new();
        ev.container_id = id.to_string();
        ev.id = id.to_string();
        ev.pid = st.pid;
        ev.exit_status = st.exit_code();
        ev.exited_at = timestamp(st.exited_at());
        self.events.send(ev);
        Ok(convert::delete_response(st.pid, &st))
    }

    pub async fn pids(&self, id: &str) -> Result<api::PidsResponse> {
        let c = self.container(id)?;
        let pids = c.instance.pids().await?;
        let mut r = api::PidsResponse::new();
        for pid in pids {
            let mut info = containerd_shim_protos::types::task::ProcessInfo::new();
            info.pid = pid;
            r.processes.push(info);
        }
        Ok(r)
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
        c.init.apply(Transition::Pause)?;
        let mut ev = TaskPaused::new();
        ev.container_id = id.to_string();
        self.events.send(ev);
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
        c.init.apply(Transition::Resume)?;
        let mut ev = TaskResumed::new();
        ev.container_id = id.to_string();
        self.events.send(ev);
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

    pub fn exec(&self, req: api::ExecProcessRequest) -> Result<()> {
        convert::validate_id("exec id", &req.exec_id)?;
        let c = self.container(&req.id)?;
        if c.init.status() == Status::Stopped {
            return Err(Error::precondition(format!(
                "container {} is not running",
                req.id
            )));
        }
        let mut spec = convert::process_spec(&req.spec)?;
        // The request, not the spec, says whether the client set up a terminal.
        spec.set_terminal(Some(req.terminal));
        let stdio = StdioPaths {
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            terminal: req.terminal,
        };
        c.add_exec(Arc::new(Proc::new(&req.exec_id, 0, stdio, Some(spec))))?;
        let mut ev = TaskExecAdded::new();
        ev.container_id = req.id;
        ev.exec_id = req.exec_id;
        self.events.send(ev);
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

    pub async fn update(&self, req: api::UpdateTaskRequest) -> Result<()> {
        let c = self.container(&req.id)?;
        if c.init.status() == Status::Stopped {
            return Err(Error::precondition(format!(
                "container {} is not running",
                req.id
            )));
        }
        let res = convert::resources(&req.resources)?;
        c.instance.update(&res).await
    }

    pub async fn wait(&self, id: &str, exec_id: &str) -> Result<api::WaitResponse> {
        let p = self.container(id)?.process(exec_id)?;
        let e = p.wait().await;
        let mut r = api::WaitResponse::new();
        r.exit_status = e.code;
        r.exited_at = timestamp(Some(e.at));
        Ok(r)
    }

    pub async fn stats(&self, id: &str) -> Result<api::StatsResponse> {
        let c = self.container(id)?;
        let mut r = api::StatsResponse::new();
        r.stats = MessageField::some(c.instance.stats().await?);
        Ok(r)
    }

    pub fn connect(&self, id: &str) -> Result<api::ConnectResponse> {
        let mut r = api::ConnectResponse::new();
        r.shim_pid = std::process::id();
        r.version = crate::VERSION.trim().to_string();
        if let Ok(c) = self.container(id) {
            r.task_pid = c.init.snapshot().pid;
        }
        Ok(r)
    }

    pub fn shutdown(&self, now: bool) {
        if now || self.table().is_empty() {
            self.exit.signal();
        }
    }
}

fn load_spec(bundle: &Path) -> Result<oci_spec::runtime::Spec> {
    let p = bundle.join("config.json");
    let text = std::fs::read(&p).map_err(|e| Error::io(format!("read {}", p.display()), e))?;
    serde_json::from_slice(&text)
        .map_err(|e| Error::invalid(format!("malformed {}: {e}", p.display())))
}
