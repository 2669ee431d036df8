//! Template cache hygiene: least-recently-used templates removed down to a size cap (never a
//! leased one), and temp files of crashed packers removed (never one a live packer holds).
//!
//! "Least recently used" = oldest use stamp (`.NAME.used`, see [`super::lease`]), else the
//! template's own mtime. Only the shim's own files are touched (`pvelxc-*.tar`, their
//! `.pvelxc-*.tar.used` stamps and `.pvelxc-*.tar.tmp-*` temps): the
//! template directory may be a Proxmox storage's `template/cache`, shared with other templates.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::lease::{open_nofollow, stamp_path, still_there, try_flock};
use super::{lock_name, PREFIX};
use crate::error::{Error, Result};

/// A temp file younger than this is left alone even when nobody holds its lock.
pub const STALE_AGE: Duration = Duration::from_secs(60);

/// What a collection did.
#[derive(Debug, Default)]
pub struct GcReport {
    pub removed: Vec<PathBuf>,
    /// Over the cap but leased: kept.
    pub in_use: usize,
    /// Bytes (allocated) the shim's templates take after the collection.
    pub total: u64,
}

/// A template's name: `pvelxc-<64 hex>.tar`. Names of earlier key schemes
/// (`pvelxc-l<hex>.tar`, `pvelxc-c<hex>.tar`) are legacy.
fn template_kind(name: &str) -> Option<bool> {
    let key = name.strip_prefix(PREFIX)?.strip_suffix(".tar")?;
    if key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(true);
    }
    let legacy = key
        .strip_prefix('l')
        .or_else(|| key.strip_prefix('c'))
        .is_some_and(|k| k.len() == 32 && k.bytes().all(|b| b.is_ascii_hexdigit()));
    legacy.then_some(false)
}

/// The template a temp file was for: `.NAME.tmp-<pid>` → NAME.
fn temp_of(name: &str) -> Option<&str> {
    let (t, pid) = name.strip_prefix('.')?.rsplit_once(".tmp-")?;
    (template_kind(t).is_some() && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        .then_some(t)
}

/// Remove least-recently-used templates until the total is at most `cap` bytes (0 = no cap),
/// skipping leased ones. Templates of legacy key schemes (never served again) go regardless
/// of the cap when unused.
pub fn collect(dir: &Path, cap: u64) -> Result<GcReport> {
    let mut found = Vec::new();
    let rd = std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("read template dir {}", dir.display()), e))?;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(current) = name.to_str().and_then(template_kind) else {
            continue;
        };
        let Ok(md) = e.path().symlink_metadata() else {
            continue;
        };
        if !md.is_file() {
            continue;
        }
        let used = stamp_path(&e.path())
            .and_then(|s| s.symlink_metadata().ok())
            .filter(|s| s.is_file())
            .unwrap_or_else(|| md.clone());
        found.push((
            used.mtime(),
            used.mtime_nsec(),
            e.path(),
            md.blocks() * 512,
            current,
        ));
    }
    remove_orphan_stamps(dir);
    found.sort();
    let mut report = GcReport {
        total: found.iter().map(|f| f.3).sum(),
        ..Default::default()
    };
    for (_, _, path, size, current) in found {
        if current && (cap == 0 || report.total <= cap) {
            continue;
        }
        match remove_unleased(&path) {
            Ok(true) => {
                log::info!("template GC: removed {}", path.display());
                report.total = report.total.saturating_sub(size);
                report.removed.push(path);
            }
            Ok(false) => report.in_use += 1,
            Err(e) => log::warn!("template GC: {}: {e}", path.display()),
        }
    }
    Ok(report)
}

/// Unlink `path` while holding its exclusive lock; Ok(false) when it is leased.
fn remove_unleased(path: &Path) -> std::io::Result<bool> {
    let f = match open_nofollow(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if !try_flock(&f, true)? || !still_there(&f, path) {
        return Ok(false);
    }
    std::fs::remove_file(path)?;
    if let Some(s) = stamp_path(path) {
        let _ = std::fs::remove_file(s);
    }
    Ok(true)
}

/// Stamps whose template is gone (removed by hand, or by a crashed collection).
fn remove_orphan_stamps(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(tpl) = name
            .to_str()
            .and_then(|n| n.strip_prefix('.')?.strip_suffix(".used"))
            .filter(|t| template_kind(t).is_some())
        else {
            continue;
        };
        if std::fs::symlink_metadata(dir.join(tpl)).is_err() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Remove temp files of crashed packers: older than `min_age`, and their template's pack lock
/// free (taken here without waiting). `held` names the template whose pack lock the caller
/// holds already (its temps are then not in use either).
pub fn sweep_temps(dir: &Path, held: Option<&str>, min_age: Duration) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(tpl) = name.to_str().and_then(temp_of) else {
            continue;
        };
        let Ok(md) = e.path().symlink_metadata() else {
            continue;
        };
        let old = md
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age >= min_age);
        if !md.is_file() || !old {
            continue;
        }
        // Held until the unlink below: no packer can start on this template meanwhile.
        let lock = if held == Some(tpl) {
            None
        } else {
            match open_nofollow(&dir.join(lock_name(tpl))) {
                Ok(f) => match try_flock(&f, true) {
                    Ok(true) => Some(f),
                    _ => continue,
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(_) => continue,
            }
        };
        match std::fs::remove_file(e.path()) {
            Ok(()) => {
                log::info!("removed stale template temp {}", e.path().display());
                removed += 1;
            }
            Err(err) => log::warn!("remove {}: {err}", e.path().display()),
        }
        drop(lock);
    }
    removed
}
