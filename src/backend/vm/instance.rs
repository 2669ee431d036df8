//! One container = one micro-VM: the init process is the agent's `Run` process, execs are `Exec`s.
//!
//! Pids: containerd sees QEMU's host pid for the init (the host process that *is* the container)
//! and the guest pid for each exec; `pids()` lists QEMU's pid followed by the guest's other user
//! processes (guest pid namespace).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use oci_spec::runtime::{LinuxResources, Process};
use pvelxc_agent::proto;
use tokio::sync::mpsc;

use super::io::{self, HostEnds};
use super::shared::{lock, InitState, Shared, INIT_ID};
use super::{errors, metrics, spec, state};
use crate::backend::{Instance, Spawned, Target};
use crate::error::{Error, Result};
use crate::sys::cgroup::Metrics;
use crate::sys::mount;
use crate::sys::reaper::Exit;
use crate::sys::stdio::StdioPaths;

fn exec_agent_id(exec_id: &str) -> String {
    format!("exec:{exec_id}")
}

pub struct VmInstance {
    pub shared: Arc<Shared>,
    pub bundle: PathBuf,
    pub state_dir: PathBuf,
    /// QEMU's host cgroup, removed at delete.
    pub cgroup: Option<super::cgroup::QemuCgroup>,
    pub rootfs_mounted: bool,
    /// The init's process and our stdio ends, until `start`.
    pub pending: Mutex<Option<(proto::Process, HostEnds)>>,
    pub paused: AtomicBool,
    pub init_guest_pid: AtomicU32,
    pub last_pids: Mutex<Vec<u32>>,
    pub oom_rx: Mutex<Option<mpsc::UnboundedReceiver<()>>>,
}

impl VmInstance {
    fn init_state(&self) -> InitState {
        *self.shared.state.borrow()
    }

    fn signal_qemu(&self, sig: libc::c_int) -> Result<()> {
        // SAFETY: kill(2) on the QEMU we started and still hold (the Vm reaps it only on shutdown).
        let rc = unsafe { libc::kill(self.shared.qemu_pid as i32, sig) };
        if rc != 0 {
            return Err(Error::io(
                format!("signal QEMU {}", self.shared.qemu_pid),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    async fn signal_one(&self, agent_id: &str, signal: u32) -> Result<()> {
        if self.shared.vm.exit_status(agent_id).is_some() {
            return Err(Error::NotFound("process already finished".into()));
        }
        self.shared
            .vm
            .signal(agent_id, signal as i32)
            .await
            .map_err(|e| errors::map(e).context(format!("signal {signal}")))
    }
}

#[async_trait]
impl Instance for VmInstance {
    async fn start(&self) -> Result<Option<u32>> {
        let Some((process, ends)) = lock(&self.pending).take() else {
            return Err(Error::precondition("the container was already started"));
        };
        if self.init_state() != InitState::Created {
            return Err(Error::precondition("the container's process was killed"));
        }
        match self.shared.vm.run(INIT_ID, &process).await {
            Ok(io) => {
                self.init_guest_pid.store(io.pid, Ordering::SeqCst);
                io::connect(ends, io, self.shared.vm.clone());
                self.shared.state.send_replace(InitState::Running);
                Ok(None)
            }
            Err(e) => {
                *lock(&self.pending) = Some((process, ends));
                Err(errors::map(e).context("start the container process in the VM"))
            }
        }
    }

    async fn exec(&self, exec_id: &str, process: &Process, stdio: &StdioPaths) -> Result<Spawned> {
        if self.paused.load(Ordering::SeqCst) {
            return Err(Error::precondition("cannot exec in a paused container"));
        }
        let p = spec::process(process, stdio.terminal)?;
        let (shim_io, ends) = io::make(stdio, p.console_size)?;
        let aid = exec_agent_id(exec_id);
        let vm = self.shared.vm.clone();
        let pio = vm
            .exec(&aid, &p)
            .await
            .map_err(|e| errors::map(e).context(format!("exec {exec_id}")))?;
        let pid = pio.pid;
        lock(&self.shared.execs).insert(aid.clone(), pid);
        io::connect(ends, pio, vm.clone());
        let id = self.shared.id.clone();
        let exit = Box::pin(async move {
            match vm.wait(&aid).await {
                Ok(c) => Exit::new(u32::try_from(c).unwrap_or(255)),
                Err(e) => {
                    log::debug!("{id}: exec {aid}: VM gone ({e}); reporting 137");
                    Exit::new(137)
                }
            }
        });
        Ok(Spawned {
            pid,
            io: shim_io,
            exit,
        })
    }

    async fn kill(&self, target: Target<'_>, signal: u32, all: bool) -> Result<()> {
        const KILL_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
        if signal == 0 || signal > 64 {
            if signal == 0 {
                return Ok(());
            }
            return Err(Error::invalid(format!("invalid signal {signal}")));
        }
        let agent_id = match target {
            Target::Init => {
                if self.init_state() == InitState::Created {
                    // Not running user code yet: the process "dies" of the signal.
                    self.shared
                        .state
                        .send_replace(InitState::Aborted(128 + signal));
                    return Ok(());
                }
                INIT_ID.to_string()
            }
            Target::Exec { id, .. } => exec_agent_id(id),
        };
        let paused = self.paused.load(Ordering::SeqCst);
        if paused {
            // Like a frozen cgroup: the signal is queued, delivered at resume.
            self.signal_qemu(libc::SIGCONT)?;
        }
        let kill_init = signal == libc::SIGKILL as u32 && matches!(target, Target::Init);
        let mut res = if kill_init {
            // SIGKILL of the init ends the container, guest or not: when the agent cannot
            // answer (its connection held back by unread output), end the VM itself.
            match tokio::time::timeout(KILL_WAIT, self.signal_one(&agent_id, signal)).await {
                Ok(r) => r,
                Err(_) => {
                    log::warn!(
                        "the VM's agent did not take SIGKILL within {KILL_WAIT:?}: killing QEMU"
                    );
                    self.signal_qemu(libc::SIGKILL)
                }
            }
        } else {
            self.signal_one(&agent_id, signal).await
        };
        if all && matches!(target, Target::Init) {
            let ids: Vec<String> = lock(&self.shared.execs).keys().cloned().collect();
            for id in ids {
                let _ = self.signal_one(&id, signal).await;
            }
            if matches!(res, Err(Error::NotFound(_))) {
                res = Ok(());
            }
        }
        if paused {
            self.signal_qemu(libc::SIGSTOP)?;
        }
        res
    }

    async fn pause(&self) -> Result<()> {
        self.signal_qemu(libc::SIGSTOP)?;
        self.paused.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn resume(&self) -> Result<()> {
        self.signal_qemu(libc::SIGCONT)?;
        self.paused.store(false, Ordering::SeqCst);
        Ok(())
    }

    async fn pids(&self) -> Result<Vec<u32>> {
        const PIDS_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
        let mut out = vec![self.shared.qemu_pid];
        if self.paused.load(Ordering::SeqCst) {
            out.extend(lock(&self.last_pids).iter().copied());
            return Ok(out);
        }
        // The agent shares one port with the guest's output: while nobody reads a flooding
        // process's stdout, the connection is held back (bounded memory) and the guest cannot
        // answer. `ps` then lists the host's QEMU and the guest pids last seen, at once.
        let procs = match tokio::time::timeout(PIDS_WAIT, self.shared.vm.pids()).await {
            Ok(r) => r.map_err(|e| errors::map(e).context("list the VM's processes"))?,
            Err(_) => {
                log::warn!(
                    "the VM's agent did not answer within {PIDS_WAIT:?} (its output is not being \
                     read?): listing the host process and the last known guest pids"
                );
                out.extend(lock(&self.last_pids).iter().copied());
                return Ok(out);
            }
        };
        let init = self.init_guest_pid.load(Ordering::SeqCst);
        let guest: Vec<u32> = procs
            .into_iter()
            .map(|p| p.pid)
            .filter(|p| *p != init)
            .collect();
        *lock(&self.last_pids) = guest.clone();
        out.extend(guest);
        Ok(out)
    }

    async fn stats(&self) -> Result<Metrics> {
        let host = metrics::host_figures(self.shared.qemu_pid);
        if self.paused.load(Ordering::SeqCst) {
            return Ok(metrics::figures(None, host));
        }
        let s = self
            .shared
            .vm
            .stats()
            .await
            .map_err(|e| errors::map(e).context("read the VM's figures"))?;
        Ok(metrics::figures(Some(&s), host))
    }

    async fn update(&self, resources: &LinuxResources) -> Result<()> {
        let fields = spec::unappliable(resources);
        if fields.is_empty() {
            return Ok(());
        }
        Err(Error::precondition(format!(
            "the vm backend cannot change {} of a running VM (no memory or CPU hotplug); \
             recreate the container with the new limits",
            fields.join(", ")
        )))
    }

    async fn delete(&self, _force: bool) -> Result<()> {
        let sh = &self.shared;
        sh.deleting.store(true, Ordering::SeqCst);
        if self.init_state() == InitState::Created {
            sh.state.send_replace(InitState::Aborted(137));
        }
        if self.paused.swap(false, Ordering::SeqCst) {
            let _ = self.signal_qemu(libc::SIGCONT);
        }
        match tokio::time::timeout(Duration::from_secs(25), sh.vm.shutdown()).await {
            Ok(Ok(())) => {}
            // QEMU's exit may already have been collected by the shim's reaper.
            Ok(Err(e)) => log::debug!("{}: VM shutdown: {e}", sh.id),
            Err(_) => log::warn!("{}: VM shutdown timed out; killing QEMU", sh.id),
        }
        state::kill_qemu(sh.qemu_pid, &self.state_dir).await;
        state::remove_dir(&self.state_dir)?;
        if let Some(cg) = &self.cgroup {
            // QEMU may still be a zombie for a moment: its cgroup empties once it is reaped.
            for _ in 0..50 {
                if cg.dirs.iter().all(|d| {
                    std::fs::read_to_string(d.join("cgroup.procs"))
                        .map(|t| t.trim().is_empty())
                        .unwrap_or(true)
                }) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            cg.remove();
        }
        if self.rootfs_mounted {
            mount::unmount_all(&self.bundle.join("rootfs"))?;
        }
        Ok(())
    }

    fn oom_events(&self) -> Option<mpsc::UnboundedReceiver<()>> {
        lock(&self.oom_rx).take()
    }
}
