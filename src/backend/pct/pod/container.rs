//! A container of a pod, inside the pod's CT. Create unpacks its image into the CT
//! (`pct exec … init unpack`, the template archive on stdin), attaches its host mounts below D
//! and writes its spec; Start runs it (`pct exec … init container <spec>`): the `pct exec`
//! process is this container's for the shim, as an exec's is, and its exit code is the
//! container's. Exec joins the container's namespaces (`init exec-in`).

use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use oci_spec::runtime::{LinuxResources, Process};
use tokio::sync::{mpsc, watch};

use super::inct::{
    container_spec, ct_dir_of, ct_pid, init_in_ct, pct_init, shares_pod_pid, tree, Undo,
};
use super::{ctr_name, mounts, PodCt};
use crate::backend::pct::ctcg::CtCgroup;
use crate::backend::pct::exec::{self, ChildStdio};
use crate::backend::pct::template;
use crate::backend::{CreateRequest, Instance, Spawned, Target};
use crate::error::{Error, Result};
use crate::sys::cgroup::{Cgroup, Metrics};
use crate::sys::reaper::Exit;
use crate::sys::stdio::StdioPaths;

/// How long Start waits for the container's process to appear below `pct exec`.
const START_WAIT: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Running {
    /// The `pct exec` process.
    pct_exec: Option<u32>,
    /// The container's process (host pid), once seen.
    process: Option<u32>,
    cgroup: Option<Cgroup>,
}

pub struct PodContainer {
    owner: String,
    pod: Arc<PodCt>,
    name: String,
    spec_in_ct: String,
    timeout: Duration,
    stdio: Mutex<Option<ChildStdio>>,
    /// The exit, once known (Start's process, or a kill before Start).
    exit: watch::Sender<Option<Exit>>,
    running: Mutex<Running>,
    oom_tx: mpsc::UnboundedSender<()>,
    oom_rx: Mutex<Option<mpsc::UnboundedReceiver<()>>>,
    deleted: tokio::sync::Mutex<bool>,
    resources: Option<LinuxResources>,
}

impl PodContainer {
    /// Create: everything but the process. What a failed Create made is undone ([`Undo`]).
    pub async fn create(req: &CreateRequest, pod: Arc<PodCt>) -> Result<(Arc<Self>, Spawned)> {
        super::admit_member(&req.spec)?;
        let timeout = Duration::from_secs(req.config.pct.timeout_secs.max(1));
        let name = ctr_name(&req.id);
        let mut undo = Undo::new(pod.clone(), &name, timeout);
        match Self::make(req, pod, &name, timeout, &mut undo).await {
            Ok(v) => {
                undo.disarm();
                Ok(v)
            }
            Err(e) => {
                undo.rollback().await;
                Err(e)
            }
        }
    }

    async fn make(
        req: &CreateRequest,
        pod: Arc<PodCt>,
        name: &str,
        timeout: Duration,
        undo: &mut Undo,
    ) -> Result<(Arc<Self>, Spawned)> {
        let owner = format!("{}/{}", req.namespace, req.id);
        let process = crate::backend::pct::create::process_of(req)?;
        let (cspec, binds) = container_spec(&req.spec, &process, name, shares_pod_pid(&req.spec))?;
        let lease = template::ensure_for(req, &process).await?;
        let archive = std::fs::File::open(lease.path())
            .map_err(|e| Error::io(format!("open {}", lease.path().display()), e))?;
        let t = Instant::now();
        undo.made_root(&ct_dir_of(name));
        pct_init(
            &pod,
            &["unpack", &cspec.root],
            Some(OwnedFd::from(archive)),
            timeout,
        )
        .await
        .map_err(|e| e.context("unpack the image into the pod's CT"))?;
        drop(lease);
        log::info!(
            "{owner}: image unpacked into CT {} at {} in {:?}",
            pod.vmid,
            cspec.root,
            t.elapsed()
        );
        let d = pod.dir.path().to_path_buf();
        let gid = pod.dir.ct_gid();
        let n2 = name.to_string();
        undo.made_mounts();
        tokio::task::spawn_blocking(move || mounts::attach(&d, &n2, &binds, gid))
            .await
            .map_err(|e| Error::internal(format!("attach mounts: {e}")))??;
        undo.made_spec();
        let spec_in_ct = serde_json::to_vec(&cspec)
            .map_err(Error::from)
            .and_then(|b| pod.dir.write_ctr_spec(name, &b))?;
        let (io, child) = ChildStdio::new(&req.stdio, &process)?;
        let (exit, mut exit_rx) = watch::channel(None);
        let (oom_tx, oom_rx) = mpsc::unbounded_channel();
        let placeholder = pod.init_host_pid;
        let me = Arc::new(PodContainer {
            owner,
            pod,
            name: name.to_string(),
            spec_in_ct,
            timeout,
            stdio: Mutex::new(Some(child)),
            exit,
            running: Mutex::new(Running::default()),
            oom_tx,
            oom_rx: Mutex::new(Some(oom_rx)),
            deleted: tokio::sync::Mutex::new(false),
            resources: req
                .spec
                .linux()
                .as_ref()
                .and_then(|l| l.resources().clone()),
        });
        let exit_fut: crate::backend::ExitFuture = Box::pin(async move {
            loop {
                if let Some(e) = *exit_rx.borrow_and_update() {
                    return e;
                }
                if exit_rx.changed().await.is_err() {
                    return Exit::new(255);
                }
            }
        });
        Ok((
            me,
            Spawned {
                pid: placeholder,
                io,
                exit: exit_fut,
            },
        ))
    }

    fn process_pid(&self) -> Option<u32> {
        self.running.lock().ok().and_then(|r| r.process)
    }

    fn cgroup(&self) -> Result<Cgroup> {
        self.running
            .lock()
            .ok()
            .and_then(|r| r.cgroup.clone())
            .ok_or_else(|| Error::precondition(format!("{}: not running", self.owner)))
    }

    /// The container's own cgroup, made and limited on the host, with `p` moved in.
    async fn own_cgroup(&self, p: u32) -> Result<Cgroup> {
        let init = self.pod.init_host_pid;
        let name = self.name.clone();
        let res = self.resources.clone();
        let made = tokio::task::spawn_blocking(move || -> Result<Cgroup> {
            let cg = super::cgroup::make(&Cgroup::of_pid(init)?, &name)?;
            super::cgroup::limit(&cg, res.as_ref())?;
            super::cgroup::enter(&cg, p)?;
            Ok(cg)
        })
        .await;
        made.map_err(|e| Error::internal(format!("cgroup: {e}")))?
    }

    fn exited(&self) -> bool {
        self.exit.borrow().is_some()
    }

    /// The container's process: the child of the first process below `pct exec` in the CT's
    /// pid namespace (the init's helper). Waits until it appears or `pct exec` is gone.
    async fn find_process(&self, pct_exec: u32) -> Option<u32> {
        let start = Instant::now();
        while start.elapsed() < START_WAIT && !self.exited() {
            if let Some(helper) = exec::ct_processes(pct_exec).first().copied() {
                if let Some(p) = exec::children(helper).first().copied() {
                    return Some(p);
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    }
}

#[async_trait]
impl Instance for PodContainer {
    async fn start(&self) -> Result<Option<u32>> {
        let child = self
            .stdio
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .ok_or_else(|| Error::precondition(format!("{} was started already", self.owner)))?;
        if self.exited() {
            return Err(Error::precondition(format!("{} was killed", self.owner)));
        }
        let args = vec![
            init_in_ct().into(),
            "container".into(),
            self.spec_in_ct.clone().into(),
        ];
        let (pid, exit) = exec::spawn_pct_exec(self.pod.pct.program(), self.pod.vmid, args, child)?;
        if let Ok(mut r) = self.running.lock() {
            r.pct_exec = Some(pid);
        }
        let tx = self.exit.clone();
        tokio::spawn(async move {
            let e = exit.await.unwrap_or_else(|_| Exit::new(255));
            let _ = tx.send(Some(e));
        });
        let Some(p) = self.find_process(pid).await else {
            let last = *self.exit.borrow();
            if let Some(e) = last {
                // Exited at once: a setup failure (126/127) or a very short program.
                if e.code == 126 || e.code == 127 {
                    return Err(Error::precondition(format!(
                        "{}: the container did not start (exit {}; the container's stderr says why)",
                        self.owner, e.code
                    )));
                }
                return Ok(None);
            }
            return Err(Error::DeadlineExceeded(format!(
                "{}: the container's process did not appear within {START_WAIT:?}",
                self.owner
            )));
        };
        let cg = match self.own_cgroup(p).await {
            Ok(cg) => Some(cg),
            Err(e) => {
                // Never a container without the limits it asked for.
                let _ = exec::kill(pid, libc::SIGKILL as u32);
                return Err(e.context(format!("{}: the container's cgroup", self.owner)));
            }
        };
        if let Some(cg) = &cg {
            match cg.watch_oom() {
                Ok(mut rx) => {
                    let tx = self.oom_tx.clone();
                    tokio::spawn(async move {
                        while rx.recv().await.is_some() {
                            if tx.send(()).is_err() {
                                break;
                            }
                        }
                    });
                }
                Err(e) => log::warn!("{}: OOM events unavailable: {e}", self.owner),
            }
        }
        if let Ok(mut r) = self.running.lock() {
            r.process = Some(p);
            r.cgroup = cg;
        }
        Ok(Some(p))
    }

    async fn exec(&self, exec_id: &str, process: &Process, stdio: &StdioPaths) -> Result<Spawned> {
        let p = self
            .process_pid()
            .filter(|_| !self.exited())
            .ok_or_else(|| Error::precondition(format!("{} is not running", self.owner)))?;
        let inside =
            ct_pid(p).ok_or_else(|| Error::precondition(format!("{} has exited", self.owner)))?;
        exec::spawn_in(
            self.pod.pct.program(),
            self.pod.vmid,
            &self.pod.dir,
            &format!("{}-{exec_id}", self.name),
            process,
            stdio,
            Some(inside),
        )
    }

    async fn kill(&self, target: Target<'_>, signal: u32, all: bool) -> Result<()> {
        let sig = nix::sys::signal::Signal::try_from(signal as i32)
            .map_err(|_| Error::invalid(format!("invalid signal {signal}")))?;
        match target {
            Target::Exec { pid, .. } => exec::kill(pid, signal),
            Target::Init => {
                let (pct_exec, process) = self
                    .running
                    .lock()
                    .map(|r| (r.pct_exec, r.process))
                    .unwrap_or_default();
                if self.exited() {
                    return Err(Error::NotFound("process already finished".into()));
                }
                let Some(pct_exec) = pct_exec else {
                    // Killed before Start: it never runs.
                    let _ = self.exit.send(Some(Exit::new(128 + signal)));
                    return Ok(());
                };
                let targets = match (process, all) {
                    (Some(p), true) => tree(p),
                    (Some(p), false) => vec![p],
                    (None, _) => return exec::kill(pct_exec, signal),
                };
                for p in targets {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p as i32), sig);
                }
                Ok(())
            }
        }
    }

    async fn pause(&self) -> Result<()> {
        let cg = CtCgroup::exact(&self.cgroup()?);
        tokio::task::spawn_blocking(move || cg.freeze())
            .await
            .map_err(|e| Error::internal(format!("freeze: {e}")))?
    }

    async fn resume(&self) -> Result<()> {
        let cg = CtCgroup::exact(&self.cgroup()?);
        tokio::task::spawn_blocking(move || cg.thaw())
            .await
            .map_err(|e| Error::internal(format!("thaw: {e}")))?
    }

    async fn pids(&self) -> Result<Vec<u32>> {
        Ok(self.process_pid().map(tree).unwrap_or_default())
    }

    async fn stats(&self) -> Result<Metrics> {
        Ok(self.cgroup()?.metrics())
    }

    async fn update(&self, resources: &LinuxResources) -> Result<()> {
        let cg = self.cgroup()?;
        let r = resources.clone();
        tokio::task::spawn_blocking(move || super::limits::apply(&cg, &r))
            .await
            .map_err(|e| Error::internal(format!("update: {e}")))?
    }

    async fn delete(&self, _force: bool) -> Result<()> {
        let mut deleted = self.deleted.lock().await;
        if *deleted {
            return Ok(());
        }
        let pct_exec = self.running.lock().ok().and_then(|r| r.pct_exec);
        if let (Some(p), false) = (pct_exec, self.exited()) {
            let _ = exec::kill(p, libc::SIGKILL as u32);
        }
        let (d, n) = (self.pod.dir.path().to_path_buf(), self.name.clone());
        let _ = tokio::task::spawn_blocking(move || mounts::detach(&d, &n)).await;
        self.pod.dir.remove_ctr_spec(&self.name);
        let root = ct_dir_of(&self.name);
        if let Err(e) = pct_init(&self.pod, &["remove", &root], None, self.timeout).await {
            log::warn!("{}: remove {root} in CT {}: {e}", self.owner, self.pod.vmid);
        }
        if let Some(cg) = self.running.lock().ok().and_then(|r| r.cgroup.clone()) {
            let _ = tokio::task::spawn_blocking(move || super::cgroup::remove(&cg)).await;
        }
        *deleted = true;
        Ok(())
    }

    fn oom_events(&self) -> Option<mpsc::UnboundedReceiver<()>> {
        self.oom_rx.lock().ok().and_then(|mut o| o.take())
    }
}
