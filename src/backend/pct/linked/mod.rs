//! Linked clones: per image (the template key, [`super::template`]) one Proxmox template CT,
//! made once (`pct create` from the packed template + `pct template`); each container is a
//! `pct clone` of it (+ one `pct set`) where the storage can make linked clones (lvmthin:
//! thin snapshots; zfspool: zfs clones), so a create writes no rootfs data. Other storages
//! (dir, btrfs subvolumes, nfs...) keep the extraction per container ([`wanted`]).
//!
//! Bookkeeping in `<state_dir>/templates/`: `<digest>.ct` names the template CT
//! (`<vmid> <token>`), written *before* `pct create` so that a crash between create and
//! template leaves a record pointing at the half-made CT, destroyed on the next use (only when
//! its config carries the record's token). `<digest>.lock` (exclusive flock) serialises
//! making and checking: two creates of one image make one template. A shared flock on the
//! record is the lease held from before `pct clone` until the clone carries the tag
//! `pvelxc-tpl-<vmid>`; [`gc`] destroys a template CT only with the record's exclusive flock
//! and no CT of this node tagged as its clone. `pct clone` locks its source (`lock: disk`):
//! a second clone of the same template meanwhile fails `CT is locked (disk)`, so clones of one
//! template are serialised (`<digest>.clone.lock`) and retried a few times on that error
//! (someone else's clone).
//!
//! The template CT: hostname `pvelxc-template-<12 hex>`, tags `pvelxc;pvelxc-template;<token>`,
//! a description naming the rootfs digest and image. Never started.

pub mod gc;

use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::backend::{self, release};
use super::cmd::{CloneArgs, CreateArgs, CtOptions, Hostname, OsType, PctCommand, Rootfs, Tag};
use super::lock::FileLock;
use super::output::PctError;
use super::pve::{ctconf, storage::Storage};
use super::runner::{Pct, PctFailure};
use super::template::lease::{open_nofollow, try_flock};
use super::vmid::{Allocator, Vmid};
use crate::config::PctConfig;
use crate::error::{Error, Result};

/// Storage types whose CT template volumes can be linked-cloned (pve-storage
/// `volume_has_feature(clone)` on a base volume with target formats raw/subvol).
pub fn wanted(storages: &[Storage], name: &str) -> bool {
    storages
        .iter()
        .find(|s| s.name == name)
        .is_some_and(|s| matches!(s.kind.as_str(), "lvmthin" | "zfspool"))
}

/// The tag a clone of template CT `vmid` carries (what [`gc`] looks for).
pub fn clone_tag(vmid: Vmid) -> Tag {
    Tag::sanitize(&format!("pvelxc-tpl-{vmid}"))
}

pub fn records_dir(cfg: &PctConfig) -> PathBuf {
    Path::new(&cfg.state_dir).join("templates")
}

/// A template CT of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateCt {
    pub vmid: Vmid,
    /// Its ownership tag.
    pub token: String,
}

pub fn parse_record(text: &str) -> Option<TemplateCt> {
    let mut it = text.split_whitespace();
    let vmid = it.next()?.parse::<Vmid>().ok()?;
    let token = it.next()?.to_string();
    (token.starts_with("pvelxc-") && it.next().is_none()).then_some(TemplateCt { vmid, token })
}

fn read_record(path: &Path) -> Result<Option<TemplateCt>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(parse_record(&t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
    }
}

/// What a record's CT is now.
#[derive(Debug, PartialEq, Eq)]
pub enum State {
    /// Ours and a template.
    Ready,
    /// Ours, not (yet) a template: a crashed or failed make.
    HalfMade,
    /// Gone, or somebody else's by now.
    Foreign,
}

pub fn state(ct: &TemplateCt) -> Result<State> {
    Ok(match ctconf::read(ct.vmid)? {
        Some(c) if ctconf::has_tag(&c, &ct.token) => {
            if ctconf::get(&c, "template") == Some("1") {
                State::Ready
            } else {
                State::HalfMade
            }
        }
        _ => State::Foreign,
    })
}

/// Held while a clone of the template is being made (see the module doc).
#[derive(Debug)]
pub struct CtLease {
    pub ct: TemplateCt,
    /// Serialises the clones of this template on this host.
    clone_lock: PathBuf,
    _file: File,
}

fn lease(path: &Path, ct: TemplateCt) -> Result<CtLease> {
    let f = open_nofollow(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let clone_lock = path.with_extension("clone.lock");
    match try_flock(&f, false) {
        Ok(true) => Ok(CtLease {
            ct,
            clone_lock,
            _file: f,
        }),
        Ok(false) => Err(Error::Unavailable(format!(
            "template CT {} is being removed; try again",
            ct.vmid
        ))),
        Err(e) => Err(Error::io(format!("flock {}", path.display()), e)),
    }
}

/// Destroy a half-made template CT of ours and forget its VMID reservation.
async fn discard(pct: &Pct, alloc: &Allocator, ct: &TemplateCt) -> Result<()> {
    if state(ct)? == State::HalfMade {
        log::warn!("template CT {}: half-made, destroying it", ct.vmid);
        backend::destroy_ct(pct, ct.vmid).await?;
    }
    if let Ok(false) = alloc.reserved_by_other(ct.vmid, &ct.token) {
        release(alloc, ct.vmid);
    }
    Ok(())
}

/// Makes sure the template CT of one image exists and leases it.
pub struct Maker<'a> {
    pub pct: &'a Pct,
    pub cfg: &'a PctConfig,
    pub alloc: &'a Allocator,
    /// The rootfs content digest (64 hex).
    pub digest: &'a str,
    pub rootfs: Rootfs,
    /// The image reference, for the description.
    pub image: Option<&'a str>,
}

impl Maker<'_> {
    pub async fn ensure(&self, tar: &Path) -> Result<CtLease> {
        let dir = records_dir(self.cfg);
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(format!("create {}", dir.display()), e)),
        }
        let path = dir.join(format!("{}.ct", self.digest));
        let wait = self.pct.timeout * 3 + Duration::from_secs(60);
        let _lock = FileLock::acquire(&dir.join(format!("{}.lock", self.digest)), wait).await?;
        if let Some(ct) = read_record(&path)? {
            match state(&ct)? {
                State::Ready => return lease(&path, ct),
                State::HalfMade => discard(self.pct, self.alloc, &ct).await?,
                State::Foreign => log::info!("template CT {} is gone; making a new one", ct.vmid),
            }
        }
        let ct = self.make(tar, &path).await?;
        lease(&path, ct)
    }

    fn options(&self, token: &str) -> CtOptions {
        let short = &self.digest[..self.digest.len().min(12)];
        let mut d = format!(
            "Template of containerd-shim-pvelxc-v2 (io.containerd.pvelxc.v2): its containers \
             are linked clones.\nrootfs: sha256:{}\n",
            self.digest
        );
        if let Some(img) = self.image {
            d.push_str(&format!("image: {img}\n"));
        }
        d.push_str("Removed by `containerd-shim-pvelxc-v2 gc` when no clone uses it; do not edit.");
        CtOptions {
            hostname: Some(Hostname::sanitize(&format!("pvelxc-template-{short}"))),
            rootfs: Some(self.rootfs.clone()),
            ostype: Some(OsType::Unmanaged),
            description: Some(d),
            tags: vec![
                Tag::sanitize("pvelxc"),
                Tag::sanitize("pvelxc-template"),
                Tag::sanitize(token),
            ],
            ..Default::default()
        }
    }

    /// `pct create` + `pct template`, the record written first.
    async fn make(&self, tar: &Path, path: &Path) -> Result<TemplateCt> {
        let token = super::create::new_token()?;
        let owner = format!(
            "template {} {token}",
            &self.digest[..12.min(self.digest.len())]
        );
        let state_dir = PathBuf::from(&self.cfg.state_dir);
        let mut excluded: Vec<Vmid> = Vec::new();
        loop {
            let vmid = super::create::allocate(self.alloc, &state_dir, &owner, &excluded).await?;
            let ct = TemplateCt {
                vmid,
                token: token.clone(),
            };
            if let Err(e) = std::fs::write(path, format!("{vmid} {token}\n")) {
                release(self.alloc, vmid);
                return Err(Error::io(format!("write {}", path.display()), e));
            }
            let mut args = CreateArgs::new(vmid, tar.display().to_string());
            args.unprivileged = Some(self.cfg.unprivileged);
            args.options = self.options(&token);
            log::info!(
                "making template CT {vmid} for rootfs sha256:{}",
                self.digest
            );
            let made = async {
                match self.pct.run(&PctCommand::Create(Box::new(args))).await? {
                    Ok(_) => {}
                    Err(f) => return Ok(Err(f)),
                }
                self.pct.run_ok(&PctCommand::Template { vmid }).await?;
                if state(&ct)? != State::Ready {
                    return Err(Error::internal(format!(
                        "pct template {vmid} succeeded but the CT is not a template"
                    )));
                }
                Ok::<_, Error>(Ok(()))
            }
            .await;
            match made {
                Ok(Ok(())) => {
                    release(self.alloc, vmid);
                    return Ok(ct);
                }
                Ok(Err(PctFailure {
                    kind: PctError::AlreadyExists { .. },
                    message,
                })) => {
                    log::info!("{message}; trying the next VMID");
                    release(self.alloc, vmid);
                    excluded.push(vmid);
                }
                Ok(Err(f)) => {
                    let _ = discard(self.pct, self.alloc, &ct).await;
                    let _ = std::fs::remove_file(path);
                    return Err(f.into_error().context("pct create (template CT)"));
                }
                Err(e) => {
                    if let Err(d) = discard(self.pct, self.alloc, &ct).await {
                        log::warn!("template CT {vmid}: {d}");
                    }
                    let _ = std::fs::remove_file(path);
                    return Err(e.context("making the template CT"));
                }
            }
        }
    }
}

/// `pct clone TEMPLATE VMID --hostname --description`, then one `pct set` with the rest of
/// `options` (tags replaced: ours plus [`clone_tag`]). Ok(Err) when the clone itself failed
/// (nothing of ours exists); Err when the set failed (a clone with the template's tags
/// exists: undo it with `backend::destroy_alt` and the template's token).
pub async fn clone_into(
    pct: &Pct,
    lease: &CtLease,
    vmid: Vmid,
    options: &CtOptions,
) -> Result<std::result::Result<(), PctFailure>> {
    let tpl = &lease.ct;
    let mut args = CloneArgs::new(tpl.vmid, vmid);
    args.hostname = options.hostname.clone();
    args.description = options.description.clone();
    let cmd = PctCommand::Clone(Box::new(args));
    let mut attempt = 0u64;
    loop {
        attempt += 1;
        let serial = FileLock::acquire(&lease.clone_lock, pct.timeout * 2).await?;
        let res = pct.run(&cmd).await?;
        drop(serial);
        match res {
            Ok(_) => break,
            Err(f)
                if matches!(&f.kind, PctError::Locked { lock } if lock == "disk")
                    && attempt < 5 =>
            {
                log::info!("{} (attempt {attempt}); retrying", f.message);
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(f) => return Ok(Err(f)),
        }
    }
    let mut set = options.clone();
    set.hostname = None;
    set.description = None;
    set.rootfs = None;
    set.rootfs_extra.clear();
    set.ostype = None;
    set.tags.push(clone_tag(tpl.vmid));
    pct.run_ok(&PctCommand::Set {
        vmid,
        options: Box::new(set),
        delete: Vec::new(),
    })
    .await?;
    Ok(Ok(()))
}

#[cfg(test)]
mod tests;
