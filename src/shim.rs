//! The shim process's lifecycle: `start` (spawn or join a shim server), serve, `delete`.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::asynchronous::{publisher::RemotePublisher, ExitSignal, Shim};
use containerd_shim::{Config as ShimConfig, DeleteResponse, Flags, StartOpts};

use crate::backend::{registry, BundleRecord};
use crate::config::Config;
use crate::options;
use crate::service::{Events, Service};

/// Containers carrying this annotation with the same value share one shim (a pod).
pub const GROUP_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

pub struct PvelxcShim {
    namespace: String,
    bundle: PathBuf,
    exit: Arc<ExitSignal>,
}

#[async_trait]
impl Shim for PvelxcShim {
    type T = Service;

    async fn new(_runtime_id: &str, flags: &Flags, config: &mut ShimConfig) -> Self {
        // The shim reaps its own children (see sys::reaper).
        config.no_reaper = true;
        let bundle = if flags.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            PathBuf::from(&flags.bundle)
        };
        PvelxcShim {
            namespace: flags.namespace.clone(),
            bundle,
            exit: Arc::new(ExitSignal::default()),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let mut stdin = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut stdin);
        let ropts = options::decode_bytes(&stdin)?;
        let grouping = group_of(&self.bundle).unwrap_or_else(|| opts.id.clone());
        let address = containerd_shim::socket_address(&opts.address, &opts.namespace, &grouping);
        let path = address.trim_start_matches("unix://").to_string();
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            // A shim for this group is already serving: join it.
            std::fs::write(self.bundle.join("address"), &address)
                .map_err(|e| containerd_shim::Error::Other(format!("write address: {e}")))?;
            return Ok(address);
        }
        let _ = std::fs::remove_file(&path);
        let exe = std::env::current_exe()
            .map_err(|e| containerd_shim::Error::Other(format!("current_exe: {e}")))?;
        let mut cmd = Command::new(exe);
        cmd.current_dir(&self.bundle)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .args([
                "-namespace",
                &opts.namespace,
                "-id",
                &opts.id,
                "-address",
                &opts.address,
                "-socket",
                &address,
            ]);
        if opts.debug {
            cmd.arg("-debug");
        }
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| containerd_shim::Error::Other(format!("spawn shim: {e}")))?;
        let pid = child.id();
        if let Some(cg) = ropts.shim_cgroup.as_deref() {
            if let Err(e) = containerd_shim::cgroup::add_task_to_cgroup(cg, pid) {
                log::warn!("cannot move shim into cgroup {cg}: {e}");
            }
        }
        if let Err(e) = containerd_shim::cgroup::adjust_oom_score(pid) {
            // Hosts without CAP_SYS_RESOURCE (nested, unprivileged) refuse this: not fatal.
            log::warn!("cannot adjust the shim's oom_score_adj: {e}");
        }
        // The server closes its stdout once it listens.
        if let Some(mut out) = child.stdout.take() {
            let mut sink = Vec::new();
            let _ = out.read_to_end(&mut sink);
        }
        std::fs::write(self.bundle.join("address"), &address)
            .map_err(|e| containerd_shim::Error::Other(format!("write address: {e}")))?;
        Ok(address)
    }

    async fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let record = BundleRecord::load(&self.bundle)?;
        if let Some(record) = record.filter(|r| !r.deleted) {
            // The service did not finish a Delete: undo what the container left behind.
            crate::sys::reaper::start()
                .map_err(|e| containerd_shim::Error::Other(format!("reaper: {e}")))?;
            if let Some(kind) = record.backend {
                let cfg = Config::load(record.config_path.as_deref())
                    .map(|l| l.config)
                    .unwrap_or_default();
                registry::get(kind)
                    .cleanup(&record, &cfg)
                    .await
                    .map_err(containerd_shim::Error::from)?;
            }
        }
        remove_dead_socket(&self.bundle);
        let mut r = DeleteResponse::new();
        r.exit_status = 128 + libc::SIGKILL as u32;
        r.exited_at = crate::service::timestamp_now();
        Ok(r)
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> Service {
        if let Err(e) = crate::sys::reaper::start() {
            log::error!("cannot watch SIGCHLD: {e}");
        }
        // Events go through our own ordered forwarder (see service::events).
        let address = publisher.address.clone();
        drop(publisher);
        Service::new(
            self.namespace.clone(),
            Arc::new(Events::new(address, self.namespace.clone())),
            self.exit.clone(),
        )
    }
}

/// After a shim died (containerd runs `delete` only then, or when a start failed), its socket
/// file is left behind: remove it unless a shim still answers on it (another container of the
/// pod started a new one). Only a socket named like containerd's (64 hex digits) is touched.
fn remove_dead_socket(bundle: &std::path::Path) {
    let Ok(address) = std::fs::read_to_string(bundle.join("address")) else {
        return;
    };
    let path = std::path::Path::new(address.trim().trim_start_matches("unix://"));
    let named_like_ours = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()));
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_socket()
    });
    if named_like_ours && is_socket && std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
}

/// The pod a container belongs to, from its config.json annotations.
fn group_of(bundle: &std::path::Path) -> Option<String> {
    let text = std::fs::read(bundle.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    let g = v.get("annotations")?.get(GROUP_ANNOTATION)?.as_str()?;
    crate::service::valid_id(g).then(|| g.to_string())
}
