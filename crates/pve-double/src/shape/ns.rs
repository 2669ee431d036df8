//! The shape's persistent mount namespace (kept alive by binding its nsfs file onto
//! `$ROOT/ns/mnt`, as util-linux `unshare --mount=FILE` does) and the mounts that make the
//! host look like a Proxmox node.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::statfs::{statfs, NSFS_MAGIC};
use nix::unistd::{fork, ForkResult};

/// Errors of pve-shape are plain messages (printed as `pve-shape: <msg>`).
pub type Res<T> = std::result::Result<T, String>;

pub fn ns_dir(root: &Path) -> PathBuf {
    root.join("ns")
}
pub fn ns_file(root: &Path) -> PathBuf {
    root.join("ns/mnt")
}

/// Is `$ROOT/ns/mnt` a live mount namespace file?
pub fn is_active(root: &Path) -> bool {
    statfs(&ns_file(root))
        .map(|s| s.filesystem_type() == NSFS_MAGIC)
        .unwrap_or(false)
}

/// Mount points (as /proc/self/mountinfo lists them, unescaped for plain paths).
fn mount_points() -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split(' ')
                .nth(4)
                .map(|p| PathBuf::from(p.replace("\\040", " ")))
        })
        .collect()
}

pub fn is_mount_point(p: &Path) -> bool {
    mount_points().iter().any(|m| m == p)
}

fn bind(src: &Path, dst: &Path, recursive: bool) -> Res<()> {
    let mut fl = MsFlags::MS_BIND;
    if recursive {
        fl |= MsFlags::MS_REC;
    }
    mount(Some(src), dst, None::<&str>, fl, None::<&str>).map_err(|e| {
        format!(
            "bind mount '{}' -> '{}' failed - {e}",
            src.display(),
            dst.display()
        )
    })
}

/// `mount -o remount,bind,nosuid,nodev,noexec` (what Debian mounts /run with).
fn remount_noexec(dst: &Path) -> Res<()> {
    let fl = MsFlags::MS_REMOUNT
        | MsFlags::MS_BIND
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC;
    mount(None::<&str>, dst, None::<&str>, fl, None::<&str>).map_err(|e| {
        format!(
            "remount '{}' nosuid,nodev,noexec failed - {e}",
            dst.display()
        )
    })
}

fn mkdir(p: &Path) -> Res<()> {
    fs::create_dir_all(p).map_err(|e| format!("unable to create '{}' - {e}", p.display()))
}

/// Inside the new namespace: the mounts of a Proxmox node.
fn shape_mounts(root: &Path) -> Res<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("make / rprivate failed - {e}"))?;
    let run = Path::new("/run");
    bind(run, run, true)?;
    remount_noexec(run)?;
    bind(&root.join("etc/pve"), Path::new("/etc/pve"), false)?;
    for (src, dst) in [("lock", "/run/lock/lxc"), ("run/pve", "/run/pve")] {
        bind(&root.join(src), Path::new(dst), false)?;
        remount_noexec(Path::new(dst))?;
    }
    Ok(())
}

/// Create the namespace and persist it at `$ROOT/ns/mnt`. The caller stays in its namespace.
pub fn create(root: &Path) -> Res<()> {
    // mount targets: empty directories on the host
    for d in ["/etc/pve", "/run/lock/lxc", "/run/pve"] {
        mkdir(Path::new(d))?;
    }
    let nsd = ns_dir(root);
    mkdir(&nsd)?;
    if !is_mount_point(&nsd) {
        bind(&nsd, &nsd, false)?;
    }
    mount(
        None::<&str>,
        &nsd,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("make '{}' private failed - {e}", nsd.display()))?;
    let nsf = ns_file(root);
    let _ = umount2(&nsf, MntFlags::MNT_DETACH); // a stale bind of a dead shape
    File::create(&nsf).map_err(|e| format!("unable to create '{}' - {e}", nsf.display()))?;

    let (mut status_r, mut status_w) = pipe()?;
    let (mut go_r, go_w) = pipe()?;
    // SAFETY: pve-shape is single-threaded here; the child only makes syscalls, writes to a
    // pipe and exits with _exit.
    match unsafe { fork() }.map_err(|e| format!("fork failed - {e}"))? {
        ForkResult::Child => {
            drop(status_r);
            drop(go_w);
            let res = unshare(CloneFlags::CLONE_NEWNS)
                .map_err(|e| format!("unshare(CLONE_NEWNS) failed - {e}"))
                .and_then(|()| shape_mounts(root));
            let msg = match res {
                Ok(()) => "ok".to_string(),
                Err(e) => e,
            };
            let _ = status_w.write_all(msg.as_bytes());
            drop(status_w);
            let mut b = [0u8; 1];
            let _ = go_r.read(&mut b); // until the parent has bound our namespace
                                       // SAFETY: _exit is always safe; skips atexit handlers of the forked copy
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(status_w);
            drop(go_r);
            let mut msg = String::new();
            let _ = status_r.read_to_string(&mut msg);
            let res = if msg == "ok" {
                let src = PathBuf::from(format!("/proc/{child}/ns/mnt"));
                bind(&src, &nsf, false)
            } else {
                Err(if msg.is_empty() {
                    "namespace helper died".to_string()
                } else {
                    msg
                })
            };
            drop(go_w);
            let _ = nix::sys::wait::waitpid(child, None);
            res
        }
    }
}

fn pipe() -> Res<(File, File)> {
    let (r, w) = nix::unistd::pipe().map_err(|e| format!("pipe failed - {e}"))?;
    Ok((File::from(r), File::from(w)))
}

/// Join the shape's namespace (keeps the working directory).
pub fn enter(root: &Path) -> Res<()> {
    let cwd = std::env::current_dir().ok();
    let f = File::open(ns_file(root))
        .map_err(|e| format!("unable to open '{}' - {e}", ns_file(root).display()))?;
    setns(f.as_fd(), CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("setns into '{}' failed - {e}", ns_file(root).display()))?;
    if let Some(c) = cwd {
        std::env::set_current_dir(&c)
            .map_err(|e| format!("unable to chdir to '{}' - {e}", c.display()))?;
    }
    Ok(())
}

/// Drop the namespace file and the private bind of `$ROOT/ns` (idempotent).
pub fn release(root: &Path) -> Res<()> {
    for p in [ns_file(root), ns_dir(root)] {
        while is_mount_point(&p) {
            umount2(&p, MntFlags::MNT_DETACH)
                .map_err(|e| format!("unmount '{}' failed - {e}", p.display()))?;
        }
    }
    Ok(())
}
