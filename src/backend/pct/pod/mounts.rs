//! A pod container's mounts. Kernel file systems (proc, tmpfs, devpts, mqueue, sysfs, cgroup)
//! are made fresh by the init inside the CT; host bind mounts (the pod's volumes, its hosts,
//! hostname and resolv.conf files, /dev/shm) cannot be reached from a running CT, so the shim
//! attaches each one below `D/mnt/<name>/<i>`: D is a shared mount the CT's `/.pvelxc` is a
//! slave of, so the mount appears in the CT at `/.pvelxc/mnt/<name>/<i>`, where the init binds
//! it into the container. A read-only mount is made read-only before it is attached, so it
//! arrives read-only and locked in the CT's user namespace.
//!
//! The host paths come from containerd (CRI), not from the CT; the targets are made by the
//! shim in D, which the CT cannot write.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use pvelxc_init::pod::{Mount, MountKind};

use crate::error::{Error, Result};

/// Below D: one directory per pod container.
pub const MNT_DIR: &str = "mnt";

/// A host bind mount to attach at `D/mnt/<name>/<index>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBind {
    pub index: usize,
    pub source: PathBuf,
    pub readonly: bool,
    pub recursive: bool,
}

/// The container's mounts for the init (sources in the CT) and the host binds behind them.
pub fn translate(spec: &Spec, name: &str, ct_dir: &str) -> Result<(Vec<Mount>, Vec<HostBind>)> {
    let mut out = Vec::new();
    let mut binds = Vec::new();
    for m in spec.mounts().as_deref().unwrap_or_default() {
        let dest = m.destination().display().to_string();
        let options = m.options().clone().unwrap_or_default();
        let typ = m.typ().as_deref().unwrap_or("");
        let is_bind = typ == "bind" || options.iter().any(|o| o == "bind" || o == "rbind");
        let kind = if is_bind {
            let source = m
                .source()
                .as_ref()
                .filter(|s| s.is_absolute())
                .ok_or_else(|| {
                    Error::invalid(format!("bind mount at {dest}: no absolute source"))
                })?;
            let index = binds.len();
            binds.push(HostBind {
                index,
                source: source.clone(),
                readonly: options.iter().any(|o| o == "ro"),
                recursive: options.iter().any(|o| o == "rbind"),
            });
            MountKind::Bind {
                source: format!("{ct_dir}/{MNT_DIR}/{name}/{index}"),
            }
        } else {
            match typ {
                "proc" => MountKind::Proc,
                "tmpfs" => MountKind::Tmpfs,
                "devpts" => MountKind::Devpts,
                "mqueue" => MountKind::Mqueue,
                "sysfs" => MountKind::Sysfs,
                "cgroup" | "cgroup2" => MountKind::Cgroup,
                other => {
                    return Err(Error::Unimplemented(format!(
                        "mount at {dest}: type {other:?} is not supported for a container in \
                         a pod CT (proc, tmpfs, devpts, mqueue, sysfs, cgroup and bind are)"
                    )))
                }
            }
        };
        out.push(Mount {
            destination: dest,
            kind,
            options: options
                .into_iter()
                .filter(|o| o != "bind" && o != "rbind")
                .collect(),
        });
    }
    Ok((out, binds))
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::invalid(format!("path {} contains NUL", p.display())))
}

fn os_err(what: String) -> Error {
    Error::io(what, std::io::Error::last_os_error())
}

/// A detached copy of the mount tree at `source` (open_tree), read-only when asked, attached
/// at `target` (move_mount).
fn attach_one(b: &HostBind, target: &Path) -> Result<()> {
    let src = cstr(&b.source)?;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if b.recursive {
        flags |= AT_RECURSIVE;
    }
    // SAFETY: open_tree on a C string we own; returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, src.as_ptr(), flags) };
    if fd < 0 {
        return Err(os_err(format!("open_tree {}", b.source.display())));
    }
    let raw = i32::try_from(fd).map_err(|_| Error::internal("open_tree: fd out of range"))?;
    // SAFETY: a fresh fd returned by open_tree, owned from here on.
    let tree = unsafe { OwnedFd::from_raw_fd(raw) };
    if b.readonly {
        use std::os::fd::AsFd;
        pvelxc_init::mountattr::mount_setattr(
            tree.as_fd(),
            pvelxc_init::mountattr::ATTR_RDONLY,
            true,
        )
        .map_err(|e| {
            Error::io(
                format!("make the mount of {} read-only", b.source.display()),
                e,
            )
        })?;
    }
    let dst = cstr(target)?;
    let empty = c"";
    // SAFETY: move_mount of our detached tree onto a path we own.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(os_err(format!(
            "attach {} at {}",
            b.source.display(),
            target.display()
        )));
    }
    Ok(())
}

fn mkdir(p: &Path, gid: u32) -> Result<()> {
    match std::fs::create_dir(p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(format!("create {}", p.display()), e)),
    }
    std::os::unix::fs::chown(p, Some(0), Some(gid))
        .and_then(|_| std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o750)))
        .map_err(|e| Error::io(format!("chown/chmod {}", p.display()), e))
}

/// Attach every bind of container `name` below `D/mnt/<name>`; on error what was attached is
/// detached again.
pub fn attach(d: &Path, name: &str, binds: &[HostBind], ct_gid: u32) -> Result<()> {
    let base = d.join(MNT_DIR);
    mkdir(&base, ct_gid)?;
    let mine = base.join(name);
    mkdir(&mine, ct_gid)?;
    let res = (|| {
        for b in binds {
            let meta = std::fs::metadata(&b.source)
                .map_err(|e| Error::io(format!("bind source {}", b.source.display()), e))?;
            let target = mine.join(b.index.to_string());
            if meta.is_dir() {
                mkdir(&target, ct_gid)?;
            } else {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .map_err(|e| Error::io(format!("create {}", target.display()), e))?;
            }
            attach_one(b, &target)?;
        }
        Ok(())
    })();
    if res.is_err() {
        detach(d, name);
    }
    res
}

/// Detach container `name`'s mounts (the CT's copies go with them) and remove its directory.
pub fn detach(d: &Path, name: &str) {
    let mine = d.join(MNT_DIR).join(name);
    // Names below `mine` are the shim's own (0, 1, …): D is not the CT's to write.
    if let Ok(rd) = std::fs::read_dir(&mine) {
        for e in rd.flatten() {
            if let Err(e) = crate::sys::mount::unmount_all(&e.path()) {
                log::warn!("unmount {}: {e}", mine.display());
            }
        }
    }
    match std::fs::remove_dir_all(&mine) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => log::warn!("remove {}: {e}", mine.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{MountBuilder, SpecBuilder};

    fn m(dest: &str, typ: &str, src: Option<&str>, opts: &[&str]) -> oci_spec::runtime::Mount {
        let mut b = MountBuilder::default()
            .destination(dest)
            .typ(typ)
            .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        if let Some(s) = src {
            b = b.source(s);
        }
        b.build().unwrap()
    }

    #[test]
    fn kernel_mounts_stay_and_binds_go_through_d() {
        let spec = SpecBuilder::default()
            .mounts(vec![
                m("/proc", "proc", Some("proc"), &[]),
                m("/dev", "tmpfs", Some("tmpfs"), &["mode=755"]),
                m(
                    "/etc/hosts",
                    "bind",
                    Some("/var/lib/x/hosts"),
                    &["rbind", "ro"],
                ),
                m("/data", "", Some("/srv/data"), &["bind"]),
            ])
            .build()
            .unwrap();
        let (mounts, binds) = translate(&spec, "c1", "/.pvelxc").unwrap();
        assert_eq!(mounts[0].kind, MountKind::Proc);
        assert_eq!(mounts[1].options, vec!["mode=755".to_string()]);
        assert_eq!(
            mounts[2].kind,
            MountKind::Bind {
                source: "/.pvelxc/mnt/c1/0".into()
            }
        );
        assert_eq!(mounts[2].options, vec!["ro".to_string()]);
        assert_eq!(
            mounts[3].kind,
            MountKind::Bind {
                source: "/.pvelxc/mnt/c1/1".into()
            }
        );
        assert_eq!(
            binds,
            vec![
                HostBind {
                    index: 0,
                    source: "/var/lib/x/hosts".into(),
                    readonly: true,
                    recursive: true
                },
                HostBind {
                    index: 1,
                    source: "/srv/data".into(),
                    readonly: false,
                    recursive: false
                },
            ]
        );
    }

    #[test]
    fn odd_mounts_are_refused_by_name() {
        let spec = SpecBuilder::default()
            .mounts(vec![m("/x", "nfs", Some("h:/e"), &[])])
            .build()
            .unwrap();
        let e = translate(&spec, "c", "/.pvelxc").unwrap_err().to_string();
        assert!(e.contains("/x") && e.contains("nfs"), "{e}");
        let spec = SpecBuilder::default()
            .mounts(vec![m("/y", "bind", Some("relative"), &["rbind"])])
            .build()
            .unwrap();
        assert!(translate(&spec, "c", "/.pvelxc").is_err());
    }

    /// Real mounts (root): a read-only attach arrives read-only, detach leaves nothing.
    #[test]
    fn attach_and_detach_on_the_host() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("f"), "hello").unwrap();
        let file = src.path().join("f");
        let binds = [
            HostBind {
                index: 0,
                source: src.path().to_path_buf(),
                readonly: true,
                recursive: false,
            },
            HostBind {
                index: 1,
                source: file.clone(),
                readonly: false,
                recursive: false,
            },
        ];
        attach(d.path(), "c1", &binds, 0).unwrap();
        let t0 = d.path().join("mnt/c1/0");
        assert_eq!(std::fs::read_to_string(t0.join("f")).unwrap(), "hello");
        let e = std::fs::write(t0.join("g"), "x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
        assert_eq!(
            std::fs::read_to_string(d.path().join("mnt/c1/1")).unwrap(),
            "hello"
        );
        detach(d.path(), "c1");
        assert!(!d.path().join("mnt/c1").exists());
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mi.contains(&d.path().display().to_string()), "{mi}");
    }
}
