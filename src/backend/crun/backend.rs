//! The [`Backend`] side of crun/runc: check, create (runtime root, rootfs, `create`) and
//! crash cleanup.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::cli::Runtime;
use super::instance::{EarlyDelete, OciInstance};
use super::stdio::{read_pid, spawn_with_stdio};
use crate::backend::record::OciRecord;
use crate::backend::{Backend, BackendState, BundleRecord, CreateRequest, Instance, Spawned};
use crate::config::{BackendKind, Config};
use crate::error::{Error, Result};
use crate::sys::cgroup::Cgroup;
use crate::sys::{command, mount, reaper};

pub struct OciBackend {
    kind: BackendKind,
}

impl OciBackend {
    pub fn new(kind: BackendKind) -> Self {
        OciBackend { kind }
    }

    fn settings<'c>(&self, config: &'c Config) -> &'c crate::config::OciRuntimeConfig {
        match self.kind {
            BackendKind::Runc => &config.runc,
            _ => &config.crun,
        }
    }

    fn runtime(&self, rec: &OciRecord, bundle: &Path) -> Runtime {
        Runtime {
            binary: rec.binary.clone(),
            root: rec.root.clone(),
            log: bundle.join("log.json").into_os_string(),
            sealed: self.kind == BackendKind::Crun,
        }
    }
}

#[async_trait]
impl Backend for OciBackend {
    fn kind(&self) -> BackendKind {
        self.kind
    }

    fn usable(&self, config: &Config) -> std::result::Result<(), String> {
        command::which(&self.settings(config).binary).map(|_| ())
    }

    async fn check(&self, config: &Config) -> crate::check::Report {
        let mut r = crate::check::Report::default();
        match command::which(&self.settings(config).binary) {
            Ok(p) => {
                let bin = p.display().to_string();
                match crate::check::version_of(&bin, "--version").await {
                    Ok(v) => r.fact("binary", format!("{bin} ({v})")),
                    Err(e) => r.problem(format!("{bin} does not run: {e}")),
                }
            }
            Err(e) => r.problem(e),
        }
        r.done()
    }

    async fn create(&self, req: CreateRequest) -> Result<(Arc<dyn Instance>, Spawned)> {
        let settings = self.settings(&req.config);
        let binary = req
            .options
            .binary_name
            .clone()
            .unwrap_or_else(|| settings.binary.clone());
        // Found once: no PATH search on every runtime call.
        let binary = command::which(&binary)
            .map(|p| p.display().to_string())
            .unwrap_or(binary);
        // Like the runc shim: an options Root gets the namespace appended.
        let root = req
            .options
            .root
            .as_ref()
            .map(|r| Path::new(r).join(&req.namespace).display().to_string())
            .unwrap_or_else(|| {
                if settings.root.is_empty() {
                    format!("/run/pvelxc/{}/{}", self.kind, req.namespace)
                } else {
                    settings.root.clone()
                }
            });
        std::fs::create_dir_all(&root)
            .map_err(|e| Error::io(format!("create runtime root {root}"), e))?;

        let oci = OciRecord { binary, root };
        req.record.set(BackendState::Oci(oci.clone()))?;
        let rt = self.runtime(&oci, &req.bundle);

        let rootfs = req.bundle.join("rootfs");
        mount::mount_rootfs(&req.rootfs, &rootfs).await?;
        let rootfs_mounted = !req.rootfs.is_empty();

        let result = async {
            let pid_file = req.bundle.join("init.pid");
            let mut args: Vec<std::ffi::OsString> = vec![
                "create".into(),
                "--bundle".into(),
                req.bundle.clone().into_os_string(),
                "--pid-file".into(),
                pid_file.clone().into_os_string(),
            ];
            let (io, pid) =
                spawn_with_stdio(&rt, &mut args, &req.id, &req.stdio, &req.bundle, "init").await?;
            let pid = match pid {
                Some(p) => p,
                None => read_pid(&pid_file)?,
            };
            Ok::<_, Error>((io, pid))
        }
        .await;
        let (io, pid) = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = rt.run(["delete", "--force", req.id.as_str()]).await;
                if rootfs_mounted {
                    let _ = mount::unmount_all(&rootfs);
                }
                return Err(e);
            }
        };
        let cgroup = Cgroup::of_pid(pid).ok();
        let (oom, flush) = match cgroup.as_ref().map(Cgroup::watch_oom_flushable) {
            Some(Ok((rx, flush))) => (Some(rx), flush),
            Some(Err(e)) => {
                log::warn!("{}: OOM events unavailable: {e}", req.id);
                (None, None)
            }
            None => (None, None),
        };
        // Nothing of the container runs once its init is gone (with its own pid namespace;
        // without, after `kill --all`): the runtime's `delete` can start then instead of when
        // containerd asks. Not with hooks (they run at start and delete: keep crun's own
        // timing), nor where the kernel does not count OOM kills (one not yet reported could
        // not be told once the cgroup is gone).
        let plain = !has_hooks(&req.spec);
        let early = (plain && (flush.is_some() || cgroup.is_none())).then(EarlyDelete::default);
        let exit = on_exit(
            reaper::watch(pid as i32),
            rt.clone(),
            req.id.clone(),
            !has_pid_namespace(&req.spec),
            flush,
            early.clone(),
        );
        let inst = OciInstance {
            id: req.id.clone(),
            bundle: req.bundle.clone(),
            rt,
            pid,
            cgroup,
            oom: Mutex::new(oom),
            rootfs_mounted,
            fifo_start: plain && self.kind == BackendKind::Crun,
            early,
        };
        Ok((Arc::new(inst), Spawned { pid, io, exit }))
    }

    async fn cleanup(&self, record: &BundleRecord, _config: &Config) -> Result<()> {
        let bundle = std::env::current_dir().map_err(|e| Error::io("cwd", e))?;
        let oci = match record.backend_state() {
            BackendState::Oci(o) => o,
            _ => OciRecord::default(),
        };
        let rt = self.runtime(&oci, &bundle);
        if !rt.binary.is_empty() {
            match rt.run(["delete", "--force", record.id.as_str()]).await {
                Ok(_) | Err(Error::NotFound(_)) => {}
                Err(e) => log::warn!("cleanup {}: {e}", record.id),
            }
        }
        mount::unmount_all(&bundle.join("rootfs"))
    }
}

/// What happens when the init has exited: end what it left without a pid namespace, report
/// OOM kills not seen yet, and begin the early delete.
fn on_exit(
    exit: tokio::sync::oneshot::Receiver<reaper::Exit>,
    rt: Runtime,
    id: String,
    host_pid: bool,
    flush: Option<crate::sys::cgroup::OomFlush>,
    early: Option<EarlyDelete>,
) -> crate::backend::ExitFuture {
    Box::pin(async move {
        let code = exit.await.unwrap_or_else(|_| reaper::Exit::new(255));
        if host_pid {
            // Without a pid namespace the init's children outlive it: end them too.
            let _ = rt.run(["kill", "--all", id.as_str(), "9"]).await;
        }
        if let Some(f) = flush {
            f.flush();
        }
        if let Some(early) = early {
            early.begin(rt, id);
        }
        code
    })
}

/// Whether the spec has hooks of any kind.
fn has_hooks(spec: &oci_spec::runtime::Spec) -> bool {
    spec.hooks().as_ref().is_some_and(|h| {
        let n = |v: &Option<Vec<oci_spec::runtime::Hook>>| v.as_ref().map_or(0, Vec::len);
        #[allow(deprecated)]
        let prestart = n(h.prestart());
        prestart
            + n(h.create_runtime())
            + n(h.create_container())
            + n(h.start_container())
            + n(h.poststart())
            + n(h.poststop())
            > 0
    })
}

fn has_pid_namespace(spec: &oci_spec::runtime::Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .map(|ns| {
            ns.iter().any(|n| {
                n.typ() == oci_spec::runtime::LinuxNamespaceType::Pid && n.path().is_none()
            })
        })
        .unwrap_or(false)
}
