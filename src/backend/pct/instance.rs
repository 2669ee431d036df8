//! One running CT: the [`Instance`] operations.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use oci_spec::runtime::{LinuxResources, Process};
use tokio::sync::mpsc;

use super::cmd::{CtOptions, PctCommand};
use super::ctcg::CtCgroup;
use super::ctdir::CtDir;
use super::ctl::Ctl;
use super::runner::Pct;
use super::vmid::{Allocator, Vmid};
use super::{backend, ctcg, ctl, exec, spec};
use crate::backend::{executable, Instance, Spawned, Target};
use crate::error::{Error, Result};
use crate::sys::cgroup::Cgroup;
use crate::sys::cgroup::Metrics;
use crate::sys::stdio::StdioPaths;

pub struct PctInstance {
    /// `<namespace>/<id>`, for logs.
    pub owner: String,
    pub vmid: Vmid,
    /// The per-container host directory D.
    pub dir: Arc<CtDir>,
    /// The ownership tag this shim gave the CT (checked before any destroy).
    pub token: String,
    pub pct: Pct,
    pub alloc: Allocator,
    pub ctl: Arc<Ctl>,
    /// The CT init's pidfd: signals never reach a reused pid.
    pub init_pidfd: ctl::PidFd,
    pub cgroup: Option<Cgroup>,
    pub ctcg: Option<CtCgroup>,
    pub oom: Mutex<Option<mpsc::UnboundedReceiver<()>>>,
    pub destroyed: tokio::sync::Mutex<bool>,
    /// The bundle record: cleared once the CT is destroyed, so that a later `delete` action
    /// (containerd runs one when a shim goes away) has nothing left to clean up.
    pub record: Arc<crate::backend::Recorder>,
    /// A pod's sandbox: the pod its containers find (kept alive with the CT).
    pub pod: Option<Arc<super::pod::PodCt>>,
}

impl PctInstance {
    fn ctcg(&self) -> Result<&CtCgroup> {
        self.ctcg
            .as_ref()
            .ok_or_else(|| Error::precondition(format!("CT {}: no cgroup found", self.vmid)))
    }
}

#[async_trait]
impl Instance for PctInstance {
    async fn start(&self) -> Result<Option<u32>> {
        let started = self.ctl.start(Duration::from_secs(30)).await?;
        // containerd's task pid is the user's process, not our init.
        Ok(started
            .filter(|p| *p > 0)
            .and_then(|p| ctl::child_with_ns_pid(self.ctl.host_pid, p)))
    }

    async fn exec(&self, exec_id: &str, process: &Process, stdio: &StdioPaths) -> Result<Spawned> {
        // `pct exec` only fails once it runs; containerd wants Start to fail for a missing binary.
        let root = PathBuf::from(format!("/proc/{}/root", self.ctl.host_pid));
        let checked = process.clone();
        tokio::task::spawn_blocking(move || executable::check(&root, &checked))
            .await
            .map_err(|e| Error::internal(format!("check the executable: {e}")))??;
        exec::spawn_in(
            self.pct.program(),
            self.vmid,
            &self.dir,
            exec_id,
            process,
            stdio,
            None,
        )
    }

    async fn kill(&self, target: Target<'_>, signal: u32, all: bool) -> Result<()> {
        match target {
            Target::Init => {
                let signo = i32::try_from(signal)
                    .map_err(|_| Error::invalid(format!("invalid signal {signal}")))?;
                // SIGKILL cannot be forwarded: kill the CT's init itself (the CT dies: 137).
                if signal == libc::SIGKILL as u32 {
                    return self.init_pidfd.signal(signo);
                }
                if self.ctl.signal(signo, all) {
                    return Ok(());
                }
                // No control connection: the init forwards host signals too.
                self.init_pidfd.signal(signo)
            }
            Target::Exec { pid, .. } => exec::kill(pid, signal),
        }
    }

    async fn pause(&self) -> Result<()> {
        let cg = self.ctcg()?.clone();
        tokio::task::spawn_blocking(move || cg.freeze())
            .await
            .map_err(|e| Error::internal(format!("freeze: {e}")))?
    }

    async fn resume(&self) -> Result<()> {
        let cg = self.ctcg()?.clone();
        tokio::task::spawn_blocking(move || cg.thaw())
            .await
            .map_err(|e| Error::internal(format!("thaw: {e}")))?
    }

    async fn pids(&self) -> Result<Vec<u32>> {
        // Our init is infrastructure, not one of the user's processes.
        let init = self.ctl.host_pid;
        let mut pids = self.ctcg()?.pids()?;
        pids.retain(|p| *p != init);
        Ok(pids)
    }

    async fn stats(&self) -> Result<Metrics> {
        // The CT-level cgroup: `pct set` puts the limits there, not on `ns` below it.
        let cg = match &self.cgroup {
            Some(c) => c.clone(),
            None => Cgroup::of_pid(self.ctl.host_pid)?,
        };
        Ok(ctcg::ct_level_cgroup(&cg).metrics())
    }

    async fn update(&self, resources: &LinuxResources) -> Result<()> {
        let mut o = CtOptions::default();
        spec::resources(resources, &mut o);
        if o == CtOptions::default() {
            return Ok(());
        }
        self.pct
            .run_ok(&PctCommand::Set {
                vmid: self.vmid,
                options: Box::new(o),
                delete: Vec::new(),
            })
            .await?;
        if let Some(cg) = &self.cgroup {
            if let Err(e) = ctcg::mirror_memory_limit(cg) {
                log::warn!("{}: memory limit on the init's cgroup: {e}", self.owner);
            }
        }
        Ok(())
    }

    async fn delete(&self, _force: bool) -> Result<()> {
        let mut done = self.destroyed.lock().await;
        if *done {
            return Ok(());
        }
        self.ctl.close();
        backend::destroy(
            &self.pct,
            &self.alloc,
            self.vmid,
            self.dir.path(),
            &self.token,
        )
        .await?;
        log::info!("{}: CT {} destroyed", self.owner, self.vmid);
        if let Err(e) = self.record.set(crate::backend::BackendState::None) {
            log::warn!("{}: clear the bundle record: {e}", self.owner);
        }
        *done = true;
        Ok(())
    }

    fn oom_events(&self) -> Option<mpsc::UnboundedReceiver<()>> {
        self.oom.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}
