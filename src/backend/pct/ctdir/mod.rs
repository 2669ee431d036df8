//! The per-container host directory D = `<state_dir>/<vmid>`, mounted at `/.pvelxc` in the CT.
//! Owners and modes follow crates/pvelxc-init/PROTOCOL.md; the rule behind them: the CT can
//! write nowhere the host resolves names, except one small directory it owns.
//!
//! ```text
//! <state_dir>/            root:root     0711  (on an exec-capable file system: checked)
//! D = <state_dir>/<vmid>  root:ctgid    0750  mp0 → /.pvelxc          host-only
//!   init                  root:ctgid    0750  a private copy (never a link shared by CTs)
//!   process.json          root:ctgid    0640  the OCI process
//!   ct.json               root:ctgid    0640  container settings the init applies
//!   exec-<name>.json      root:ctgid    0640  exec specs, created O_EXCL through D's fd
//!   ctl.sock              ctuid:ctgid   0600  bound by the shim before `pct start`
//!   rw/                   ctuid:ctgid   0700  mp1 → /.pvelxc/rw: a 64 KiB tmpfs, the only
//!                                             place the CT writes (its exit record)
//! ```
//! After `pct start` the shim never resolves a name inside `rw/` by path: it reads the exit
//! record through a directory fd taken at creation, with a no-follow, non-blocking open of a
//! regular file, size-capped (see [`safe`]). Files in D are owned by host root, which the
//! CT's user namespace does not map: its root can neither replace nor plant anything there.

mod safe;

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Process;

use super::cmd::MountPoint;
use super::vmid::Vmid;
use crate::error::{Error, Result};

pub use pvelxc_init::ct::CtSettings;
pub use safe::{find_init, read_exit_at};

/// Host uid/gid of CT root (Proxmox's default mapping for unprivileged CTs).
pub const UNPRIVILEGED_ROOT: u32 = 100_000;
pub const CTL_SOCK: &str = "ctl.sock";
pub const RW_DIR: &str = "rw";
pub const EXIT_FILE: &str = "exit";
/// Where D appears in the CT.
pub const CT_DIR: &str = "/.pvelxc";
const RW_TMPFS_OPTS: &str = "size=64k,nr_inodes=32,mode=0700";

fn io(what: impl std::fmt::Display, p: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    let ctx = format!("{what} {}", p.display());
    move |e| Error::io(ctx, e)
}

fn chmod(p: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(io("chmod", p))
}

fn chown(p: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).map_err(io("chown", p))
}

/// D of a VMID.
pub fn path(state_dir: &Path, vmid: Vmid) -> PathBuf {
    state_dir.join(vmid.to_string())
}

/// The state directory must allow exec: the CT runs `/.pvelxc/init` from it, and a bind
/// mount keeps `noexec` (locked inside the CT's user namespace). Debian mounts /run noexec.
pub fn check_state_dir(state_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(state_dir).map_err(io("create", state_dir))?;
    let st = nix::sys::statvfs::statvfs(state_dir).map_err(|e| {
        Error::io(
            format!("statvfs {}", state_dir.display()),
            std::io::Error::from(e),
        )
    })?;
    if st.flags().contains(nix::sys::statvfs::FsFlags::ST_NOEXEC) {
        return Err(Error::precondition(format!(
            "[pct] state_dir {} is on a noexec mount: the CT could not run its init from it \
             (Proxmox hosts mount /run noexec); use a directory on an exec-capable file system, \
             e.g. the default /var/lib/pvelxc/ct",
            state_dir.display()
        )));
    }
    let mode = std::fs::metadata(state_dir)
        .map_err(io("stat", state_dir))?
        .permissions()
        .mode();
    // Traversable by the CT's mapped root (LXC binds D from inside the user namespace),
    // listable by nobody else.
    if mode & 0o7777 != 0o711 {
        chmod(state_dir, 0o711)?;
    }
    Ok(())
}

/// A prepared D: its path, and fds of D and `rw/` taken before the CT existed.
pub struct CtDir {
    path: PathBuf,
    dir: OwnedFd,
    rw: OwnedFd,
    ct_gid: u32,
}

impl CtDir {
    /// Make D with the init, process.json, ct.json, `rw/` (a small tmpfs) and the listening
    /// control socket. A stale D of an earlier CT with this VMID is removed first.
    pub fn prepare(
        state_dir: &Path,
        vmid: Vmid,
        unprivileged: bool,
        init: &Path,
        process: &Process,
        settings: &CtSettings,
        shared: bool,
    ) -> Result<(CtDir, UnixListener)> {
        check_state_dir(state_dir)?;
        let d = path(state_dir, vmid);
        remove(&d)?;
        let id = if unprivileged { UNPRIVILEGED_ROOT } else { 0 };
        std::fs::create_dir(&d).map_err(io("create", &d))?;
        let made = (|| {
            chown(&d, 0, id)?;
            chmod(&d, 0o750)?;
            if shared {
                make_shared(&d)?;
            }
            let dst = d.join("init");
            std::fs::copy(init, &dst).map_err(io("copy init to", &dst))?;
            chown(&dst, 0, id)?;
            chmod(&dst, 0o750)?;
            let dir = safe::open_dir(&d)?;
            safe::write_new(
                dir.as_fd(),
                "process.json",
                &serde_json::to_vec(process)?,
                id,
            )?;
            safe::write_new(dir.as_fd(), "ct.json", &serde_json::to_vec(settings)?, id)?;
            let rw = d.join(RW_DIR);
            std::fs::create_dir(&rw).map_err(io("create", &rw))?;
            mount_tmpfs(&rw, id)?;
            chown(&rw, id, id)?;
            chmod(&rw, 0o700)?;
            let rw_fd = safe::open_dir(&rw)?;
            let sock = d.join(CTL_SOCK);
            if sock.as_os_str().len() > 107 {
                return Err(Error::invalid(format!(
                    "control socket path {} is too long; use a shorter [pct] state_dir",
                    sock.display()
                )));
            }
            let l = UnixListener::bind(&sock).map_err(io("bind", &sock))?;
            chown(&sock, id, id)?;
            chmod(&sock, 0o600)?;
            Ok((
                CtDir {
                    path: d.clone(),
                    dir,
                    rw: rw_fd,
                    ct_gid: id,
                },
                l,
            ))
        })();
        if made.is_err() {
            let _ = remove(&d);
        }
        made
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// mp0 (D at /.pvelxc) and mp1 (its tmpfs at /.pvelxc/rw), added after `pct create`.
    pub fn mount_points(&self) -> [MountPoint; 2] {
        let rw = self.path.join(RW_DIR);
        [
            MountPoint::bind(0, self.path.display().to_string(), CT_DIR),
            MountPoint::bind(1, rw.display().to_string(), format!("{CT_DIR}/{RW_DIR}")),
        ]
    }

    /// Write an exec spec as `exec-<name>.json` (a new file: an old one of the same name is
    /// replaced); returns its path inside the CT.
    pub fn write_exec_spec(&self, name: &str, process: &Process) -> Result<String> {
        let file = format!("exec-{name}.json");
        safe::unlink(self.dir.as_fd(), &file);
        safe::write_new(
            self.dir.as_fd(),
            &file,
            &serde_json::to_vec(process)?,
            self.ct_gid,
        )?;
        Ok(format!("{CT_DIR}/{file}"))
    }

    pub fn remove_exec_spec(&self, name: &str) {
        safe::unlink(self.dir.as_fd(), &format!("exec-{name}.json"));
    }

    /// Write a pod container's spec as `ctr-<name>.json` (replacing an old one); returns its
    /// path inside the CT.
    pub fn write_ctr_spec(&self, name: &str, bytes: &[u8]) -> Result<String> {
        let file = format!("ctr-{name}.json");
        safe::unlink(self.dir.as_fd(), &file);
        safe::write_new(self.dir.as_fd(), &file, bytes, self.ct_gid)?;
        Ok(format!("{CT_DIR}/{file}"))
    }

    pub fn remove_ctr_spec(&self, name: &str) {
        safe::unlink(self.dir.as_fd(), &format!("ctr-{name}.json"));
    }

    /// The host gid CT root maps to (group of everything the CT may read in D).
    pub fn ct_gid(&self) -> u32 {
        self.ct_gid
    }

    /// The init's exit record, if a valid one is there (hostile input: see [`safe`]).
    pub fn read_exit(&self) -> Option<pvelxc_init::proto::ExitRecord> {
        read_exit_at(self.rw.as_fd())
    }

    /// [`read_exit`](Self::read_exit) on a blocking thread, off the async runtime.
    pub async fn read_exit_blocking(&self) -> Option<pvelxc_init::proto::ExitRecord> {
        let rw = self.rw.try_clone().ok()?;
        tokio::task::spawn_blocking(move || read_exit_at(rw.as_fd()))
            .await
            .ok()
            .flatten()
    }
}

fn mount_tmpfs(at: &Path, id: u32) -> Result<()> {
    let opts = format!("{RW_TMPFS_OPTS},uid={id},gid={id}");
    let flags = nix::mount::MsFlags::MS_NOSUID
        | nix::mount::MsFlags::MS_NODEV
        | nix::mount::MsFlags::MS_NOEXEC;
    nix::mount::mount(Some("tmpfs"), at, Some("tmpfs"), flags, Some(opts.as_str())).map_err(|e| {
        Error::io(
            format!("mount tmpfs on {}", at.display()),
            std::io::Error::from(e),
        )
    })
}

/// A pod's D is a shared mount of its own (bound onto itself before anything is mounted
/// in it): the CT's `/.pvelxc` becomes its slave, so mounts the shim attaches below D later
/// appear in the running CT (see `pod::mounts`).
fn make_shared(d: &Path) -> Result<()> {
    use nix::mount::{mount, MsFlags};
    let err = |what: &str| {
        let what = format!("{what} {}", d.display());
        move |e: nix::errno::Errno| Error::io(what, std::io::Error::from(e))
    };
    mount(Some(d), d, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(err("bind"))?;
    mount(
        None::<&str>,
        d,
        None::<&str>,
        MsFlags::MS_SHARED,
        None::<&str>,
    )
    .map_err(err("make shared"))
}

/// Remove D (unmounting its tmpfs first, and for a pod every mount below D and D's own
/// bind); fine when it is already gone.
pub fn remove(d: &Path) -> Result<()> {
    let rw = d.join(RW_DIR);
    for p in [rw.as_path(), d] {
        if let Ok(c) = CString::new(p.as_os_str().as_encoded_bytes()) {
            // SAFETY: a plain syscall on a C string we own; EINVAL/ENOENT when not mounted.
            // A lazy unmount of D takes every mount below it along.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) };
        }
    }
    // std's remove_dir_all does not follow symlinks (openat + unlinkat).
    match std::fs::remove_dir_all(d) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("remove {}", d.display()), e)),
    }
}

#[cfg(test)]
mod tests;
