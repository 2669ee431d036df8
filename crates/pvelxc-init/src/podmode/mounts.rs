//! The container's root, built by its process after fork, in its own mount namespace: the
//! root directory bound onto itself, each [`Mount`] below it in order, maskedPaths,
//! readonlyPaths, `pivot_root`, and `/` read-only last when asked.
//!
//! Destinations resolve below the root as if it were `/` (openat2 `RESOLVE_IN_ROOT`: an image's
//! `/var/run -> /run` leads to its own `/run`, never to the CT's) and every mount targets the
//! resolved file through `/proc/self/fd/N`. A missing mountpoint is made (a directory, or an
//! empty file for a bind of a file); one that exists is used as is, so a read-only root works.

use super::opts::MountOpts;
use super::sys::{self, ATTR_RDONLY};
use pvelxc_init::pod::{ContainerSpec, Mount, MountKind};
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

/// The CT's device nodes bound into a container's `/dev` tmpfs (missing ones are left out).
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// The links every container's `/dev` has.
const DEV_LINKS: [(&str, &str); 5] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
];

/// `/a//b/./c/` → `["a", "b", "c"]` (`..` never reaches here: `pod::parse_spec` refuses it).
fn components(p: &str) -> Vec<&str> {
    p.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect()
}

fn is(e: &io::Error, errno: i32) -> bool {
    e.raw_os_error() == Some(errno)
}

fn open_at_root(root: BorrowedFd<'_>, comps: &[&str]) -> io::Result<OwnedFd> {
    sys::open_in_root(root, comps.join("/").as_bytes(), libc::O_PATH)
}

/// An O_PATH fd of the destination below `root`, made first when missing (parents as 0755
/// directories, the last one a directory when `dir`, else an empty 0644 file).
fn ensure(root: BorrowedFd<'_>, comps: &[&str], dir: bool) -> io::Result<OwnedFd> {
    match open_at_root(root, comps) {
        Err(e) if is(&e, libc::ENOENT) => {}
        other => return other,
    }
    let mut parent = sys::open_in_root(root, b"", libc::O_PATH)?;
    for i in 0..comps.len() {
        match open_at_root(root, &comps[..=i]) {
            Ok(fd) => {
                parent = fd;
                continue;
            }
            Err(e) if is(&e, libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
        let name = sys::cstr(comps[i].as_bytes())?;
        let made = if i + 1 == comps.len() && !dir {
            let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW;
            sys::openat(parent.as_fd(), &name, flags, 0o644).map(drop)
        } else {
            sys::mkdirat(parent.as_fd(), &name, 0o755)
        };
        match made {
            Err(e) if !is(&e, libc::EEXIST) => return Err(e),
            _ => {}
        }
        // ENOENT again here: a dangling symlink stands in the way.
        parent = open_at_root(root, &comps[..=i])?;
    }
    Ok(parent)
}

/// Build the root (see the module doc) and `pivot_root` into it. Runs in the container's
/// process, which already has a mount namespace of its own.
pub fn build_root(spec: &ContainerSpec) -> Result<(), String> {
    let e = |what: &str, err: io::Error| format!("{what}: {err}");
    sys::mount(None, c"/", None, libc::MS_REC | libc::MS_SLAVE, None)
        .map_err(|x| e("make / rslave", x))?;
    let root = sys::cstr(spec.root.as_bytes()).map_err(|x| e("root", x))?;
    sys::mount(Some(&root), &root, None, libc::MS_BIND | libc::MS_REC, None)
        .map_err(|x| e(&format!("bind {}", spec.root), x))?;
    let rootfd = sys::open(&root, libc::O_PATH | libc::O_DIRECTORY, 0)
        .map_err(|x| e(&format!("open {}", spec.root), x))?;
    let r = rootfd.as_fd();
    for m in &spec.mounts {
        apply(r, m).map_err(|x| format!("mount {} ({}): {x}", m.destination, kind_name(m)))?;
    }
    for p in &spec.masked_paths {
        mask(r, p).map_err(|x| e(&format!("masked path {p}"), x))?;
    }
    for p in &spec.readonly_paths {
        readonly(r, p).map_err(|x| e(&format!("readonly path {p}"), x))?;
    }
    sys::pivot_to(r).map_err(|x| e("pivot_root", x))?;
    drop(rootfd);
    if spec.readonly_root {
        let fd =
            sys::open(c"/", libc::O_PATH | libc::O_DIRECTORY, 0).map_err(|x| e("open /", x))?;
        sys::set_mount_attrs(fd.as_fd(), ATTR_RDONLY, false)
            .map_err(|x| e("remount / read-only", x))?;
    }
    Ok(())
}

fn kind_name(m: &Mount) -> &'static str {
    match m.kind {
        MountKind::Proc => "proc",
        MountKind::Tmpfs => "tmpfs",
        MountKind::Devpts => "devpts",
        MountKind::Mqueue => "mqueue",
        MountKind::Sysfs => "sysfs",
        MountKind::Cgroup => "cgroup",
        MountKind::Bind { .. } => "bind",
    }
}

fn apply(root: BorrowedFd<'_>, m: &Mount) -> io::Result<()> {
    let comps = components(&m.destination);
    if comps.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a mount on / is not supported",
        ));
    }
    let o = MountOpts::parse(&m.options);
    match &m.kind {
        MountKind::Bind { source } => bind(
            root,
            &comps,
            source.as_bytes(),
            o.recursive,
            o.attrs,
            o.rattrs,
        )?,
        // The CT's own, read-only all the way down (its cgroup mounts included).
        MountKind::Sysfs => bind(root, &comps, b"/sys", true, 0, o.attrs | ATTR_RDONLY)?,
        MountKind::Cgroup => bind(
            root,
            &comps,
            b"/sys/fs/cgroup",
            true,
            0,
            o.attrs | ATTR_RDONLY,
        )?,
        MountKind::Proc => fresh(root, &comps, c"proc", &o, None)?,
        MountKind::Mqueue => fresh(root, &comps, c"mqueue", &o, None)?,
        MountKind::Tmpfs => {
            fresh(root, &comps, c"tmpfs", &o, None)?;
            if comps == ["dev"] {
                populate_dev(root)?;
            }
        }
        MountKind::Devpts => devpts(root, &comps, &o)?,
    }
    if o.propagation != 0 {
        let fd = open_at_root(root, &comps)?;
        sys::mount(None, &sys::fd_path(fd.as_fd()), None, o.propagation, None)?;
    }
    Ok(())
}

/// A bind of the CT path `src`, then its attributes: `attrs` on the new mount, `rattrs` on it
/// and every mount below it.
fn bind(
    root: BorrowedFd<'_>,
    comps: &[&str],
    src: &[u8],
    recursive: bool,
    attrs: u64,
    rattrs: u64,
) -> io::Result<()> {
    let meta = std::fs::metadata(OsStr::from_bytes(src)).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("source {}: {e}", String::from_utf8_lossy(src)),
        )
    })?;
    let fd = ensure(root, comps, meta.is_dir())?;
    let rec = if recursive { libc::MS_REC } else { 0 };
    let src = sys::cstr(src)?;
    sys::mount(
        Some(&src),
        &sys::fd_path(fd.as_fd()),
        None,
        libc::MS_BIND | rec,
        None,
    )?;
    if attrs | rattrs != 0 {
        // Reopened: the fd above names the mountpoint, this one the new mount.
        let top = open_at_root(root, comps)?;
        if rattrs != 0 {
            sys::set_mount_attrs(top.as_fd(), rattrs, true)?;
        }
        if attrs & !rattrs != 0 {
            sys::set_mount_attrs(top.as_fd(), attrs, false)?;
        }
    }
    Ok(())
}

/// A new instance of `fstype` (flags and data from the options, or `data`).
fn fresh(
    root: BorrowedFd<'_>,
    comps: &[&str],
    fstype: &std::ffi::CStr,
    o: &MountOpts,
    data: Option<String>,
) -> io::Result<()> {
    let fd = ensure(root, comps, true)?;
    let data = match data.or_else(|| o.data_string()) {
        Some(d) => Some(sys::cstr(d.as_bytes())?),
        None => None,
    };
    sys::mount(
        Some(fstype),
        &sys::fd_path(fd.as_fd()),
        Some(fstype),
        o.flags,
        data.as_deref(),
    )
}

/// devpts with `newinstance,ptmxmode=0666,mode=0620` unless the options say otherwise, and
/// `gid=5` when the user namespace maps it (tried first, then left out).
fn devpts(root: BorrowedFd<'_>, comps: &[&str], o: &MountOpts) -> io::Result<()> {
    let mut data: Vec<String> = o
        .data
        .iter()
        .filter(|d| !d.starts_with("gid="))
        .cloned()
        .collect();
    for (key, default) in [
        ("newinstance", "newinstance"),
        ("ptmxmode", "ptmxmode=0666"),
        ("mode", "mode=0620"),
    ] {
        if !o.has(key) {
            data.push(default.to_string());
        }
    }
    let gid = o
        .data
        .iter()
        .find(|d| d.starts_with("gid="))
        .cloned()
        .unwrap_or_else(|| "gid=5".to_string());
    let with_gid = format!("{},{gid}", data.join(","));
    match fresh(root, comps, c"devpts", o, Some(with_gid)) {
        Err(e) if is(&e, libc::EINVAL) || is(&e, libc::EPERM) => {
            fresh(root, comps, c"devpts", o, Some(data.join(",")))
        }
        other => other,
    }
}

/// The CT's device nodes bound onto empty files in the new `/dev`, and the usual links.
fn populate_dev(root: BorrowedFd<'_>) -> io::Result<()> {
    let dev = sys::open_in_root(root, b"dev", libc::O_PATH | libc::O_DIRECTORY)?;
    for name in DEVICES {
        let src = format!("/dev/{name}");
        if std::fs::symlink_metadata(&src).is_err() {
            continue;
        }
        let cname = sys::cstr(name.as_bytes())?;
        let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW;
        let f = sys::openat(dev.as_fd(), &cname, flags, 0o666)?;
        let src = sys::cstr(src.as_bytes())?;
        sys::mount(
            Some(&src),
            &sys::fd_path(f.as_fd()),
            None,
            libc::MS_BIND,
            None,
        )?;
    }
    for (name, target) in DEV_LINKS {
        let (name, target) = (sys::cstr(name.as_bytes())?, sys::cstr(target.as_bytes())?);
        match sys::symlinkat(&target, dev.as_fd(), &name) {
            Err(e) if !is(&e, libc::EEXIST) => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Missing paths are ignored (ENOENT, ENOTDIR), as runc does.
fn existing(root: BorrowedFd<'_>, p: &str) -> io::Result<Option<OwnedFd>> {
    let comps = components(p);
    if comps.is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not for /"));
    }
    match open_at_root(root, &comps) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if is(&e, libc::ENOENT) || is(&e, libc::ENOTDIR) => Ok(None),
        Err(e) => Err(e),
    }
}

/// maskedPaths: an empty read-only tmpfs over a directory, the CT's /dev/null over a file.
fn mask(root: BorrowedFd<'_>, p: &str) -> io::Result<()> {
    let Some(fd) = existing(root, p)? else {
        return Ok(());
    };
    let target = sys::fd_path(fd.as_fd());
    if sys::is_dir(fd.as_fd())? {
        sys::mount(
            Some(c"tmpfs"),
            &target,
            Some(c"tmpfs"),
            libc::MS_RDONLY,
            None,
        )
    } else {
        sys::mount(Some(c"/dev/null"), &target, None, libc::MS_BIND, None)
    }
}

/// readonlyPaths: bound onto themselves, then read-only with everything below.
fn readonly(root: BorrowedFd<'_>, p: &str) -> io::Result<()> {
    let Some(fd) = existing(root, p)? else {
        return Ok(());
    };
    let path = sys::fd_path(fd.as_fd());
    sys::mount(Some(&path), &path, None, libc::MS_BIND | libc::MS_REC, None)?;
    let top = open_at_root(root, &components(p))?;
    sys::set_mount_attrs(top.as_fd(), ATTR_RDONLY, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destination_components() {
        assert_eq!(components("/a//b/./c/"), ["a", "b", "c"]);
        assert!(components("/").is_empty());
        assert_eq!(components("/dev"), ["dev"]);
    }
}
