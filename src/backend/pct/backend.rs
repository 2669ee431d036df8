//! Create (VMID, template, `pct create`, D, `pct start`, connect) and crash cleanup.
//! pct calls per container lifecycle: create, start, destroy (+ set for Update).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::cmd::{CreateArgs, PctCommand};
use super::ctcg::CtCgroup;
use super::instance::PctInstance;
use super::output::PctError;
use super::runner::Pct;
use super::vmid::{self, Allocator, RetryPolicy, Vmid, VmidRange};
use super::{ctdir, ctl, spec, template};
use crate::backend::{Backend, BundleRecord, CreateRequest, Instance, Spawned};
use crate::config::{BackendKind, Config, PctConfig};
use crate::error::{Error, Result};
use crate::sys::cgroup::Cgroup;
use crate::sys::reaper;

pub const KEY_VMID: &str = "vmid";
pub const KEY_DIR: &str = "dir";
/// Reservations outlive the CT's creation: released when it is destroyed.
const RESERVATION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Stateless: everything per container lives in its [`PctInstance`] and bundle record.
#[derive(Default)]
pub struct PctBackend {
    _private: (),
}

pub fn allocator(cfg: &PctConfig) -> Result<Allocator> {
    let range = VmidRange::new(cfg.vmid_min, cfg.vmid_max)
        .map_err(|e| Error::invalid(format!("[pct] vmid_min/vmid_max: {e}")))?;
    let dir = Path::new(&cfg.state_dir);
    Ok(
        Allocator::new(dir.join("vmid.lock"), dir.join("vmid.reservations"), range)
            .with_ttl(RESERVATION_TTL),
    )
}

/// VMIDs that must not be handed out: guests with a config on this node and CTs whose
/// per-container directory still exists.
fn in_use(state_dir: &Path, excluded: &[Vmid]) -> Vec<Vmid> {
    let mut v = vmid::vmids_in_config_dirs(&["/etc/pve/lxc", "/etc/pve/qemu-server"]);
    if let Ok(rd) = std::fs::read_dir(state_dir) {
        v.extend(
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<Vmid>().ok())),
        );
    }
    v.extend_from_slice(excluded);
    v
}

async fn allocate(
    alloc: &Allocator,
    state_dir: &Path,
    owner: &str,
    excluded: &[Vmid],
) -> Result<Vmid> {
    let (a, d, o, x) = (
        alloc.clone(),
        state_dir.to_path_buf(),
        owner.to_string(),
        excluded.to_vec(),
    );
    tokio::task::spawn_blocking(move || a.allocate_with(&o, || Ok(in_use(&d, &x))))
        .await
        .map_err(|e| Error::internal(format!("VMID allocation: {e}")))?
        .map_err(|e| Error::Unavailable(format!("pct: {e}")))
}

fn release(alloc: &Allocator, vmid: Vmid) {
    if let Err(e) = alloc.release(vmid) {
        log::warn!("release VMID {vmid}: {e}");
    }
}

/// Destroy a CT and everything the shim made for it. Idempotent. A CT that is still
/// stopping (its init just exited, an admin's shutdown) can make `destroy --force` fail
/// transiently: retry a few times.
pub async fn destroy(pct: &Pct, alloc: &Allocator, vmid: Vmid, dir: &Path) -> Result<()> {
    let cmd = PctCommand::Destroy {
        vmid,
        purge: true,
        force: true,
    };
    let mut attempt = 0u64;
    loop {
        attempt += 1;
        match pct.run(&cmd).await? {
            Ok(_) => break,
            Err(f) if matches!(f.kind, PctError::NoSuchCt) => break,
            Err(f) if attempt < 6 && !matches!(f.kind, PctError::Protected) => {
                log::debug!("{} (attempt {attempt}); retrying", f.message);
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            Err(f) => return Err(f.into_error()),
        }
    }
    ctdir::remove(dir)?;
    release(alloc, vmid);
    Ok(())
}

/// Wait for the init to connect; fail early if it already gave up (exit file).
async fn connect(
    listener: std::os::unix::net::UnixListener,
    dir: &Path,
    timeout: Duration,
    stdio: &crate::sys::stdio::StdioPaths,
) -> Result<(Arc<ctl::Ctl>, crate::sys::stdio::ProcessIo)> {
    let gave_up = async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Some(r) = ctdir::read_exit(dir) {
                return r;
            }
        }
    };
    tokio::select! {
        r = ctl::accept(listener, timeout, stdio) => r,
        r = gave_up => Err(Error::internal(format!(
            "the CT's init exited before connecting: {}",
            r.error.unwrap_or_else(|| format!("exit code {}", r.exit_code))
        ))),
    }
}

#[async_trait]
impl Backend for PctBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Pct
    }

    fn usable(&self, config: &Config) -> std::result::Result<(), String> {
        crate::sys::command::which(&config.pct.pct)?;
        ctdir::find_init(&config.pct.init_path)?;
        Ok(())
    }

    fn admit(&self, annotations: &std::collections::HashMap<String, String>) -> Result<()> {
        spec::reject_pods(annotations)
    }

    async fn create(&self, req: CreateRequest) -> Result<(Arc<dyn Instance>, Spawned)> {
        let cfg = &req.config.pct;
        let init = ctdir::find_init(&cfg.init_path).map_err(Error::precondition)?;
        let mut process = req
            .spec
            .process()
            .clone()
            .ok_or_else(|| Error::invalid("the spec has no process"))?;
        process.set_terminal(Some(req.stdio.terminal));
        let pct = Pct::new(cfg);
        let state_dir = PathBuf::from(&cfg.state_dir);
        let owner = format!("{}/{}", req.namespace, req.id);

        // Leased (shared flock) until pct create has returned: GC never removes it meanwhile.
        let tpl = template::Packer {
            cfg,
            mounts: &req.rootfs,
            spec: &req.spec,
            bundle: &req.bundle,
            process: Some(&process),
        }
        .ensure()
        .await?;
        let ostemplate = tpl.path().display().to_string();

        let alloc = allocator(cfg)?;
        let policy = RetryPolicy::default();
        let mut excluded: Vec<Vmid> = Vec::new();
        let mut attempt = 0u32;
        let (vmid, dir, listener) = loop {
            attempt += 1;
            let vmid = allocate(&alloc, &state_dir, &owner, &excluded).await?;
            let mut record = BundleRecord::load(&req.bundle)?.unwrap_or_default();
            record.data.insert(KEY_VMID.into(), vmid.to_string());
            let d = ctdir::path(&state_dir, vmid);
            record.data.insert(KEY_DIR.into(), d.display().to_string());
            record.save(&req.bundle)?;
            let undo = |d: &Path| {
                let _ = ctdir::remove(d);
                release(&alloc, vmid);
            };
            let (d, listener) =
                match ctdir::prepare(&state_dir, vmid, cfg.unprivileged, &init, &process) {
                    Ok(v) => v,
                    Err(e) => {
                        undo(&d);
                        return Err(e);
                    }
                };
            let opts = match spec::ct_options(
                cfg,
                &req.namespace,
                &req.id,
                &req.spec,
                &d,
                &format!("{}/init", spec::CT_DIR),
            ) {
                Ok(o) => o,
                Err(e) => {
                    undo(&d);
                    return Err(e);
                }
            };
            let mut args = CreateArgs::new(vmid, ostemplate.clone());
            args.unprivileged = Some(cfg.unprivileged);
            args.options = opts;
            let res = match pct.run(&PctCommand::Create(Box::new(args))).await {
                Ok(r) => r,
                Err(e) => {
                    // Our own timeout: pct may have left a half-made CT.
                    let _ = destroy(&pct, &alloc, vmid, &d).await;
                    undo(&d);
                    return Err(e.context("pct create"));
                }
            };
            match res {
                Ok(_) => break (vmid, d, listener),
                Err(f) if policy.should_retry(&f.kind, attempt) => {
                    log::warn!("{owner}: {} (attempt {attempt}); retrying", f.message);
                    undo(&d);
                    if matches!(f.kind, PctError::AlreadyExists { .. }) {
                        excluded.push(vmid);
                    }
                    tokio::time::sleep(policy.delay(attempt)).await;
                }
                Err(f) => {
                    undo(&d);
                    return Err(f.into_error());
                }
            }
        };
        drop(tpl);
        log::info!("{owner}: CT {vmid} created from {ostemplate}");

        let started = async {
            pct.run_ok(&PctCommand::Start {
                vmid,
                skiplock: false,
            })
            .await?;
            connect(
                listener,
                &dir,
                pct.timeout.min(Duration::from_secs(60)),
                &req.stdio,
            )
            .await
        }
        .await;
        let (ctl, io) = match started {
            Ok(v) => v,
            Err(e) => {
                if let Err(e2) = destroy(&pct, &alloc, vmid, &dir).await {
                    log::warn!("{owner}: rollback of CT {vmid}: {e2}");
                }
                return Err(e);
            }
        };
        let host_pid = ctl.host_pid;
        let cgroup = Cgroup::of_pid(host_pid).ok();
        if let Some(cg) = &cgroup {
            if let Err(e) = super::ctcg::mirror_memory_limit(cg) {
                log::warn!("{owner}: memory limit on the init's cgroup: {e}");
            }
        }
        let oom = cgroup.as_ref().and_then(|c| match c.watch_oom() {
            Ok(rx) => Some(rx),
            Err(e) => {
                log::warn!("{owner}: OOM events unavailable: {e}");
                None
            }
        });
        let init_fd = ctl::PidFd::open(host_pid)?;
        // The CT has stopped when its lxc-start monitor is gone: report the exit after that,
        // so that the Delete that follows finds a stopped CT (one `pct destroy`).
        let monitor_fd = ctl::parent_pid(host_pid)
            .filter(|p| *p > 1)
            .and_then(|p| ctl::PidFd::open(p).ok());
        let exit_ctl = ctl.clone();
        let exit_dir = dir.clone();
        let exit: crate::backend::ExitFuture = Box::pin(async move {
            if let Err(e) = init_fd.wait().await {
                log::warn!("watching CT init {host_pid}: {e}");
            }
            // The exit file is written before the init exits; none = killed from outside.
            let code = ctdir::read_exit(&exit_dir)
                .map(|r| r.exit_code)
                .or_else(|| exit_ctl.exited().map(|e| e.exit_code))
                .unwrap_or(137);
            if let Some(m) = monitor_fd {
                let _ = tokio::time::timeout(Duration::from_secs(10), m.wait()).await;
            }
            reaper::Exit::new(u32::try_from(code).unwrap_or(255))
        });
        let inst = PctInstance {
            owner,
            vmid,
            dir,
            pct,
            alloc,
            ctcg: cgroup.as_ref().map(CtCgroup::of),
            cgroup,
            ctl,
            oom: Mutex::new(oom),
            destroyed: tokio::sync::Mutex::new(false),
        };
        Ok((
            Arc::new(inst),
            Spawned {
                pid: host_pid,
                io,
                exit,
            },
        ))
    }

    async fn cleanup(&self, record: &BundleRecord, config: &Config) -> Result<()> {
        if let Ok(cwd) = std::env::current_dir() {
            let _ = crate::sys::mount::unmount_all(&cwd.join("rootfs"));
        }
        let Some(vmid) = record
            .data
            .get(KEY_VMID)
            .and_then(|v| v.parse::<Vmid>().ok())
        else {
            return Ok(());
        };
        let cfg = &config.pct;
        let dir = ctdir::path(Path::new(&cfg.state_dir), vmid);
        // Only ever remove the directory the record names if it is the one for this VMID.
        let recorded = record.data.get(KEY_DIR).map(PathBuf::from);
        let dir = match recorded {
            Some(d) if d.is_absolute() && d.file_name() == dir.file_name() => d,
            _ => dir,
        };
        destroy(&Pct::new(cfg), &allocator(cfg)?, vmid, &dir).await
    }
}
