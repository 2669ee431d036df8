//! Leases: a template is in use while a shared `flock` on it is held. GC takes the exclusive
//! lock without waiting and skips the template when that fails, so a leased template is never
//! removed. A lease also touches the template's use stamp `.NAME.used` (its mtime is the LRU
//! clock; atime is not trusted, and the template itself is never modified once renamed).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

/// A template held for `pct create`. Keep it alive until `pct create` has returned; dropping
/// it releases the shared lock (GC may then remove the template when it is least recently used).
#[derive(Debug)]
pub struct TemplateLease {
    path: PathBuf,
    _file: File,
}

impl TemplateLease {
    /// The template's absolute path: what `pct create` gets as its ostemplate.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Open a file without following a final symlink, for locking.
pub(in crate::backend::pct) fn open_nofollow(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
}

/// flock without waiting; Ok(false) when somebody else holds a conflicting lock.
pub(in crate::backend::pct) fn try_flock(f: &File, exclusive: bool) -> std::io::Result<bool> {
    let op = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(f.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EWOULDBLOCK) | Some(libc::EINTR) => Ok(false),
        _ => Err(e),
    }
}

/// Whether `f` is still the file at `path` (not unlinked or replaced since it was opened).
pub(super) fn still_there(f: &File, path: &Path) -> bool {
    match (f.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Lease the template at `path` if it exists: None when it does not (or GC removed it meanwhile).
/// A template that is not a regular file owned by us, or that others can write, is refused:
/// its name is predictable, so whoever can plant one could choose a CT's files.
pub async fn try_lease(path: &Path) -> Result<Option<TemplateLease>> {
    for _ in 0..100 {
        let f = match open_nofollow(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("open template {}", path.display()), e)),
        };
        let md = f
            .metadata()
            .map_err(|e| Error::io(format!("stat template {}", path.display()), e))?;
        // SAFETY: geteuid cannot fail.
        let me = unsafe { libc::geteuid() };
        if !md.is_file() || md.uid() != me || md.mode() & 0o022 != 0 {
            return Err(Error::precondition(format!(
                "template {} is not a regular file owned by uid {me} and writable only by it; \
                 remove it",
                path.display()
            )));
        }
        if !try_flock(&f, false)
            .map_err(|e| Error::io(format!("flock template {}", path.display()), e))?
        {
            // GC holds it exclusively for a moment, to remove it.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        if !still_there(&f, path) {
            return Ok(None);
        }
        touch(path);
        return Ok(Some(TemplateLease {
            path: path.to_path_buf(),
            _file: f,
        }));
    }
    Ok(None)
}

/// The use stamp of the template at `path`: `.NAME.used` beside it.
pub(super) fn stamp_path(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    Some(path.with_file_name(format!(".{name}.used")))
}

/// The template at `path` was just used: its stamp's mtime = now.
fn touch(path: &Path) {
    let Some(stamp) = stamp_path(path) else {
        return;
    };
    let res = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&stamp)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
    if let Err(e) = res {
        log::warn!("stamp template use {}: {e}", stamp.display());
    }
}
