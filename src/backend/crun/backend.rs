//! The [`Backend`] side of crun/runc: check, create (runtime root, rootfs, `create`) and
//! crash cleanup.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::cli::Runtime;
use super::instance::OciInstance;
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
}

fn runtime(rec: &OciRecord, bundle: &Path) -> Runtime {
    Runtime {
        binary: rec.binary.clone(),
        root: rec.root.clone(),
        log: bundle.join("log.json").into_os_string(),
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
        let rt = runtime(&oci, &req.bundle);

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
        let exit = reaper::watch(pid as i32);
        let host_pid = !has_pid_namespace(&req.spec);
        let exit_rt = rt.clone();
        let exit_id = req.id.clone();
        let exit: crate::backend::ExitFuture = Box::pin(async move {
            let code = exit.await.unwrap_or_else(|_| reaper::Exit::new(255));
            if host_pid {
                // Without a pid namespace the init's children outlive it: end them too.
                let _ = exit_rt.run(["kill", "--all", exit_id.as_str(), "9"]).await;
            }
            code
        });
        let cgroup = Cgroup::of_pid(pid).ok();
        let oom = cgroup.as_ref().and_then(|c| match c.watch_oom() {
            Ok(rx) => Some(rx),
            Err(e) => {
                log::warn!("{}: OOM events unavailable: {e}", req.id);
                None
            }
        });
        let inst = OciInstance {
            id: req.id.clone(),
            bundle: req.bundle.clone(),
            rt,
            pid,
            cgroup,
            oom: Mutex::new(oom),
            rootfs_mounted,
        };
        Ok((Arc::new(inst), Spawned { pid, io, exit }))
    }

    async fn cleanup(&self, record: &BundleRecord, _config: &Config) -> Result<()> {
        let bundle = std::env::current_dir().map_err(|e| Error::io("cwd", e))?;
        let oci = match record.backend_state() {
            BackendState::Oci(o) => o,
            _ => OciRecord::default(),
        };
        let rt = runtime(&oci, &bundle);
        if !rt.binary.is_empty() {
            match rt.run(["delete", "--force", record.id.as_str()]).await {
                Ok(_) | Err(Error::NotFound(_)) => {}
                Err(e) => log::warn!("cleanup {}: {e}", record.id),
            }
        }
        mount::unmount_all(&bundle.join("rootfs"))
    }
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
