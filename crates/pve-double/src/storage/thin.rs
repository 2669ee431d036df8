//! lvmthin volumes: a sparse image file of the requested size, `mkfs.ext4`, loop-mounted at the
//! volume path. The size is a hard cap (ENOSPC), as with a thin LV formatted by pct.
//!
//! Image: `$ROOT/storage/<sid>.thin/<volname>.raw` (plays `/dev/<vg>/<volname>`);
//! mount point: `$ROOT/storage/<sid>/<volname>`. Activation is idempotent: whoever needs the
//! volume (create, start, mount) mounts it when it is not mounted in its mount namespace.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{die, Context, Result};
use crate::paths::Root;

pub fn image_path(root: &Root, sid: &str, volname: &str) -> PathBuf {
    root.root
        .join("storage")
        .join(format!("{sid}.thin"))
        .join(format!("{volname}.raw"))
}

/// Is `p` a mount point (different device than its parent)?
pub fn is_mountpoint(p: &Path) -> bool {
    let (Ok(m), Some(parent)) = (fs::symlink_metadata(p), p.parent()) else {
        return false;
    };
    match fs::metadata(parent) {
        Ok(pm) => m.is_dir() && (m.dev() != pm.dev() || m.ino() == pm.ino()),
        Err(_) => false,
    }
}

fn run(argv: &[&str]) -> Result<()> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| die(format!("unable to run '{}' - {e}", argv[0])))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    Err(die(format!(
        "command '{}' failed: exit code {}{}",
        argv.join(" "),
        out.status.code().unwrap_or(-1),
        if last.is_empty() {
            String::new()
        } else {
            format!(" ({})", last.trim())
        }
    )))
}

/// Create the image (`size_kib` KiB, sparse), format it (root of the fs owned by `owner`),
/// create the mount point and mount it.
pub fn create(
    root: &Root,
    sid: &str,
    volname: &str,
    size_kib: u64,
    owner: (u32, u32),
) -> Result<()> {
    let img = image_path(root, sid, volname);
    if let Some(d) = img.parent() {
        fs::create_dir_all(d).ctx(|| format!("unable to create '{}'", d.display()))?;
    }
    let f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&img)
        .ctx(|| format!("unable to create image '{}'", img.display()))?;
    f.set_len(size_kib * 1024)
        .ctx(|| format!("unable to size image '{}'", img.display()))?;
    drop(f);
    let img_s = img.display().to_string();
    let root_owner = format!("root_owner={}:{}", owner.0, owner.1);
    run(&["mkfs.ext4", "-q", "-E", &root_owner, &img_s])?;
    let mnt = root.storage_dir(sid).join(volname);
    fs::create_dir_all(&mnt).ctx(|| format!("unable to create '{}'", mnt.display()))?;
    activate(root, sid, volname)
}

/// Mount the volume at its path unless it is mounted already.
pub fn activate(root: &Root, sid: &str, volname: &str) -> Result<()> {
    let mnt = root.storage_dir(sid).join(volname);
    if is_mountpoint(&mnt) {
        return Ok(());
    }
    let img = image_path(root, sid, volname);
    if !img.is_file() {
        return Err(die(format!(
            "no such logical volume {}",
            volname_display(sid, volname)
        )));
    }
    if !mnt.is_dir() {
        fs::create_dir_all(&mnt).ctx(|| format!("unable to create '{}'", mnt.display()))?;
    }
    // a base volume (template) is read-only, as `lvchange -pr` makes it
    let opts = if volname.starts_with("base-") {
        "loop,ro"
    } else {
        "loop"
    };
    run(&[
        "mount",
        "-t",
        "ext4",
        "-o",
        opts,
        &img.display().to_string(),
        &mnt.display().to_string(),
    ])
}

/// Unmount the volume if mounted (`create_base` renames it).
pub fn deactivate(root: &Root, sid: &str, volname: &str) -> Result<()> {
    let mnt = root.storage_dir(sid).join(volname);
    unmount(&mnt, &volname_display(sid, volname))
}

/// Unmount `mnt` (lazily when busy); fails when it stays mounted.
pub fn unmount(mnt: &Path, name: &str) -> Result<()> {
    if !is_mountpoint(mnt) {
        return Ok(());
    }
    if nix::mount::umount2(mnt, nix::mount::MntFlags::empty()).is_err() {
        nix::mount::umount2(mnt, nix::mount::MntFlags::MNT_DETACH)
            .ctx(|| format!("unable to unmount '{}'", mnt.display()))?;
    }
    if is_mountpoint(mnt) {
        return Err(die(format!(
            "volume '{name}' is still mounted at '{}'",
            mnt.display()
        )));
    }
    Ok(())
}

fn orphan_marker(root: &Root, sid: &str, volname: &str) -> PathBuf {
    image_path(root, sid, volname).with_extension("orphan")
}

/// Free a base volume whose CT is gone once its last linked clone is gone.
pub fn free_orphan(root: &Root, sid: &str, volname: &str) -> Result<()> {
    if !orphan_marker(root, sid, volname).exists() {
        return Ok(());
    }
    let _ = std::fs::remove_file(orphan_marker(root, sid, volname));
    free(root, sid, volname)
}

fn volname_display(sid: &str, volname: &str) -> String {
    format!("{sid}:{volname}")
}

/// Unmount (loop device freed by autoclear) and delete the image and the mount point.
/// A base volume still used by linked clones is kept (LVM-thin lets PVE remove it while the
/// clones keep their data) and marked an orphan, freed with its last clone.
pub fn free(root: &Root, sid: &str, volname: &str) -> Result<()> {
    if volname.starts_with("base-") && !super::clone::clones_of(root, sid, volname).is_empty() {
        return std::fs::write(orphan_marker(root, sid, volname), b"")
            .ctx(|| format!("unable to remove '{}'", volname_display(sid, volname)));
    }
    let mnt = root.storage_dir(sid).join(volname);
    unmount(&mnt, &volname_display(sid, volname))?;
    match fs::remove_dir(&mnt) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(die(format!("unable to remove '{}' - {e}", mnt.display()))),
    }
    let img = image_path(root, sid, volname);
    match fs::remove_file(&img) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(die(format!("unable to remove '{}' - {e}", img.display()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountpoints() {
        assert!(is_mountpoint(Path::new("/proc")));
        assert!(!is_mountpoint(Path::new("/proc/self")));
        let r = Root {
            root: PathBuf::from("/R"),
            node: "pve".into(),
        };
        assert_eq!(
            image_path(&r, "local-lvm", "vm-100-disk-0"),
            PathBuf::from("/R/storage/local-lvm.thin/vm-100-disk-0.raw")
        );
    }
}
