//! `pvelxc-init unpack DIR`: the tar stream on stdin (GNU tar `--create --sparse
//! --numeric-owner` of an image's root) becomes the new directory DIR.
//!
//! Modes (set-id bits included), numeric owners (lchown), mtimes, symlinks, hard links and
//! sparse files are kept; device and fifo entries are skipped and counted (an unprivileged CT
//! cannot make device nodes). No entry writes outside DIR: an entry path with `..` is an
//! error, and the `tar` crate's `unpack_in` refuses any entry whose parent, or hard link
//! target, resolves (through a symlink an earlier entry made) to a place outside DIR.

use super::log;
use std::error::Error;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

const MODE: &str = "unpack";

pub fn main(dir: &Path) -> i32 {
    // Directories the archive does not list (DIR's parents, missing ones) get 0755.
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0o022) };
    match unpack(std::io::stdin().lock(), dir) {
        Ok(s) => {
            if s.skipped > 0 {
                log(
                    MODE,
                    &format!("skipped {} device and fifo entries", s.skipped),
                );
            }
            0
        }
        Err(e) => {
            log(MODE, &e);
            1
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Entries read (directories, files, links, skipped ones).
    pub entries: u64,
    /// Character and block devices and fifos left out.
    pub skipped: u64,
}

/// An error and its causes (the `tar` crate's messages name the entry, their sources why).
fn chain(e: &std::io::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        let t = x.to_string();
        if !s.contains(&t) {
            s = format!("{s}: {t}");
        }
        src = x.source();
    }
    s
}

/// The entry's path below DIR (`./a/b` → `a/b`; `.` → empty); `..` anywhere is an error.
fn below(p: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(x) => out.push(x),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(format!("entry {p:?} would leave the directory"))
            }
        }
    }
    Ok(out)
}

/// mtime (and atime) of `path` itself, not of a symlink's target.
fn set_mtime(path: &Path, secs: u64) -> Result<(), String> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let t = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: 0,
    };
    let ts = [t, t];
    // SAFETY: valid C string and a two-element timespec array.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!("set mtime of {}: {e}", path.display()));
    }
    Ok(())
}

/// The `.` entry's owner, mode and mtime, for DIR itself.
fn apply_top(dir: &Path, h: &tar::Header) -> Result<(), String> {
    let bad = |e: std::io::Error| format!("{}: {e}", dir.display());
    let (uid, gid) = (h.uid().map_err(bad)?, h.gid().map_err(bad)?);
    let (uid, gid) = (uid as libc::uid_t, gid as libc::gid_t);
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid)).map_err(bad)?;
    let mode = h.mode().map_err(bad)? & 0o7777;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(bad)?;
    set_mtime(dir, h.mtime().map_err(bad)?)
}

/// Extract the archive `input` into the new directory `dir` (absolute; its missing parents
/// are made; `dir` must not exist).
pub fn unpack<R: Read>(input: R, dir: &Path) -> Result<Stats, String> {
    if !dir.is_absolute() {
        return Err(format!("{}: not an absolute path", dir.display()));
    }
    if let Some(parent) = dir.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|e| format!("mkdir {}: {e}", parent.display()))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(dir)
        .map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let mut ar = tar::Archive::new(input);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_preserve_mtime(true);
    ar.set_unpack_xattrs(false);
    ar.set_overwrite(true);
    ar.set_mask(0);
    let mut stats = Stats::default();
    // Directories last, deepest first (as tar's own `unpack`): their modes cannot get in
    // the way of their contents, and their mtimes stay as the archive says.
    let mut dirs = Vec::new();
    let mut top = None;
    let entries = ar
        .entries()
        .map_err(|e| format!("read archive: {}", chain(&e)))?;
    for entry in entries {
        let mut e = entry.map_err(|e| format!("read archive: {}", chain(&e)))?;
        stats.entries += 1;
        let raw = e.path().map_err(|x| format!("entry path: {}", chain(&x)))?;
        let rel = below(&raw)?;
        let kind = e.header().entry_type();
        if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            stats.skipped += 1;
            continue;
        }
        if kind.is_dir() {
            if rel.as_os_str().is_empty() {
                top = Some(e.header().clone());
            } else {
                dirs.push((rel, e));
            }
            continue;
        }
        if !e.unpack_in(dir).map_err(|x| chain(&x))? {
            return Err(format!("entry {} was refused", rel.display()));
        }
    }
    dirs.sort_by(|a, b| b.0.cmp(&a.0));
    for (rel, mut e) in dirs {
        if !e.unpack_in(dir).map_err(|x| chain(&x))? {
            return Err(format!("entry {} was refused", rel.display()));
        }
        let mtime = e.header().mtime().map_err(|x| chain(&x))?;
        set_mtime(&dir.join(&rel), mtime)?;
    }
    if let Some(h) = top {
        apply_top(dir, &h)?;
    }
    Ok(stats)
}

#[cfg(test)]
#[path = "unpack_tests.rs"]
mod tests;
