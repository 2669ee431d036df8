//! Create: template, VMID, `pct create`, the CT config edit, `pct start`, connect.
//!
//! pct calls per container: `create`, `start` (and `destroy` at delete); on storages that make
//! linked clones (lvmthin, zfspool) `clone` + `set` instead of `create`, from a template CT
//! made once per image ([`linked`]). What `pct create`/`clone`
//! must not see goes into the CT's config afterwards, in one edit under the config lock: the
//! mount points (create mounts every mpN read-write before extracting the template, so an
//! image could otherwise write into host directories) and raw `lxc.*` lines (the init on
//! pve-container < 6.0.15, limits pct has no option for). Every step that made something
//! is undone by [`Made::rollback`] when a later one fails.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::backend::{allocator, destroy_alt, release};
use super::cmd::{CreateArgs, PctCommand};
use super::ctdir::{self, CtDir, CT_DIR};
use super::output::PctError;
use super::pve::{ctconf, storage, version};
use super::runner::Pct;
use super::runner::PctFailure;
use super::vmid::{self, Allocator, RetryPolicy, Vmid};
use super::{ctl, linked, spec, template};
use crate::backend::record::PctRecord;
use crate::backend::{BackendState, CreateRequest, Recorder};
use crate::error::{Error, Result};

/// A fresh ownership tag for one CT: `pvelxc-` + 12 hex digits.
pub fn new_token() -> Result<String> {
    let mut b = [0u8; 6];
    // SAFETY: getrandom fills the buffer we own.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        return Err(Error::io("getrandom", std::io::Error::last_os_error()));
    }
    Ok(format!(
        "pvelxc-{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    ))
}

/// VMIDs that must not be handed out: every guest of the cluster (`.vmlist`), configs on
/// this node, CTs whose per-container directory still exists, and ids that collided.
fn in_use(state_dir: &Path, excluded: &[Vmid]) -> std::result::Result<Vec<Vmid>, String> {
    let mut v = vmid::vmids_in_config_dirs(&["/etc/pve/lxc", "/etc/pve/qemu-server"]);
    let guests = super::pve::cluster::guests().map_err(|e| e.to_string())?;
    v.extend(guests.keys().filter_map(|id| Vmid::new(*id).ok()));
    if let Ok(rd) = std::fs::read_dir(state_dir) {
        v.extend(
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<Vmid>().ok())),
        );
    }
    v.extend_from_slice(excluded);
    Ok(v)
}

pub(super) async fn allocate(
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
    tokio::task::spawn_blocking(move || a.allocate_with(&o, || in_use(&d, &x)))
        .await
        .map_err(|e| Error::internal(format!("VMID allocation: {e}")))?
        .map_err(|e| Error::Unavailable(format!("pct: {e}")))
}

/// What exists so far, for the rollback.
pub struct Made {
    pub pct: Pct,
    pub alloc: Allocator,
    pub record: Arc<Recorder>,
    pub vmid: Vmid,
    pub token: String,
    pub dir: Arc<CtDir>,
    /// A linked clone's template token: the fresh clone carries it until its `pct set`.
    pub alt_token: Option<String>,
}

impl Made {
    /// Undo: destroy the CT if it is provably ours, remove D, forget the VMID in the bundle
    /// record, then release the reservation (in that order: a record never names a VMID
    /// someone else may get).
    pub async fn rollback(self, why: &Error) {
        log::warn!("CT {}: rolling back the create: {why}", self.vmid);
        if let Err(e) = record_vmid(&self.record, None) {
            log::warn!("CT {}: rollback: clear the bundle record: {e}", self.vmid);
        }
        if let Err(e) = destroy_alt(
            &self.pct,
            &self.alloc,
            self.vmid,
            self.dir.path(),
            &self.token,
            self.alt_token.as_deref(),
        )
        .await
        {
            log::warn!("CT {}: rollback: {e}", self.vmid);
        }
    }
}

/// Name the CT in the bundle record (Some: VMID, token, D, template token) or forget it (None).
fn record_vmid(rec: &Recorder, ct: Option<(Vmid, &str, &Path, Option<&str>)>) -> Result<()> {
    rec.set(match ct {
        Some((vmid, token, dir, tpl)) => BackendState::Pct(PctRecord {
            vmid: vmid.get(),
            token: token.to_string(),
            dir: dir.to_path_buf(),
            template_token: tpl.unwrap_or_default().to_string(),
        }),
        None => BackendState::None,
    })
}

/// The spec's process, with `terminal` as containerd's stdio says.
pub fn process_of(req: &CreateRequest) -> Result<oci_spec::runtime::Process> {
    let mut process = req
        .spec
        .process()
        .clone()
        .ok_or_else(|| Error::invalid("the spec has no process"))?;
    process.set_terminal(Some(req.stdio.terminal));
    Ok(process)
}

/// Everything up to a created, configured (not yet started) CT.
pub async fn create_ct(req: &CreateRequest) -> Result<(Made, std::os::unix::net::UnixListener)> {
    let started = std::time::Instant::now();
    let cfg = &req.config.pct;
    let init = ctdir::find_init(&cfg.init_path).map_err(Error::precondition)?;
    let process = process_of(req)?;
    let state_dir = PathBuf::from(&cfg.state_dir);
    ctdir::check_state_dir(&state_dir)?;
    let pct = Pct::new(cfg);
    let owner = format!("{}/{}", req.namespace, req.id);

    // Host facts and the plan: every refusal before anything is made.
    let pve = version::detect(&cfg.pve_container_version, &cfg.pveversion, &state_dir).await?;
    let storages = storage::load(Path::new(storage::STORAGE_CFG))?;
    let rootfs = storage::rootfs_for(&storages, &cfg.storage, cfg.rootfs_size_gib)?;
    let tpl_rootfs = rootfs.clone();
    let token = new_token()?;
    let init_in_ct = format!("{CT_DIR}/init");
    let plan = spec::plan(
        cfg,
        pve,
        &req.namespace,
        &req.id,
        &req.spec,
        rootfs,
        &init_in_ct,
        &token,
    )?;
    // A pod's sandbox runs `pause`, which uses none of its spec's binds (CRI gives it the pod's
    // /dev/shm, read-only: a read-only bind of a nosuid,nodev tmpfs LXC cannot make in an
    // unprivileged CT); the pod's containers get /dev/shm and the rest through D.
    let user_mps = if plan.pod {
        Vec::new()
    } else {
        spec::mount_points(&req.spec)?
    };
    // Leased (a shared flock) until this function returns, i.e. until `pct create` is
    // done: the template GC never removes it meanwhile.
    let tpl = template::ensure_for(req, &process).await?;
    let ostemplate = tpl.path().display().to_string();
    log::info!("{owner}: pve-container {pve}, template {ostemplate}");

    let alloc = allocator(cfg)?;
    // Linked clones: the template CT of this image, leased until the clone carries its tag.
    let linked = match template::digest_of(tpl.path()) {
        Some(digest) if linked::wanted(&storages, &cfg.storage) => Some(
            linked::Maker {
                pct: &pct,
                cfg,
                alloc: &alloc,
                digest,
                rootfs: tpl_rootfs,
                image: spec::image(&req.spec).as_deref(),
            }
            .ensure(tpl.path())
            .await?,
        ),
        _ => None,
    };
    let policy = RetryPolicy::default();
    let mut excluded: Vec<Vmid> = Vec::new();
    let mut lock_waits = 0u32;
    loop {
        // The reservation names this create's token: a late cleanup of an earlier container
        // with the same VMID then knows the directory is not its own (see backend::destroy).
        let vmid = allocate(&alloc, &state_dir, &format!("{owner} {token}"), &excluded).await?;
        let prepared = CtDir::prepare(
            &state_dir,
            vmid,
            cfg.unprivileged,
            &init,
            &process,
            &plan.settings,
            plan.pod,
        );
        let (dir, listener) = match prepared {
            Ok(v) => v,
            Err(e) => {
                release(&alloc, vmid);
                return Err(e);
            }
        };
        let made = Made {
            pct: pct.clone(),
            alloc: alloc.clone(),
            record: req.record.clone(),
            vmid,
            token: token.clone(),
            dir: Arc::new(dir),
            alt_token: linked.as_ref().map(|l| l.ct.token.clone()),
        };
        let rec = (
            vmid,
            token.as_str(),
            made.dir.path(),
            made.alt_token.as_deref(),
        );
        if let Err(e) = record_vmid(&req.record, Some(rec)) {
            made.rollback(&e).await;
            return Err(e);
        }
        let res = match make_ct(&pct, linked.as_ref(), vmid, &ostemplate, cfg, &plan).await {
            Ok(r) => r,
            Err(e) => {
                // Our own timeout (pct was stopped and the CT unlocked), or a clone whose
                // `pct set` failed: maybe half-made.
                made.rollback(&e).await;
                return Err(e);
            }
        };
        match res {
            Ok(()) => {
                log::info!("{owner}: CT {vmid} created");
                let mut lines: Vec<String> = Vec::new();
                for mp in made.dir.mount_points().iter().chain(user_mps.iter()) {
                    let v = mp
                        .render()
                        .map_err(|e| Error::invalid(format!("mount point: {e}")))?;
                    lines.push(format!("mp{}: {v}", mp.index));
                }
                lines.extend(plan.raw_lines.iter().cloned());
                if let Err(e) = ctconf::append(vmid, &lines).await {
                    made.rollback(&e).await;
                    return Err(e);
                }
                let (calls, in_pct) = pct.spent();
                let total = started.elapsed();
                log::info!(
                    "{owner}: create took {} ms, {calls} pct calls {} ms, shim-own-us={}",
                    total.as_millis(),
                    in_pct.as_millis(),
                    total.saturating_sub(in_pct).as_micros()
                );
                return Ok((made, listener));
            }
            Err(f) => {
                let e = Error::Internal(f.message.clone());
                // A collision leaves nothing of ours: no destroy (the CT is someone else's).
                let ours = !matches!(f.kind, PctError::AlreadyExists { .. });
                if ours {
                    made.rollback(&e).await;
                } else {
                    ctdir::remove(made.dir.path())?;
                    record_vmid(&req.record, None)?;
                    release(&alloc, vmid);
                }
                match f.kind {
                    // Another node, VM or create took it: scan on. Bounded by the range.
                    PctError::AlreadyExists { .. } => {
                        log::info!("{owner}: {} ; trying the next VMID", f.message);
                        excluded.push(vmid);
                    }
                    PctError::LockTimeout { .. }
                        if policy.should_retry(&f.kind, lock_waits + 1) =>
                    {
                        lock_waits += 1;
                        log::warn!("{owner}: {} (attempt {lock_waits}); retrying", f.message);
                        tokio::time::sleep(policy.delay(lock_waits)).await;
                    }
                    _ => return Err(f.into_error()),
                }
            }
        }
    }
}

/// `pct create` from the packed template, or `pct clone` of the image's template CT + `pct set`.
async fn make_ct(
    pct: &Pct,
    linked: Option<&linked::CtLease>,
    vmid: Vmid,
    ostemplate: &str,
    cfg: &crate::config::PctConfig,
    plan: &spec::CtPlan,
) -> Result<std::result::Result<(), PctFailure>> {
    if let Some(l) = linked {
        return linked::clone_into(pct, l, vmid, &plan.options)
            .await
            .map_err(|e| e.context("pct clone"));
    }
    let mut args = CreateArgs::new(vmid, ostemplate.to_string());
    args.unprivileged = Some(cfg.unprivileged);
    args.options = plan.options.clone();
    Ok(pct
        .run(&PctCommand::Create(Box::new(args)))
        .await
        .map_err(|e| e.context("pct create"))?
        .map(|_| ()))
}

/// `pct start`, then wait for the init to connect (or to give up: its exit record).
pub async fn start_ct(
    made: &Made,
    listener: std::os::unix::net::UnixListener,
    stdio: &crate::sys::stdio::StdioPaths,
) -> Result<(Arc<ctl::Ctl>, crate::sys::stdio::ProcessIo)> {
    made.pct
        .run_ok(&PctCommand::Start {
            vmid: made.vmid,
            skiplock: false,
        })
        .await?;
    let timeout = made.pct.timeout.min(Duration::from_secs(60));
    let dir = made.dir.clone();
    let gave_up = async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Some(r) = dir.read_exit_blocking().await {
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
