//! One crun/runc container: the [`Instance`] operations, each a runtime command (or a
//! signal to an exec'd process).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use oci_spec::runtime::{LinuxResources, Process};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::cli::Runtime;
use super::fifo;
use super::stdio::{read_pid, spawn_with_stdio};
use crate::backend::{Instance, Spawned, Target};
use crate::error::{Error, Result};
use crate::sys::cgroup::{Cgroup, Metrics};
use crate::sys::mount;
use crate::sys::reaper;
use crate::sys::stdio::StdioPaths;

pub struct OciInstance {
    pub(super) id: String,
    pub(super) bundle: PathBuf,
    pub(super) rt: Runtime,
    pub(super) pid: u32,
    pub(super) cgroup: Option<Cgroup>,
    pub(super) oom: Mutex<Option<mpsc::UnboundedReceiver<()>>>,
    pub(super) rootfs_mounted: bool,
    /// Start by writing the exec fifo (crun, no hooks; see `fifo.rs`).
    pub(super) fifo_start: bool,
    /// The runtime's `delete`, begun when the init exited (None: at Delete, as usual).
    pub(super) early: Option<EarlyDelete>,
}

/// The runtime's `delete` run as soon as the init has exited, so that containerd's Delete
/// only waits for what is left of it. Its outcome: true once the runtime deleted the
/// container.
#[derive(Clone, Default)]
pub struct EarlyDelete(Arc<Mutex<Option<JoinHandle<bool>>>>);

impl EarlyDelete {
    pub(super) fn begin(&self, rt: Runtime, id: String) {
        let task = tokio::spawn(async move {
            match rt.run(["delete", id.as_str()]).await {
                Ok(_) => true,
                Err(e) => {
                    log::debug!("{id}: early delete: {e}");
                    false
                }
            }
        });
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    }

    /// Whether the init has exited (the early delete began).
    fn begun(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Wait for the early delete: true when it deleted the container.
    async fn finish(&self) -> bool {
        let task = self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
        match task {
            Some(t) => t.await.unwrap_or(false),
            None => false,
        }
    }
}

impl OciInstance {
    /// The init has exited and the container is (being) deleted: the runtime knows it no
    /// more, and its pid may already belong to another process.
    fn gone(&self) -> bool {
        self.early.as_ref().is_some_and(EarlyDelete::begun)
    }
}

#[async_trait]
impl Instance for OciInstance {
    async fn start(&self) -> Result<Option<u32>> {
        if self.fifo_start {
            let before = fifo::program_of(self.pid);
            match fifo::release(std::path::Path::new(&self.rt.root), &self.id) {
                Ok(()) => {
                    fifo::wait_exec(self.pid, before).await;
                    return Ok(None);
                }
                Err(fifo::NotUsable(why)) => {
                    log::debug!("{}: {why}; running `{} start`", self.id, self.rt.binary)
                }
            }
        }
        self.rt.run(["start", self.id.as_str()]).await.map(|_| None)
    }

    async fn exec(&self, exec_id: &str, process: &Process, stdio: &StdioPaths) -> Result<Spawned> {
        let spec_file = self
            .bundle
            .join(format!("exec-{}.json", safe_name(exec_id)));
        let pid_file = self.bundle.join(format!("exec-{}.pid", safe_name(exec_id)));
        let json = serde_json::to_vec(process)?;
        std::fs::write(&spec_file, json)
            .map_err(|e| Error::io(format!("write {}", spec_file.display()), e))?;
        let mut args: Vec<std::ffi::OsString> = vec![
            "exec".into(),
            "--process".into(),
            spec_file.clone().into_os_string(),
            "--detach".into(),
            "--pid-file".into(),
            pid_file.clone().into_os_string(),
        ];
        let res = spawn_with_stdio(
            &self.rt,
            &mut args,
            &self.id,
            stdio,
            &self.bundle,
            &format!("exec-{exec_id}"),
        )
        .await;
        let _ = std::fs::remove_file(&spec_file);
        let (io, _) = res?;
        let pid = read_pid(&pid_file)?;
        let _ = std::fs::remove_file(&pid_file);
        let exit = reaper::watch(pid as i32);
        Ok(Spawned {
            pid,
            io,
            exit: Box::pin(async move { exit.await.unwrap_or_else(|_| reaper::Exit::new(255)) }),
        })
    }

    async fn kill(&self, target: Target<'_>, signal: u32, all: bool) -> Result<()> {
        match target {
            Target::Init if self.gone() => Err(Error::NotFound("process already finished".into())),
            Target::Init => {
                let sig = signal.to_string();
                let mut args = vec!["kill"];
                if all {
                    args.push("--all");
                }
                args.push(self.id.as_str());
                args.push(sig.as_str());
                match self.rt.run(args).await {
                    Ok(_) => Ok(()),
                    Err(Error::NotFound(m)) => {
                        // The runtime lost the container (its state was deleted behind our
                        // back) while its init still runs: do not leave an unmanageable
                        // process behind.
                        let pid = nix::unistd::Pid::from_raw(self.pid as i32);
                        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).is_ok() {
                            log::warn!(
                                "{}: runtime lost the container; killed init {}",
                                self.id,
                                self.pid
                            );
                        }
                        Err(Error::NotFound(m))
                    }
                    Err(e) => Err(e),
                }
            }
            Target::Exec { pid, .. } => {
                let sig = nix::sys::signal::Signal::try_from(signal as i32)
                    .map_err(|_| Error::invalid(format!("invalid signal {signal}")))?;
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).map_err(|e| {
                    if e == nix::errno::Errno::ESRCH {
                        Error::NotFound("process already finished".into())
                    } else {
                        Error::from(e)
                    }
                })
            }
        }
    }

    async fn pause(&self) -> Result<()> {
        self.running()?;
        self.rt.run(["pause", self.id.as_str()]).await.map(|_| ())
    }

    async fn resume(&self) -> Result<()> {
        self.running()?;
        self.rt.run(["resume", self.id.as_str()]).await.map(|_| ())
    }

    async fn pids(&self) -> Result<Vec<u32>> {
        if self.gone() {
            return Ok(Vec::new());
        }
        let out = self
            .rt
            .run(["ps", "--format", "json", self.id.as_str()])
            .await?;
        let pids: Vec<u32> = serde_json::from_str(out.stdout.trim()).map_err(|e| {
            Error::internal(format!("{} ps: unexpected output: {e}", self.rt.binary))
        })?;
        Ok(pids)
    }

    async fn stats(&self) -> Result<Metrics> {
        let cg = match &self.cgroup {
            Some(c) => c.clone(),
            None => Cgroup::of_pid(self.pid)?,
        };
        Ok(cg.metrics())
    }

    async fn update(&self, resources: &LinuxResources) -> Result<()> {
        self.running()?;
        let file = self.bundle.join("update.json");
        std::fs::write(&file, serde_json::to_vec(resources)?)
            .map_err(|e| Error::io("write update.json", e))?;
        let res = self
            .rt
            .run([
                std::ffi::OsString::from("update"),
                "--resources".into(),
                file.clone().into_os_string(),
                self.id.clone().into(),
            ])
            .await;
        let _ = std::fs::remove_file(&file);
        res.map(|_| ())
    }

    async fn delete(&self, force: bool) -> Result<()> {
        let deleted = match &self.early {
            Some(early) if !force => early.finish().await,
            _ => false,
        };
        if !deleted {
            let mut args = vec!["delete"];
            if force {
                args.push("--force");
            }
            args.push(self.id.as_str());
            match self.rt.run(args).await {
                Ok(_) | Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        if self.rootfs_mounted {
            mount::unmount_all(&self.bundle.join("rootfs"))?;
        }
        Ok(())
    }

    fn oom_events(&self) -> Option<mpsc::UnboundedReceiver<()>> {
        self.oom.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl OciInstance {
    fn running(&self) -> Result<()> {
        if self.gone() {
            return Err(Error::precondition(format!(
                "container {} has exited",
                self.id
            )));
        }
        Ok(())
    }
}

/// Exec ids come from clients: keep file names tame.
fn safe_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}
