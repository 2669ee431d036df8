//! Template CTs follow their packed template: when the size-cap GC has removed an image's
//! `pvelxc-<digest>.tar` (or with `all`), its template CT is destroyed — unless a create holds
//! its lease or a CT of this node carries its clone tag (`pvelxc-tpl-<vmid>`): a template is
//! never destroyed while a clone of it exists. Only CTs whose config carries the record's
//! token are destroyed; records of CTs that are gone or no longer ours are forgotten.

use std::path::Path;
use std::time::Duration;

use super::{clone_tag, read_record, records_dir, state, State, TemplateCt};
use crate::backend::pct::backend::destroy_ct;
use crate::backend::pct::lock::FileLock;
use crate::backend::pct::pve::ctconf;
use crate::backend::pct::runner::Pct;
use crate::backend::pct::template::lease::{open_nofollow, try_flock};
use crate::backend::pct::template::template_dir;
use crate::backend::pct::vmid::{vmids_in_config_dirs, Vmid};
use crate::config::PctConfig;
use crate::error::{Error, Result};

/// What a collection did.
#[derive(Debug, Default)]
pub struct Report {
    pub removed: Vec<Vmid>,
    /// Kept because a clone or a create uses them.
    pub in_use: usize,
    /// Template CTs that could not be checked or destroyed (why).
    pub failed: Vec<String>,
}

/// CTs of this node tagged as clones of `vmid`.
pub fn clones_of(vmid: Vmid) -> Vec<Vmid> {
    let tag = clone_tag(vmid);
    vmids_in_config_dirs(&["/etc/pve/lxc"])
        .into_iter()
        .filter(|v| {
            ctconf::read(*v)
                .ok()
                .flatten()
                .is_some_and(|c| ctconf::has_tag(&c, tag.as_str()))
        })
        .collect()
}

pub async fn collect(cfg: &PctConfig, all: bool) -> Result<Report> {
    let dir = records_dir(cfg);
    let mut report = Report::default();
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Ok(report);
    };
    let tars = template_dir(cfg);
    let pct = Pct::new(cfg);
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(digest) = name.strip_suffix(".ct") else {
            continue;
        };
        if !all && tars.join(format!("pvelxc-{digest}.tar")).exists() {
            continue;
        }
        match one(&pct, &dir, digest).await {
            Ok(Some(v)) => report.removed.push(v),
            Ok(None) => report.in_use += 1,
            Err(e) => report
                .failed
                .push(format!("template CT of rootfs sha256:{digest}: {e}")),
        }
    }
    Ok(report)
}

/// Destroy one template CT if nothing uses it: Some(vmid) when destroyed (or forgotten).
async fn one(pct: &Pct, dir: &Path, digest: &str) -> Result<Option<Vmid>> {
    let Ok(_lock) = FileLock::acquire(&dir.join(format!("{digest}.lock")), Duration::ZERO).await
    else {
        return Ok(None); // being made or checked right now
    };
    let path = dir.join(format!("{digest}.ct"));
    let f = open_nofollow(&path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    if !try_flock(&f, true).map_err(|e| Error::io(format!("flock {}", path.display()), e))? {
        return Ok(None); // leased: a clone is being made
    }
    let Some(ct) = read_record(&path)? else {
        remove(&path)?;
        return Ok(None);
    };
    if state(&ct)? == State::Foreign {
        log::info!("template CT {} is gone or not ours; forgetting it", ct.vmid);
        remove(&path)?;
        return Ok(Some(ct.vmid));
    }
    let clones = clones_of(ct.vmid);
    if !clones.is_empty() {
        log::debug!("template CT {} kept: clones {clones:?}", ct.vmid);
        return Ok(None);
    }
    destroy(pct, &ct).await?;
    remove(&path)?;
    Ok(Some(ct.vmid))
}

async fn destroy(pct: &Pct, ct: &TemplateCt) -> Result<()> {
    log::info!("destroying unused template CT {}", ct.vmid);
    destroy_ct(pct, ct.vmid).await
}

fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("remove {}", path.display()), e)),
    }
}
