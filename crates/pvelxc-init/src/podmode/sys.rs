//! Thin wrappers of the syscalls the pod modes make (mount, openat2, mount_setattr, setns,
//! pivot_root, ...): C strings in, `io::Error` out.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// A C string of `s` (an interior NUL is `InvalidInput`).
pub fn cstr(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// mount(2); `None` is a NULL pointer.
pub fn mount(
    src: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let p = |c: Option<&CStr>| c.map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: valid C strings or NULL, as mount(2) accepts.
    let r = unsafe {
        libc::mount(
            p(src),
            target.as_ptr(),
            p(fstype),
            flags,
            p(data).cast::<libc::c_void>(),
        )
    };
    check(r).map(|_| ())
}

/// `/proc/self/fd/N`: a path for mount(2) that names exactly the file `fd` was opened on.
pub fn fd_path(fd: BorrowedFd<'_>) -> CString {
    let mut s = b"/proc/self/fd/".to_vec();
    s.extend_from_slice(fd.as_raw_fd().to_string().as_bytes());
    // Digits and a fixed prefix: no NUL inside.
    CString::new(s).unwrap_or_default()
}

pub fn open(path: &CStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<OwnedFd> {
    // SAFETY: valid C string; the fd returned is new and owned from here on.
    let fd = check(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, mode) })?;
    // SAFETY: a fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn openat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    // SAFETY: valid fd and C string; the fd returned is new and owned from here on.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode,
        )
    })?;
    // SAFETY: a fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `struct open_how` (libc's is non-exhaustive).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// openat2(2) of `rel` below `root` as if `root` were `/`: `..` and absolute symlinks stay
/// inside it (RESOLVE_IN_ROOT), no /proc magic links. `rel` "" opens `root` itself.
pub fn open_in_root(root: BorrowedFd<'_>, rel: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
    let name = cstr(if rel.is_empty() { b"." } else { rel })?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: valid fd, C string and open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            name.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

pub use pvelxc_init::mountattr::{ATTR_NODEV, ATTR_NOEXEC, ATTR_NOSUID, ATTR_RDONLY};

/// Set `MOUNT_ATTR_*` bits on the mount `fd` is the root of (and every mount below it with
/// `recursive`): mount_setattr(2). Kernels before 5.12 (ENOSYS): a bind remount of that one
/// mount, keeping the flags it has (a user namespace may not clear locked ones).
pub fn set_mount_attrs(fd: BorrowedFd<'_>, set: u64, recursive: bool) -> io::Result<()> {
    let Err(e) = pvelxc_init::mountattr::mount_setattr(fd, set, recursive) else {
        return Ok(());
    };
    if e.raw_os_error() != Some(libc::ENOSYS) {
        return Err(e);
    }
    // SAFETY: fstatvfs into local storage.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut st) })?;
    let keep = [
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ];
    let mut ms = libc::MS_BIND | libc::MS_REMOUNT;
    for (st_bit, ms_bit) in keep {
        if st.f_flag & st_bit != 0 {
            ms |= ms_bit;
        }
    }
    for (a, ms_bit) in [
        (ATTR_RDONLY, libc::MS_RDONLY),
        (ATTR_NOSUID, libc::MS_NOSUID),
        (ATTR_NODEV, libc::MS_NODEV),
        (ATTR_NOEXEC, libc::MS_NOEXEC),
    ] {
        if set & a != 0 {
            ms |= ms_bit;
        }
    }
    mount(None, &fd_path(fd), None, ms, None)
}

pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: valid fd and C string.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(|_| ())
}

pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: valid fd and C strings.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(|_| ())
}

/// Is `fd` a directory (fstat, which an O_PATH fd allows)?
pub fn is_dir(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: fstat into local storage.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::unshare(flags) }).map(|_| ())
}

pub fn setns(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain syscall on a valid fd.
    check(unsafe { libc::setns(fd.as_raw_fd(), 0) }).map(|_| ())
}

/// `pivot_root(".", ".")` in the new root, then the old root (now stacked on it) detached:
/// no path of the CT stays reachable. Leaves the cwd at the new `/`.
pub fn pivot_to(root: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain syscalls with valid fds and static C strings.
    unsafe {
        check(libc::fchdir(root.as_raw_fd()))?;
        check(libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int)?;
    }
    // The old root must not propagate its unmount to the CT's mounts.
    mount(None, c".", None, libc::MS_SLAVE | libc::MS_REC, None)?;
    // SAFETY: static C strings.
    unsafe {
        check(libc::umount2(c".".as_ptr(), libc::MNT_DETACH))?;
        check(libc::chdir(c"/".as_ptr()))?;
    }
    Ok(())
}

/// One `write(2)` of all of `b` to `fd` (a cgroup file: short writes are errors).
pub fn write_all(fd: RawFd, b: &[u8]) -> io::Result<()> {
    // SAFETY: writes a live buffer.
    let n = unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else if n as usize != b.len() {
        Err(io::Error::from(io::ErrorKind::WriteZero))
    } else {
        Ok(())
    }
}
