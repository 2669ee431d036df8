//! The pct [`Backend`]: create (see [`create`](super::create)), crash cleanup, and the
//! destroy both share — which never touches a CT that is not provably this shim's.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::cmd::PctCommand;
use super::ctcg::CtCgroup;
use super::instance::PctInstance;
use super::output::PctError;
use super::pve::{cluster, ctconf};
use super::runner::Pct;
use super::vmid::{Allocator, Vmid, VmidRange};
use super::{create, ctdir, ctl, pod, spec};
use crate::backend::{Backend, BackendState, BundleRecord, CreateRequest, Instance, Spawned};
use crate::config::{BackendKind, Config, PctConfig};
use crate::error::{Error, Result};
use crate::sys::cgroup::Cgroup;
use crate::sys::reaper;

/// Reservations outlive the CT's creation: released when it is destroyed.
const RESERVATION_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Everything per container lives in its [`PctInstance`] and bundle record; the pods of this
/// shim (one shim per pod) are found by sandbox id.
#[derive(Default)]
pub struct PctBackend {
    pods: super::pod::Pods,
}

/// The host-wide allocator over the configured range narrowed to the datacenter's
/// `next-id` range.
pub fn allocator(cfg: &PctConfig) -> Result<Allocator> {
    let (lo, hi) = cluster::effective_range(cfg.vmid_min, cfg.vmid_max)?;
    let range =
        VmidRange::new(lo, hi).map_err(|e| Error::invalid(format!("[pct] vmid range: {e}")))?;
    let dir = Path::new(&cfg.state_dir);
    Ok(
        Allocator::new(dir.join("vmid.lock"), dir.join("vmid.reservations"), range)
            .with_ttl(RESERVATION_TTL),
    )
}

pub fn release(alloc: &Allocator, vmid: Vmid) {
    if let Err(e) = alloc.release(vmid) {
        log::warn!("release VMID {vmid}: {e}");
    }
}

/// Whose CT a VMID is now.
#[derive(Debug, PartialEq, Eq)]
pub enum Ownership {
    /// This node's CT carrying our tag.
    Ours,
    /// Nothing with this VMID anywhere in the cluster.
    Gone,
    /// Someone else's guest (why).
    NotOurs(String),
}

/// `alt`: the token of the template CT a clone was made from. A fresh clone carries the
/// template's tags until its `pct set`: such a non-template CT is ours too (the VMID is our
/// reservation).
pub fn ownership(vmid: Vmid, token: &str, alt: Option<&str>) -> Result<Ownership> {
    if let Some(conf) = ctconf::read(vmid)? {
        if !token.is_empty() && ctconf::has_tag(&conf, token) {
            return Ok(Ownership::Ours);
        }
        let fresh_clone = alt.is_some_and(|a| {
            !a.is_empty()
                && ctconf::has_tag(&conf, a)
                && ctconf::get(&conf, "template") != Some("1")
        });
        if fresh_clone {
            return Ok(Ownership::Ours);
        }
        let tags = ctconf::get(&conf, "tags").unwrap_or("none");
        return Ok(Ownership::NotOurs(format!(
            "its config does not carry our tag {token:?} (tags: {tags})"
        )));
    }
    Ok(match cluster::guests()?.get(&vmid.get()) {
        Some(g) => Ownership::NotOurs(format!("it is a {} guest of node '{}'", g.kind, g.node)),
        None => Ownership::Gone,
    })
}

/// Destroy a CT and everything the shim made for it, if it is provably ours (its config
/// carries `token`); otherwise leave it alone and say so. Idempotent. A CT that is still
/// stopping (its init just exited, an admin's shutdown) can make `destroy --force` fail
/// transiently: retry a few times.
pub async fn destroy(
    pct: &Pct,
    alloc: &Allocator,
    vmid: Vmid,
    dir: &Path,
    token: &str,
) -> Result<()> {
    destroy_alt(pct, alloc, vmid, dir, token, None).await
}

/// [`destroy`], also owning a fresh clone of the template CT whose token is `alt`.
pub async fn destroy_alt(
    pct: &Pct,
    alloc: &Allocator,
    vmid: Vmid,
    dir: &Path,
    token: &str,
    alt: Option<&str>,
) -> Result<()> {
    match ownership(vmid, token, alt)? {
        Ownership::Ours => destroy_ct(pct, vmid).await?,
        Ownership::Gone => log::debug!("CT {vmid} is already gone"),
        Ownership::NotOurs(why) => {
            log::warn!("CT {vmid} is not destroyed: {why}");
        }
    }
    // The allocator's host-wide lock, an unmount and a directory removal: off the runtime.
    let (a, d, t) = (alloc.clone(), dir.to_path_buf(), token.to_string());
    tokio::task::spawn_blocking(move || free_vmid(&a, vmid, &d, &t))
        .await
        .map_err(|e| Error::internal(format!("free VMID {vmid}: {e}")))?
}

/// Remove D and release the reservation, unless the VMID is another create's by now (our CT
/// was gone, a crash cleanup ran late): its directory and reservation are then that create's.
/// While the reservation is ours nobody else can take the VMID, so D goes first.
fn free_vmid(alloc: &Allocator, vmid: Vmid, dir: &Path, token: &str) -> Result<()> {
    match alloc.reserved_by_other(vmid, token) {
        Ok(true) => {
            log::warn!(
                "VMID {vmid} is reserved by another container now: {} is left to it",
                dir.display()
            );
            return Ok(());
        }
        Ok(false) => {}
        Err(e) => {
            log::warn!(
                "VMID {vmid}: cannot read the reservations ({e}); {} is left alone",
                dir.display()
            );
            return Ok(());
        }
    }
    ctdir::remove(dir)?;
    release(alloc, vmid);
    Ok(())
}

pub(super) async fn destroy_ct(pct: &Pct, vmid: Vmid) -> Result<()> {
    let cmd = PctCommand::Destroy {
        vmid,
        purge: true,
        force: true,
    };
    let mut attempt = 0u64;
    loop {
        attempt += 1;
        match pct.run(&cmd).await? {
            Ok(_) => return Ok(()),
            Err(f) if matches!(f.kind, PctError::NoSuchCt) => return Ok(()),
            Err(f) if matches!(f.kind, PctError::Locked { .. }) && attempt == 1 => {
                // A create our timeout interrupted leaves `lock: create`.
                log::warn!("{}; unlocking CT {vmid}", f.message);
                let _ = pct.run(&PctCommand::Unlock { vmid }).await;
            }
            Err(f) if attempt < 6 && !matches!(f.kind, PctError::Protected) => {
                log::debug!("{} (attempt {attempt}); retrying", f.message);
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            Err(f) => return Err(f.into_error()),
        }
    }
}

/// One OOM stream from several cgroup levels; a kill seen by two levels at once counts once.
fn merge_oom(
    rxs: Vec<tokio::sync::mpsc::UnboundedReceiver<()>>,
) -> Option<tokio::sync::mpsc::UnboundedReceiver<()>> {
    if rxs.len() <= 1 {
        return rxs.into_iter().next();
    }
    let (tx, out) = tokio::sync::mpsc::unbounded_channel();
    let (in_tx, mut in_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    for mut rx in rxs {
        let t = in_tx.clone();
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                if t.send(()).is_err() {
                    break;
                }
            }
        });
    }
    drop(in_tx);
    tokio::spawn(async move {
        let mut last: Option<std::time::Instant> = None;
        while in_rx.recv().await.is_some() {
            if last.is_some_and(|l| l.elapsed() < Duration::from_millis(500)) {
                continue;
            }
            last = Some(std::time::Instant::now());
            if tx.send(()).is_err() {
                break;
            }
        }
    });
    Some(out)
}

impl PctBackend {
    /// A pod's CT runs: CNI's network moves in, and its containers can find it.
    async fn sandbox(
        &self,
        req: &CreateRequest,
        made: &create::Made,
        host_pid: u32,
    ) -> Result<Arc<pod::PodCt>> {
        if let Some(ns) = pod::net::cni_netns(&req.spec)? {
            let moved = pod::net::move_into(&ns, host_pid)
                .await
                .map_err(|e| e.context("move the pod's network into its CT"))?;
            log::info!(
                "{}/{}: CT {} has the pod's network {} ({})",
                req.namespace,
                req.id,
                made.vmid,
                ns.display(),
                moved.join(", ")
            );
        }
        let p = Arc::new(pod::PodCt {
            sandbox: req.id.clone(),
            vmid: made.vmid,
            dir: made.dir.clone(),
            pct: made.pct.clone(),
            init_host_pid: host_pid,
        });
        self.pods.insert(&p);
        Ok(p)
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
        let lxc = Path::new(super::pve::PVE_DIR).join("lxc");
        if !lxc.is_dir() {
            return Err(format!(
                "{} does not exist: this is not a Proxmox VE node (pmxcfs not mounted)",
                lxc.display()
            ));
        }
        Ok(())
    }

    fn admit(&self, annotations: &std::collections::HashMap<String, String>) -> Result<()> {
        spec::admit_pods(annotations)
    }

    async fn check(&self, config: &Config) -> crate::check::Report {
        super::check::report(&config.pct).await
    }

    async fn create(&self, req: CreateRequest) -> Result<(Arc<dyn Instance>, Spawned)> {
        let ann = req.spec.annotations().clone().unwrap_or_default();
        let role = pod::role(&ann)?;
        if let pod::Role::Member { sandbox } = &role {
            let p = self.pods.get(sandbox)?;
            let (inst, spawned) = pod::container::PodContainer::create(&req, p).await?;
            return Ok((inst, spawned));
        }
        let owner = format!("{}/{}", req.namespace, req.id);
        let (made, listener) = create::create_ct(&req).await?;
        let (ctl, io) = match create::start_ct(&made, listener, &req.stdio).await {
            Ok(v) => v,
            Err(e) => {
                made.rollback(&e).await;
                return Err(e);
            }
        };
        let host_pid = ctl.host_pid;
        let pod = if role == pod::Role::Sandbox {
            match self.sandbox(&req, &made, host_pid).await {
                Ok(p) => Some(p),
                Err(e) => {
                    made.rollback(&e).await;
                    return Err(e);
                }
            }
        } else {
            None
        };
        let cgroup = Cgroup::of_pid(host_pid).ok();
        if let Some(cg) = &cgroup {
            if let Err(e) = super::ctcg::mirror_memory_limit(cg) {
                log::warn!("{owner}: memory limit on the init's cgroup: {e}");
            }
        }
        // The same limit sits on the CT level and (mirrored) on the init's `ns` cgroup: an
        // OOM kill can be charged to either, so both are watched.
        let oom = cgroup.as_ref().and_then(|c| {
            let ct = super::ctcg::ct_level_cgroup(c);
            let levels: Vec<_> = [Some(c.clone()), (ct != *c).then_some(ct)]
                .into_iter()
                .flatten()
                .filter_map(|cg| match cg.watch_oom() {
                    Ok(rx) => Some(rx),
                    Err(e) => {
                        log::warn!("{owner}: OOM events unavailable: {e}");
                        None
                    }
                })
                .collect();
            merge_oom(levels)
        });
        let init_fd = ctl::PidFd::open(host_pid)?;
        let init_pidfd = ctl::PidFd::open(host_pid)?;
        // The CT has stopped when its lxc-start monitor is gone: report the exit after that,
        // so that the Delete that follows finds a stopped CT (one `pct destroy`).
        let monitor_fd = ctl::parent_pid(host_pid)
            .filter(|p| *p > 1)
            .and_then(|p| ctl::PidFd::open(p).ok());
        let exit_ctl = ctl.clone();
        let exit_dir = made.dir.clone();
        let exit: crate::backend::ExitFuture = Box::pin(async move {
            if let Err(e) = init_fd.wait().await {
                log::warn!("watching CT init {host_pid}: {e}");
            }
            // The init reports its exit over the control socket, and writes the record before
            // it exits; none of either = killed from outside (`pct stop`): 137.
            let reported = exit_ctl.final_exit(Duration::from_secs(2)).await;
            let record = exit_dir.read_exit_blocking().await;
            let code = reported
                .map(|e| e.exit_code)
                .or(record.map(|r| r.exit_code))
                .unwrap_or(137);
            if let Some(m) = monitor_fd {
                let _ = tokio::time::timeout(Duration::from_secs(10), m.wait()).await;
            }
            reaper::Exit::new(u32::try_from(code.clamp(0, 255)).unwrap_or(255))
        });
        let inst = PctInstance {
            owner,
            vmid: made.vmid,
            dir: made.dir,
            token: made.token,
            pct: made.pct,
            alloc: made.alloc,
            ctcg: cgroup.as_ref().map(CtCgroup::of),
            cgroup,
            ctl,
            init_pidfd,
            oom: Mutex::new(oom),
            destroyed: tokio::sync::Mutex::new(false),
            record: made.record,
            pod,
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
        let BackendState::Pct(rec) = record.backend_state() else {
            return Ok(());
        };
        let Ok(vmid) = Vmid::new(rec.vmid) else {
            log::warn!(
                "cleanup {}: recorded VMID {} is not valid",
                record.id,
                rec.vmid
            );
            return Ok(());
        };
        let cfg = &config.pct;
        let dir = ctdir::path(Path::new(&cfg.state_dir), vmid);
        // Only ever remove the directory the record names if it is the one for this VMID.
        let dir = if rec.dir.is_absolute() && rec.dir.file_name() == dir.file_name() {
            rec.dir
        } else {
            dir
        };
        let alt = (!rec.template_token.is_empty()).then_some(rec.template_token.as_str());
        destroy_alt(
            &Pct::new(cfg),
            &allocator(cfg)?,
            vmid,
            &dir,
            &rec.token,
            alt,
        )
        .await
    }
}
