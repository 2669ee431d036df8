//! Hostile-input-safe file operations for D: everything relative to a directory fd, no
//! symlink followed, regular files only, exclusive creates, size-capped non-blocking reads.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use pvelxc_init::proto::ExitRecord;

use crate::error::{Error, Result};

/// An exit record is one small JSON line; anything bigger is not one.
pub const MAX_EXIT_RECORD: u64 = 4096;

fn cstr(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::internal(format!("NUL in file name {s:?}")))
}

/// Open a directory we made (no symlink as the last component).
pub fn open_dir(p: &Path) -> Result<OwnedFd> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(p)
        .map_err(|e| Error::io(format!("open directory {}", p.display()), e))?;
    Ok(OwnedFd::from(f))
}

/// Create `name` in `dir` exclusively (O_EXCL|O_NOFOLLOW), owned root:`gid`, mode 0640.
pub fn write_new(dir: BorrowedFd<'_>, name: &str, data: &[u8], gid: u32) -> Result<()> {
    let c = cstr(name)?;
    // SAFETY: openat with a valid dirfd and C string; the fd is owned below.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(Error::io(
            format!("create {name}"),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fd was just returned by openat and is owned by nobody else.
    let f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let done = (|| {
        use std::io::Write;
        (&f).write_all(data)?;
        std::os::unix::fs::fchown(&f, Some(0), Some(gid))?;
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o640))
    })();
    done.map_err(|e| Error::io(format!("write {name}"), e))
}

/// Unlink `name` in `dir` (never a directory); absent is fine.
pub fn unlink(dir: BorrowedFd<'_>, name: &str) {
    if let Ok(c) = CString::new(name) {
        // SAFETY: unlinkat with a valid dirfd and C string.
        unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) };
    }
}

/// Read `name` from `dir` if it is a regular file of at most `cap` bytes: opened with
/// O_NOFOLLOW (a symlink fails), O_NONBLOCK (a FIFO cannot block us) and checked with fstat
/// before any read. `Err` carries why the file was refused.
pub fn read_regular(dir: BorrowedFd<'_>, name: &str, cap: u64) -> std::io::Result<Vec<u8>> {
    let c = CString::new(name).map_err(std::io::Error::other)?;
    // SAFETY: openat with a valid dirfd and C string; the fd is owned below.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by openat and is owned by nobody else.
    let f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let md = f.metadata()?;
    if !md.file_type().is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if md.len() > cap {
        return Err(std::io::Error::other(format!(
            "{} bytes, more than {cap}",
            md.len()
        )));
    }
    let mut buf = Vec::new();
    f.take(cap + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > cap {
        return Err(std::io::Error::other("grew past the cap while read"));
    }
    Ok(buf)
}

/// The exit record in the CT-writable `rw/` directory, validated: an exit code 0..=255, a
/// signal 1..=64, an error message of bounded length without control characters.
pub fn read_exit_at(rw: BorrowedFd<'_>) -> Option<ExitRecord> {
    let b = match read_regular(rw, super::EXIT_FILE, MAX_EXIT_RECORD) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            log::warn!("ignoring the CT's exit record: {e}");
            return None;
        }
    };
    let mut r = match ExitRecord::from_json(&b) {
        Ok(r) => r,
        Err(e) => {
            log::warn!("ignoring the CT's exit record: {e}");
            return None;
        }
    };
    if !(0..=255).contains(&r.exit_code) || r.signal.is_some_and(|s| !(1..=64).contains(&s)) {
        log::warn!(
            "ignoring the CT's exit record: exit code {} / signal {:?} out of range",
            r.exit_code,
            r.signal
        );
        return None;
    }
    r.error = r.error.map(|m| {
        m.chars()
            .filter(|c| !c.is_control())
            .take(512)
            .collect::<String>()
    });
    Some(r)
}

/// The init binary the shim ships: `init_path`, else `pvelxc-init` next to the shim.
pub fn find_init(init_path: &str) -> std::result::Result<PathBuf, String> {
    let p = if init_path.is_empty() {
        std::env::current_exe()
            .map_err(|e| format!("cannot locate the shim binary: {e}"))?
            .with_file_name("pvelxc-init")
    } else {
        PathBuf::from(init_path)
    };
    if !p.is_file() {
        return Err(format!(
            "the CT init {} does not exist (set [pct] init_path, or install a static pvelxc-init \
             next to the shim)",
            p.display()
        ));
    }
    if is_dynamic_elf(&p).unwrap_or(false) {
        return Err(format!(
            "the CT init {} is dynamically linked; CTs have no libc to offer it: build it with \
             RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release -p pvelxc-init \
             --target x86_64-unknown-linux-gnu",
            p.display()
        ));
    }
    Ok(p)
}

/// Whether an ELF64 little-endian file has a PT_INTERP program header.
fn is_dynamic_elf(p: &Path) -> std::io::Result<bool> {
    let mut f = std::fs::File::open(p)?;
    let mut buf = Vec::new();
    f.by_ref().take(64 * 1024).read_to_end(&mut buf)?;
    let u16_at = |o: usize| buf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |o: usize| {
        buf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        buf.get(o..o + 8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    };
    if buf.get(..5) != Some(b"\x7fELF\x02") {
        return Ok(false);
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return Ok(false);
    };
    for i in 0..usize::from(phnum) {
        let off = phoff as usize + i * usize::from(phentsize);
        if u32_at(off) == Some(3) {
            return Ok(true);
        }
    }
    Ok(false)
}
