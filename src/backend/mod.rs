//! The narrow interface between the task service and the places a container can run.
//!
//! A [`Backend`] makes [`Instance`]s (one per container) and cleans up after a crashed shim.
//! Everything protocol-shaped stays in `service/`; backends see plain Rust types.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use oci_spec::runtime::{LinuxResources, Process, Spec};
use tokio::sync::mpsc;

use crate::config::{BackendKind, Config};
use crate::error::Result;
use crate::options::RuntimeOptions;
use crate::sys::cgroup::Metrics;
use crate::sys::reaper::Exit;
use crate::sys::stdio::{ProcessIo, StdioPaths};

pub mod binds;
pub mod crun;
pub mod executable;
pub mod pct;
pub mod record;
pub mod registry;
pub mod vm;

pub use record::{BackendState, BundleRecord, Recorder};

/// One rootfs mount as containerd hands it over in CreateTask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsMount {
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

/// Everything a backend needs to create a container.
pub struct CreateRequest {
    pub namespace: String,
    pub id: String,
    pub bundle: PathBuf,
    pub spec: Spec,
    pub rootfs: Vec<RootfsMount>,
    pub stdio: StdioPaths,
    pub options: RuntimeOptions,
    pub config: Arc<Config>,
    /// Where the backend records what a crash would leave behind (`record.rs`).
    pub record: Arc<Recorder>,
}

/// Resolves once, when the process has ended.
pub type ExitFuture = Pin<Box<dyn std::future::Future<Output = Exit> + Send>>;

/// A process the backend has made: its host pid, the shim's ends of its stdio, and its exit.
pub struct Spawned {
    pub pid: u32,
    pub io: ProcessIo,
    pub exit: ExitFuture,
}

/// Which process a call is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    Init,
    Exec { id: &'a str, pid: u32 },
}

#[async_trait]
pub trait Backend: Send + Sync {
    fn kind(&self) -> BackendKind;

    /// Whether this backend can run on this host; Err carries a user-facing reason.
    fn usable(&self, config: &Config) -> std::result::Result<(), String>;

    /// Whether this backend takes a container with these annotations at all (e.g. the pct
    /// backend does not run Kubernetes pods). Checked before `usable`, whatever the host.
    fn admit(&self, _annotations: &HashMap<String, String>) -> Result<()> {
        Ok(())
    }

    /// What `containerd-shim-pvelxc-v2 check` says about this backend here (read-only).
    async fn check(&self, config: &Config) -> crate::check::Report {
        let mut r = crate::check::Report::default();
        if let Err(why) = self.usable(config) {
            r.problem(why);
        }
        r.done()
    }

    /// Create the container with its init process not yet running user code.
    async fn create(&self, req: CreateRequest) -> Result<(Arc<dyn Instance>, Spawned)>;

    /// Remove whatever a container left behind when its shim died (the `delete` action, in a
    /// fresh process). Idempotent and best-effort: it must succeed when nothing is left.
    async fn cleanup(&self, record: &BundleRecord, config: &Config) -> Result<()>;
}

/// One container on a backend.
#[async_trait]
pub trait Instance: Send + Sync {
    /// Let the init process run the user's program. Some(pid) when the backend learned a
    /// better host pid for the task than the one `create` returned (e.g. the user's process
    /// below an init of ours); None keeps the create-time pid.
    async fn start(&self) -> Result<Option<u32>>;
    /// Create and start an additional process.
    async fn exec(&self, exec_id: &str, process: &Process, stdio: &StdioPaths) -> Result<Spawned>;
    async fn kill(&self, target: Target<'_>, signal: u32, all: bool) -> Result<()>;
    async fn pause(&self) -> Result<()>;
    async fn resume(&self) -> Result<()>;
    /// Host pids of every process in the container.
    async fn pids(&self) -> Result<Vec<u32>>;
    /// Metrics of the container (cgroup v1/v2 shaped; the service encodes them).
    async fn stats(&self) -> Result<Metrics>;
    async fn update(&self, resources: &LinuxResources) -> Result<()>;
    /// Tear the container down; its init has exited (or `force`).
    async fn delete(&self, force: bool) -> Result<()>;
    /// OOM kills in the container, one message each; taken once by the service.
    fn oom_events(&self) -> Option<mpsc::UnboundedReceiver<()>>;
}
