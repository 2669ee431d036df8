//! Base volumes (`pct template`) and linked clones (`pct clone`), as pve-storage's plugins
//! name and treat them (facts in the README's "Templates and clones"):
//!
//! * lvmthin: `vm-X-disk-N` becomes `base-X-disk-N` (read-only); a linked clone is a thin
//!   snapshot named `vm-NEW-disk-M`. Freeing a base still used by clones is allowed (the thin
//!   pool keeps the shared blocks): the double keeps the image as an orphan until the last
//!   clone is freed.
//! * zfspool: `subvol-X-disk-N` becomes `basevol-X-disk-N`; a clone is
//!   `basevol-X-disk-N/subvol-NEW-disk-M`; freeing a used base fails
//!   `base volume '<volname>' is still in use by linked clones`.
//! * dir, btrfs (the double's volumes are subvol directories): the volume keeps its name, is
//!   not a base, and a linked clone is refused (`Linked clone feature for '<volid>' is not
//!   available`).
//!
//! A clone is an overlay: the base volume (mounted read-only) as lower layer, a private upper
//! and work directory in `$ROOT/storage/<sid>.clones/<leaf>/` (with an `origin` file naming the
//! base volname), mounted at the clone's volume path. Making one copies no rootfs data.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::{check_storage, check_volname, parse_volume, path_in, thin, Kind, Volume};
use crate::error::{die, Context, Result};
use crate::paths::Root;

/// The clone bookkeeping directory of `volname` (its last path component).
pub fn meta_dir(root: &Root, sid: &str, volname: &str) -> PathBuf {
    let leaf = volname.rsplit('/').next().unwrap_or(volname);
    root.root
        .join("storage")
        .join(format!("{sid}.clones"))
        .join(leaf)
}

/// Is `volname` a base volume (a template's)?
pub fn is_base(volname: &str) -> bool {
    let first = volname.split('/').next().unwrap_or("");
    !volname.contains('/') && (first.starts_with("base-") || first.starts_with("basevol-"))
}

fn split(volid: &str) -> Result<(String, String)> {
    match parse_volume(volid).map_err(die)? {
        Volume::Existing { sid, volname } => Ok((sid, volname)),
        _ => Err(die(format!("unable to parse volume ID '{volid}'"))),
    }
}

/// `vdisk_create_base`: rename the volume to its base name; returns the new volume id.
pub fn create_base(root: &Root, volid: &str) -> Result<String> {
    let (sid, volname) = split(volid)?;
    let def = check_storage(root, &sid)?;
    check_volname(&volname)?;
    if is_base(&volname) {
        return Err(die("create_base not possible with base image"));
    }
    let new = match def.kind {
        Kind::LvmThin => volname.replacen("vm-", "base-", 1),
        Kind::ZfsPool => volname.replacen("subvol-", "basevol-", 1),
        // dir/btrfs subvols keep their name (s/^vm-/base-/ does not match `subvol-`)
        _ => return Ok(volid.to_string()),
    };
    let from = path_in(root, &def, &volname);
    let to = path_in(root, &def, &new);
    if to.exists() {
        return Err(die(format!("volume {sid}:{new} already exists")));
    }
    if def.kind == Kind::LvmThin {
        thin::deactivate(root, &sid, &volname)?;
        let _ = fs::remove_dir(&from);
        fs::rename(
            thin::image_path(root, &sid, &volname),
            thin::image_path(root, &sid, &new),
        )
        .ctx(|| format!("lvrename '{volname}' => '{new}' error"))?;
        thin::activate(root, &sid, &new)?;
    } else {
        fs::rename(&from, &to).ctx(|| format!("rename '{volname}' => '{new}' error"))?;
    }
    Ok(format!("{sid}:{new}"))
}

/// `volume_has_feature(clone)` for a CT volume (valid target formats raw, subvol).
pub fn can_link(root: &Root, volid: &str) -> Result<bool> {
    let (sid, volname) = split(volid)?;
    let def = check_storage(root, &sid)?;
    Ok(matches!(def.kind, Kind::LvmThin | Kind::ZfsPool) && is_base(&volname))
}

/// Volumes (ids) that are linked clones of base `volname` of `sid`.
pub fn clones_of(root: &Root, sid: &str, volname: &str) -> Vec<String> {
    let dir = root.root.join("storage").join(format!("{sid}.clones"));
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| {
            fs::read_to_string(e.path().join("origin"))
                .map(|o| o.trim() == volname)
                .unwrap_or(false)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// `vdisk_clone`: a linked clone of base `volid` for `newid`; returns the new volume id.
pub fn link(root: &Root, volid: &str, newid: u32) -> Result<String> {
    let (sid, base) = split(volid)?;
    let def = check_storage(root, &sid)?;
    if !is_base(&base) {
        return Err(die("clone_image only works on base images"));
    }
    activate_base(root, &sid, &base)?;
    let lower = path_in(root, &def, &base);
    for n in 0..1000 {
        let leaf = match def.kind {
            Kind::LvmThin => format!("vm-{newid}-disk-{n}"),
            _ => format!("subvol-{newid}-disk-{n}"),
        };
        let volname = match def.kind {
            Kind::LvmThin => leaf.clone(),
            _ => format!("{base}/{leaf}"),
        };
        let meta = meta_dir(root, &sid, &volname);
        let mnt = path_in(root, &def, &volname);
        if meta.exists() || mnt.exists() || thin::image_path(root, &sid, &leaf).exists() {
            continue;
        }
        let res = make_upper(&meta, &base, &lower).and_then(|_| activate(root, &sid, &volname));
        if let Err(e) = res {
            let _ = free(root, &sid, &volname);
            return Err(e);
        }
        return Ok(format!("{sid}:{volname}"));
    }
    Err(die(format!(
        "unable to allocate an image name for VM {newid} in storage '{sid}'"
    )))
}

/// The clone's private layer; its root takes owner and mode of the base's root.
fn make_upper(meta: &std::path::Path, base: &str, lower: &std::path::Path) -> Result<()> {
    let md = fs::metadata(lower).ctx(|| format!("unable to stat '{}'", lower.display()))?;
    fs::create_dir_all(meta.join("work"))
        .ctx(|| format!("unable to create '{}'", meta.display()))?;
    let upper = meta.join("upper");
    fs::create_dir(&upper).ctx(|| format!("unable to create '{}'", upper.display()))?;
    std::os::unix::fs::lchown(&upper, Some(md.uid()), Some(md.gid()))
        .ctx(|| format!("unable to chown '{}'", upper.display()))?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&upper, fs::Permissions::from_mode(md.mode() & 0o7777))
        .ctx(|| format!("unable to chmod '{}'", upper.display()))?;
    fs::write(meta.join("origin"), format!("{base}\n"))
        .ctx(|| format!("unable to write '{}'", meta.display()))
}

fn activate_base(root: &Root, sid: &str, base: &str) -> Result<()> {
    let def = check_storage(root, sid)?;
    if def.kind == Kind::LvmThin {
        thin::activate(root, sid, base)?;
    }
    Ok(())
}

/// Is `volname` a linked clone (has clone bookkeeping)?
pub fn is_clone(root: &Root, sid: &str, volname: &str) -> bool {
    meta_dir(root, sid, volname).join("origin").is_file()
}

/// Mount the clone's overlay at its volume path unless mounted already.
pub fn activate(root: &Root, sid: &str, volname: &str) -> Result<()> {
    let def = check_storage(root, sid)?;
    let mnt = path_in(root, &def, volname);
    if thin::is_mountpoint(&mnt) {
        return Ok(());
    }
    let meta = meta_dir(root, sid, volname);
    let base = fs::read_to_string(meta.join("origin"))
        .ctx(|| format!("no such volume '{sid}:{volname}'"))?;
    let base = base.trim();
    activate_base(root, sid, base)?;
    let lower = path_in(root, &def, base);
    fs::create_dir_all(&mnt).ctx(|| format!("unable to create '{}'", mnt.display()))?;
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        meta.join("upper").display(),
        meta.join("work").display()
    );
    nix::mount::mount(
        Some("overlay"),
        &mnt,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(opts.as_str()),
    )
    .ctx(|| format!("unable to activate clone '{sid}:{volname}'"))
}

/// Free a linked clone: unmount, remove its layer; an orphaned base nobody uses goes too.
pub fn free(root: &Root, sid: &str, volname: &str) -> Result<()> {
    let def = check_storage(root, sid)?;
    let mnt = path_in(root, &def, volname);
    thin::unmount(&mnt, &format!("{sid}:{volname}"))?;
    let _ = fs::remove_dir(&mnt);
    let meta = meta_dir(root, sid, volname);
    let base = fs::read_to_string(meta.join("origin")).unwrap_or_default();
    super::remove_tree(&meta)?;
    let base = base.trim();
    if def.kind == Kind::LvmThin && !base.is_empty() && clones_of(root, sid, base).is_empty() {
        thin::free_orphan(root, sid, base)?;
    }
    Ok(())
}

/// Bytes of file data in the clone's private layer (what the storage had to write).
pub fn private_bytes(root: &Root, sid: &str, volname: &str) -> u64 {
    super::written::tree_bytes(&meta_dir(root, sid, volname).join("upper"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_names() {
        assert!(is_base("base-100-disk-0"));
        assert!(is_base("basevol-100-disk-0"));
        assert!(!is_base("basevol-100-disk-0/subvol-101-disk-0"));
        assert!(!is_base("vm-100-disk-0"));
        assert!(!is_base("100/subvol-100-disk-0.subvol"));
        let r = Root {
            root: PathBuf::from("/R"),
            node: "pve".into(),
        };
        assert_eq!(
            meta_dir(&r, "z", "basevol-1-disk-0/subvol-2-disk-0"),
            PathBuf::from("/R/storage/z.clones/subvol-2-disk-0")
        );
    }
}
