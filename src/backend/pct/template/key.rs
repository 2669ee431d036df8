//! The content digest of a rootfs tree: what a template is named after.
//!
//! sha256 over a pre-order walk with siblings sorted by name (byte order), one record per
//! entry: relative path, type, permission bits (07777), uid, gid, and by type the file's
//! length and bytes (regular files), the link target (symlinks), the device numbers
//! (character and block devices). Fields are length-prefixed, so the record stream is
//! unambiguous. mtimes, xattrs and sockets are not part of it: the template is a plain GNU tar
//! without `--xattrs` (and tar skips sockets), so trees that differ only there make equal
//! templates. Hard links hash as the regular files they are.
//!
//! The walk never follows a symlink: every entry is `fstatat(AT_SYMLINK_NOFOLLOW)` relative to
//! its directory's fd, directories are opened with `O_NOFOLLOW|O_DIRECTORY` via `openat`, and a
//! regular file is opened `O_NOFOLLOW|O_NONBLOCK` and checked (fstat) to still be the regular
//! file that was stat'ed before a byte is read. Only the tree root itself may be a symlink.

use std::ffi::OsStr;
use std::io::Read;
use std::os::fd::{AsFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// First uid/gid an unprivileged CT cannot map (Proxmox maps 0:100000:65536).
pub const UNPRIVILEGED_ID_LIMIT: u32 = 65536;
/// Deeper trees are refused (one open directory fd per level).
const MAX_DEPTH: usize = 256;

/// How to walk.
#[derive(Debug, Clone, Copy, Default)]
pub struct WalkOpts {
    /// Refuse entries whose uid or gid an unprivileged CT cannot map.
    pub unprivileged: bool,
}

/// Hex sha256 of the tree at `root` (see the module doc); an `InvalidArgument` error for the
/// first entry an unprivileged CT could not own.
pub fn content_digest(root: &Path, opts: WalkOpts) -> Result<String> {
    let dir = nix::fcntl::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(format!("open rootfs {}", root.display()), e.into()))?;
    let st = nix::sys::stat::fstat(&dir)
        .map_err(|e| Error::io(format!("stat rootfs {}", root.display()), e.into()))?;
    let mut w = Walker {
        h: Sha256::new(),
        opts,
        buf: vec![0; 1 << 16],
    };
    w.h.update(b"pvelxc-content-v2\0");
    w.entry(b"", &st, root)?;
    w.dir(dir, &mut Vec::new(), root, 0)?;
    Ok(hex(&w.h.finalize()))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct Walker {
    h: Sha256,
    opts: WalkOpts,
    buf: Vec<u8>,
}

fn kind(st: &FileStat) -> Option<u8> {
    let fmt = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    Some(match fmt {
        SFlag::S_IFREG => b'f',
        SFlag::S_IFDIR => b'd',
        SFlag::S_IFLNK => b'l',
        SFlag::S_IFCHR => b'c',
        SFlag::S_IFBLK => b'b',
        SFlag::S_IFIFO => b'p',
        _ => return None, // sockets: GNU tar skips them
    })
}

impl Walker {
    fn field(&mut self, b: &[u8]) {
        self.h.update((b.len() as u64).to_le_bytes());
        self.h.update(b);
    }

    /// The part of a record every type has; checks the id range.
    fn entry(&mut self, rel: &[u8], st: &FileStat, root: &Path) -> Result<()> {
        let limit = UNPRIVILEGED_ID_LIMIT;
        if self.opts.unprivileged && (st.st_uid >= limit || st.st_gid >= limit) {
            return Err(Error::invalid(format!(
                "rootfs file /{} is owned by uid {} gid {}: an unprivileged CT maps only ids \
                 0-{} (the first offending file under {}); remap the image's ownership or set \
                 [pct] unprivileged = false",
                String::from_utf8_lossy(rel),
                st.st_uid,
                st.st_gid,
                limit - 1,
                root.display()
            )));
        }
        let k = kind(st).unwrap_or(b's');
        self.field(rel);
        self.field(&[k]);
        let ids = format!("{:o}:{}:{}", st.st_mode & 0o7777, st.st_uid, st.st_gid);
        self.field(ids.as_bytes());
        Ok(())
    }

    fn dir(&mut self, dir: OwnedFd, rel: &mut Vec<u8>, root: &Path, depth: usize) -> Result<()> {
        if depth >= MAX_DEPTH {
            return Err(Error::invalid(format!(
                "rootfs {} is nested deeper than {MAX_DEPTH} directories",
                root.display()
            )));
        }
        let shown = |rel: &[u8]| format!("{}/{}", root.display(), String::from_utf8_lossy(rel));
        let mut names = list_dir(&dir).map_err(|e| Error::io(format!("read {}", shown(rel)), e))?;
        names.sort();
        for name in names {
            let base = rel.len();
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(&name);
            let r = self.child(&dir, &name, rel, root, depth);
            rel.truncate(base);
            r?;
        }
        Ok(())
    }

    fn child(
        &mut self,
        dir: &OwnedFd,
        name: &[u8],
        rel: &mut Vec<u8>,
        root: &Path,
        depth: usize,
    ) -> Result<()> {
        let shown = format!("{}/{}", root.display(), String::from_utf8_lossy(rel));
        let cname = OsStr::from_bytes(name);
        let st = nix::sys::stat::fstatat(dir, cname, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| Error::io(format!("stat {shown}"), e.into()))?;
        let Some(k) = kind(&st) else {
            return Ok(());
        };
        self.entry(rel, &st, root)?;
        match k {
            b'f' => {
                let fd = nix::fcntl::openat(
                    dir,
                    cname,
                    OFlag::O_RDONLY
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_NONBLOCK
                        | OFlag::O_NOCTTY
                        | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| Error::io(format!("open {shown}"), e.into()))?;
                self.file(fd, &st, &shown)?;
            }
            b'l' => {
                let t = nix::fcntl::readlinkat(dir, cname)
                    .map_err(|e| Error::io(format!("readlink {shown}"), e.into()))?;
                self.field(t.as_bytes());
            }
            b'c' | b'b' => {
                let dev = format!("{}:{}", libc::major(st.st_rdev), libc::minor(st.st_rdev));
                self.field(dev.as_bytes());
            }
            b'd' => {
                let sub = nix::fcntl::openat(
                    dir,
                    cname,
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| Error::io(format!("open {shown}"), e.into()))?;
                self.dir(sub, rel, root, depth + 1)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Length and bytes of a regular file, after checking the fd is the inode that was stat'ed.
    fn file(&mut self, fd: OwnedFd, st: &FileStat, shown: &str) -> Result<()> {
        let now = nix::sys::stat::fstat(fd.as_fd())
            .map_err(|e| Error::io(format!("stat {shown}"), e.into()))?;
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) || kind(&now) != Some(b'f') {
            return Err(Error::invalid(format!(
                "rootfs file {shown} changed while it was hashed"
            )));
        }
        let mut f = std::fs::File::from(fd);
        let mut fh = Sha256::new();
        let mut len = 0u64;
        loop {
            let n = match f.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(format!("read {shown}"), e)),
            };
            fh.update(&self.buf[..n]);
            len += n as u64;
        }
        self.field(&len.to_le_bytes());
        self.field(&fh.finalize());
        Ok(())
    }
}

/// The names in a directory (without `.` and `..`), read through a duplicate of its fd.
fn list_dir(dir: &OwnedFd) -> std::io::Result<Vec<Vec<u8>>> {
    let dup = nix::unistd::dup(dir)?.into_raw_fd();
    // SAFETY: `dup` is an open directory fd that fdopendir takes over (closed by closedir,
    // or here when fdopendir fails); entries are copied out before the next readdir.
    unsafe {
        let d = libc::fdopendir(dup);
        if d.is_null() {
            let e = std::io::Error::last_os_error();
            libc::close(dup);
            return Err(e);
        }
        // The duplicate shares the file offset: start from the beginning.
        libc::rewinddir(d);
        let mut names = Vec::new();
        let res = loop {
            *libc::__errno_location() = 0;
            let ent = libc::readdir(d);
            if ent.is_null() {
                let errno = *libc::__errno_location();
                break if errno == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::from_raw_os_error(errno))
                };
            }
            let n = std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()).to_bytes();
            if n != b"." && n != b".." {
                names.push(n.to_vec());
            }
        };
        libc::closedir(d);
        res.map(|()| names)
    }
}
