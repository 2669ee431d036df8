//! Preparing a host directory for a 9p share with `security_model=mapped-xattr`.
//!
//! With mapped-xattr QEMU never applies guest ownership, modes or device numbers to host files:
//! it stores them in `user.virtfs.{uid,gid,mode,rdev}` xattrs and creates plain 0600/0700 files
//! owned by QEMU's own uid. Files *without* those xattrs are shown to the guest with their host
//! metadata, except symlinks: QEMU reads a symlink's target from the file's *content* (it opens
//! it with `O_NOFOLLOW`), so a real host symlink reads as ELOOP in the guest. Device nodes, fifos
//! and sockets would be opened as the real host objects.
//!
//! [`prepare`] therefore rewrites a tree once, before the VM boots: every entry gets the xattrs
//! recording what the guest must see (its current uid, gid, mode, rdev); symlinks become regular
//! files holding the target; device nodes, fifos and sockets become empty regular files; and
//! every file is made QEMU's (`owner`, mode 0600, directories 0700), so a QEMU running as an
//! unprivileged user can serve it and nothing in the tree is setuid or a device on the host.
//! Entries that already carry `user.virtfs.mode` keep their host metadata (idempotent; hard links
//! are handled once). Never follows a symlink: everything is `*at()` on directory fds opened with
//! `O_NOFOLLOW`.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::VmError;

const X_UID: &CStr = c"user.virtfs.uid";
const X_GID: &CStr = c"user.virtfs.gid";
const X_MODE: &CStr = c"user.virtfs.mode";
const X_RDEV: &CStr = c"user.virtfs.rdev";

/// Directory nesting deeper than this is refused (each level holds one fd).
pub const MAX_DEPTH: usize = 256;

/// What [`prepare`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PrepareStats {
    /// Entries given xattrs (and the owner).
    pub mapped: u64,
    /// Symlinks turned into mapped files.
    pub symlinks: u64,
    /// Device nodes, fifos and sockets turned into empty mapped files.
    pub specials: u64,
    /// Entries that were already mapped.
    pub skipped: u64,
}

fn last_err(what: &str, path: &Path) -> VmError {
    VmError::io(
        format!("preparing {} for 9p ({what})", path.display()),
        io::Error::last_os_error(),
    )
}

fn cstr(path: &Path) -> Result<CString, VmError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| VmError::Config(format!("path {} contains NUL", path.display())))
}

fn open_at(dir: i32, name: &CStr, flags: i32, mode: libc::mode_t) -> Option<OwnedFd> {
    // SAFETY: openat(2) with a valid dir fd and NUL-terminated name; a new fd or -1.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    // SAFETY: a fresh fd we own from here on.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: i32) -> Option<libc::stat> {
    // SAFETY: an all-zero stat is a valid value for fstat to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat(2) writes into our stat.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some(st)
}

fn lstat_at(dir: i32, name: &CStr) -> Option<libc::stat> {
    // SAFETY: as above; AT_SYMLINK_NOFOLLOW never follows the last component.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstatat(2) with a valid dir fd, a NUL-terminated name and our stat.
    let rc = unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    (rc == 0).then_some(st)
}

fn has_mode_xattr(fd: i32) -> bool {
    let mut buf = [0u8; 4];
    // SAFETY: fgetxattr(2) writes at most buf.len() bytes into buf.
    let n = unsafe { libc::fgetxattr(fd, X_MODE.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    n > 0
}

fn set_xattr(fd: i32, name: &CStr, val: &[u8]) -> bool {
    // SAFETY: fsetxattr(2) reads val.len() bytes from val.
    unsafe { libc::fsetxattr(fd, name.as_ptr(), val.as_ptr().cast(), val.len(), 0) == 0 }
}

/// Records what the guest must see, in QEMU's encoding (little-endian u32s, u64 rdev).
fn set_guest_meta(fd: i32, st: &libc::stat) -> bool {
    let mut ok = set_xattr(fd, X_UID, &st.st_uid.to_le_bytes())
        && set_xattr(fd, X_GID, &st.st_gid.to_le_bytes())
        && set_xattr(fd, X_MODE, &st.st_mode.to_le_bytes());
    let fmt = st.st_mode & libc::S_IFMT;
    if fmt == libc::S_IFCHR || fmt == libc::S_IFBLK {
        ok = ok && set_xattr(fd, X_RDEV, &st.st_rdev.to_le_bytes());
    }
    ok
}

/// The host side of a mapped file: QEMU's owner, no special bits.
fn set_host_meta(fd: i32, is_dir: bool, owner: Option<(u32, u32)>) -> bool {
    if let Some((uid, gid)) = owner {
        // SAFETY: fchown(2) on an fd we hold.
        if unsafe { libc::fchown(fd, uid, gid) } != 0 {
            return false;
        }
    }
    let mode = if is_dir { 0o700 } else { 0o600 };
    // SAFETY: fchmod(2) on an fd we hold.
    unsafe { libc::fchmod(fd, mode) == 0 }
}

struct Walker<'a> {
    root: &'a Path,
    owner: Option<(u32, u32)>,
    stats: PrepareStats,
}

impl Walker<'_> {
    /// Maps the inode behind `fd` (already open, never through a symlink).
    fn map_fd(&mut self, fd: i32, st: &libc::stat) -> Result<(), VmError> {
        if has_mode_xattr(fd) {
            self.stats.skipped += 1;
            return Ok(());
        }
        if !set_guest_meta(fd, st) {
            return Err(last_err("set user.virtfs xattrs", self.root));
        }
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if !set_host_meta(fd, is_dir, self.owner) {
            return Err(last_err("chown/chmod", self.root));
        }
        self.stats.mapped += 1;
        Ok(())
    }

    /// Replaces a symlink or special file `name` in `dir` with a regular mapped file holding
    /// `content`, recording `st` as what the guest sees.
    fn replace(
        &mut self,
        dir: i32,
        name: &CStr,
        st: &libc::stat,
        content: &[u8],
    ) -> Result<(), VmError> {
        // SAFETY: unlinkat(2) of a name in a dir fd we hold (never a directory here).
        if unsafe { libc::unlinkat(dir, name.as_ptr(), 0) } != 0 {
            return Err(last_err("unlink", self.root));
        }
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let fd = open_at(dir, name, flags, 0o600).ok_or_else(|| last_err("create", self.root))?;
        let mut done = 0;
        while done < content.len() {
            let rest = &content[done..];
            // SAFETY: write(2) from a live slice.
            let n = unsafe { libc::write(fd.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
            if n <= 0 {
                return Err(last_err("write", self.root));
            }
            done += n as usize;
        }
        if !set_guest_meta(fd.as_raw_fd(), st) || !set_host_meta(fd.as_raw_fd(), false, self.owner)
        {
            return Err(last_err("set metadata", self.root));
        }
        self.stats.mapped += 1;
        Ok(())
    }

    fn walk(&mut self, dir: &OwnedFd, depth: usize) -> Result<(), VmError> {
        if depth > MAX_DEPTH {
            return Err(VmError::Config(format!(
                "{} nests directories deeper than {MAX_DEPTH} levels",
                self.root.display()
            )));
        }
        for name in
            list(dir).map_err(|e| VmError::io(format!("listing {}", self.root.display()), e))?
        {
            let d = dir.as_raw_fd();
            let Some(st) = lstat_at(d, &name) else {
                continue; // vanished
            };
            match st.st_mode & libc::S_IFMT {
                libc::S_IFLNK => {
                    let target = read_link_at(d, &name).map_err(|e| {
                        VmError::io(format!("readlink in {}", self.root.display()), e)
                    })?;
                    self.replace(d, &name, &st, &target)?;
                    self.stats.symlinks += 1;
                }
                libc::S_IFDIR => {
                    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
                    let sub = open_at(d, &name, flags, 0)
                        .ok_or_else(|| last_err("open dir", self.root))?;
                    self.walk(&sub, depth + 1)?;
                    self.map_fd(sub.as_raw_fd(), &st)?;
                }
                libc::S_IFREG => {
                    let flags =
                        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
                    let f = open_at(d, &name, flags, 0)
                        .ok_or_else(|| last_err("open file", self.root))?;
                    let now = fstat(f.as_raw_fd()).ok_or_else(|| last_err("fstat", self.root))?;
                    if now.st_mode & libc::S_IFMT != libc::S_IFREG {
                        return Err(VmError::Config(format!(
                            "{} changed while being prepared",
                            self.root.display()
                        )));
                    }
                    self.map_fd(f.as_raw_fd(), &now)?;
                }
                _ => {
                    self.replace(d, &name, &st, &[])?;
                    self.stats.specials += 1;
                }
            }
        }
        Ok(())
    }
}

/// The names in a directory (not `.`/`..`), read fully before anything is changed.
fn list(dir: &OwnedFd) -> io::Result<Vec<CString>> {
    // fdopendir takes ownership of its fd: give it a duplicate.
    // SAFETY: dup(2) of an fd we hold.
    let dup = unsafe { libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fdopendir(3) on our fresh dup; on success the DIR owns it.
    let dp = unsafe { libc::fdopendir(dup) };
    if dp.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: the dup is still ours when fdopendir failed.
        unsafe { libc::close(dup) };
        return Err(e);
    }
    // SAFETY: rewind in case the fd's offset was moved.
    unsafe { libc::rewinddir(dp) };
    let mut out = Vec::new();
    loop {
        // SAFETY: readdir(3) on a live DIR; the entry stays valid until the next call.
        let ent = unsafe { libc::readdir(dp) };
        if ent.is_null() {
            break;
        }
        // SAFETY: d_name is NUL-terminated within the dirent.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) };
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            out.push(name.to_owned());
        }
    }
    // SAFETY: closes the DIR and the dup it owns.
    unsafe { libc::closedir(dp) };
    Ok(out)
}

fn read_link_at(dir: i32, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: readlinkat(2) writes at most buf.len() bytes.
    let n = unsafe { libc::readlinkat(dir, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// Prepares `root` for a mapped-xattr share served by a QEMU running as `owner` (None: QEMU is
/// root and host ownership is left alone; modes are still reduced to 0600/0700).
pub fn prepare(root: &Path, owner: Option<(u32, u32)>) -> Result<PrepareStats, VmError> {
    let c = cstr(root)?;
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
    let top = open_at(libc::AT_FDCWD, &c, flags, 0).ok_or_else(|| last_err("open", root))?;
    let st = fstat(top.as_raw_fd()).ok_or_else(|| last_err("fstat", root))?;
    let mut w = Walker {
        root,
        owner,
        stats: PrepareStats::default(),
    };
    w.walk(&top, 0)?;
    w.map_fd(top.as_raw_fd(), &st)?;
    Ok(w.stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn xattr_u32(p: &Path, name: &CStr) -> Option<u32> {
        let c = cstr(p).ok()?;
        let mut b = [0u8; 4];
        // SAFETY: lgetxattr(2) writes at most 4 bytes.
        let n = unsafe { libc::lgetxattr(c.as_ptr(), name.as_ptr(), b.as_mut_ptr().cast(), 4) };
        (n == 4).then(|| u32::from_le_bytes(b))
    }

    #[test]
    fn maps_files_symlinks_and_fifos_once() {
        let dir = std::env::temp_dir().join(format!("pvelxc-mapped-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/f"), b"x").unwrap();
        std::fs::set_permissions(dir.join("sub/f"), std::fs::Permissions::from_mode(0o4755))
            .unwrap();
        std::fs::hard_link(dir.join("sub/f"), dir.join("hl")).unwrap();
        std::os::unix::fs::symlink("sub/f", dir.join("ln")).unwrap();
        nix::unistd::mkfifo(
            &dir.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let st = prepare(&dir, None).unwrap();
        assert_eq!(st.symlinks, 1);
        assert_eq!(st.specials, 1);
        assert_eq!(st.skipped, 1, "the hard link is mapped once: {st:?}");
        let ln = std::fs::symlink_metadata(dir.join("ln")).unwrap();
        assert!(ln.is_file());
        assert_eq!(std::fs::read(dir.join("ln")).unwrap(), b"sub/f");
        assert_eq!(
            xattr_u32(&dir.join("ln"), X_MODE).unwrap() & libc::S_IFMT,
            libc::S_IFLNK
        );
        let f = std::fs::metadata(dir.join("sub/f")).unwrap();
        assert_eq!(f.mode() & 0o7777, 0o600, "no setuid bit left on the host");
        assert_eq!(
            xattr_u32(&dir.join("sub/f"), X_MODE).unwrap(),
            libc::S_IFREG | 0o4755
        );
        assert!(std::fs::symlink_metadata(dir.join("fifo"))
            .unwrap()
            .is_file());
        assert_eq!(
            xattr_u32(&dir.join("fifo"), X_MODE).unwrap() & libc::S_IFMT,
            libc::S_IFIFO
        );
        assert_eq!(
            std::fs::metadata(dir.join("sub")).unwrap().mode() & 0o777,
            0o700
        );
        // Idempotent.
        let again = prepare(&dir, None).unwrap();
        assert_eq!((again.mapped, again.symlinks, again.specials), (0, 0, 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
