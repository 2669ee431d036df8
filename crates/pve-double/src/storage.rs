//! The two storages of a fresh Proxmox VE install, directory-backed:
//! `local` (content vztmpl: `$ROOT/storage/local/template/cache/NAME`) and
//! `local-lvm` (content rootdir: `$ROOT/storage/local-lvm/subvol-<vmid>-disk-<n>` directories).

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{die, Context, Result};
use crate::paths::Root;

/// Storage ids that exist.
pub const STORAGES: &[&str] = &["local", "local-lvm"];

/// Does the storage support container directories (content `rootdir`)?
pub fn supports_rootdir(sid: &str) -> bool {
    sid == "local-lvm"
}

/// Check a storage id exists; message as PVE::Storage::storage_config.
pub fn check_storage(sid: &str) -> Result<()> {
    if STORAGES.contains(&sid) {
        Ok(())
    } else {
        Err(die(format!("storage '{sid}' does not exist")))
    }
}

/// A mount point / rootfs volume reference.
#[derive(Debug, Clone, PartialEq)]
pub enum Volume {
    /// `STORAGE:SIZE` — allocate a new volume of SIZE GiB.
    Alloc { sid: String, size_gib: f64 },
    /// `STORAGE:VOLNAME` — an existing volume.
    Existing { sid: String, volname: String },
    /// An absolute host path (bind mount).
    Path(PathBuf),
}

/// Parse the volume part of rootfs/mpN.
pub fn parse_volume(s: &str) -> std::result::Result<Volume, String> {
    if s.starts_with('/') {
        return Ok(Volume::Path(PathBuf::from(s)));
    }
    let Some((sid, rest)) = s.split_once(':') else {
        return Err(format!("unable to parse volume ID '{s}'"));
    };
    let is_size = !rest.is_empty()
        && rest.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && rest.parse::<f64>().is_ok();
    if is_size {
        Ok(Volume::Alloc {
            sid: sid.to_string(),
            size_gib: rest.parse().unwrap_or(0.0),
        })
    } else {
        Ok(Volume::Existing {
            sid: sid.to_string(),
            volname: rest.to_string(),
        })
    }
}

/// Format a size like PVE (`4G`, `512M`).
pub fn format_size_gib(g: f64) -> String {
    if g.fract() == 0.0 {
        format!("{}G", g as u64)
    } else {
        format!("{}M", (g * 1024.0).round() as u64)
    }
}

/// Host path of an existing volume of storage `sid`.
pub fn volume_path(root: &Root, sid: &str, volname: &str) -> Result<PathBuf> {
    check_storage(sid)?;
    if volname.contains('/') && sid == "local-lvm" || volname.contains("..") || volname.is_empty() {
        return Err(die(format!("unable to parse volume name '{volname}'")));
    }
    if sid == "local" {
        return Ok(root.storage_dir("local").join(volname));
    }
    Ok(root.storage_dir(sid).join(volname))
}

/// VMID owning a `subvol-<vmid>-disk-<n>` volume name.
pub fn volume_owner(volname: &str) -> Option<u32> {
    let r = volname.strip_prefix("subvol-")?;
    let (v, _) = r.split_once("-disk-")?;
    v.parse().ok()
}

/// Allocate a new directory volume; returns its volume id.
pub fn alloc_subvol(root: &Root, sid: &str, vmid: u32) -> Result<String> {
    check_storage(sid)?;
    if !supports_rootdir(sid) {
        return Err(die(format!(
            "storage '{sid}' does not support container directories"
        )));
    }
    let dir = root.storage_dir(sid);
    for n in 0..1000 {
        let name = format!("subvol-{vmid}-disk-{n}");
        let p = dir.join(&name);
        if p.exists() {
            continue;
        }
        fs::create_dir(&p).ctx(|| format!("unable to create volume '{}'", p.display()))?;
        return Ok(format!("{sid}:{name}"));
    }
    Err(die(format!(
        "unable to allocate an image name for VM {vmid} in storage '{sid}'"
    )))
}

/// Remove a volume (directory tree). Missing volumes are fine.
pub fn free_volume(root: &Root, volid: &str) -> Result<()> {
    let Ok(Volume::Existing { sid, volname }) = parse_volume(volid) else {
        return Ok(());
    };
    let p = volume_path(root, &sid, &volname)?;
    remove_tree(&p)
}

/// Remove a directory tree without following symlinks; missing is fine.
pub fn remove_tree(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Err(_) => Ok(()),
        Ok(m) if m.is_dir() => {
            fs::remove_dir_all(p).ctx(|| format!("unable to remove '{}'", p.display()))
        }
        Ok(_) => fs::remove_file(p).ctx(|| format!("unable to remove '{}'", p.display())),
    }
}

/// Resolve an ostemplate argument (`STORAGE:vztmpl/NAME` or absolute path) to a file.
pub fn resolve_template(root: &Root, ostemplate: &str) -> Result<PathBuf> {
    let path = if ostemplate.starts_with('/') {
        PathBuf::from(ostemplate)
    } else {
        let Some((sid, volname)) = ostemplate.split_once(':') else {
            return Err(die(format!("unable to parse volume ID '{ostemplate}'")));
        };
        check_storage(sid)?;
        let Some(name) = volname.strip_prefix("vztmpl/") else {
            return Err(die(format!(
                "unable to parse directory volume name '{volname}'"
            )));
        };
        if sid != "local" {
            return Err(die(format!(
                "storage '{sid}' does not support content-type 'vztmpl'"
            )));
        }
        if name.contains('/') || compression_of(name).is_none() {
            return Err(die(format!(
                "unable to parse directory volume name '{volname}'"
            )));
        }
        root.template_dir().join(name)
    };
    if !path.is_file() {
        return Err(die(format!("can't find file '{ostemplate}'")));
    }
    Ok(path)
}

/// Compression of a template by name: Some("") for plain tar, tar flag otherwise.
pub fn compression_of(name: &str) -> Option<&'static str> {
    if name.ends_with(".tar") {
        Some("")
    } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        Some("--gzip")
    } else if name.ends_with(".tar.xz") {
        Some("--xz")
    } else if name.ends_with(".tar.zst") {
        Some("--zstd")
    } else if name.ends_with(".tar.bz2") {
        Some("--bzip2")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes() {
        assert_eq!(
            parse_volume("local-lvm:4"),
            Ok(Volume::Alloc {
                sid: "local-lvm".into(),
                size_gib: 4.0
            })
        );
        assert_eq!(
            parse_volume("local-lvm:subvol-100-disk-0"),
            Ok(Volume::Existing {
                sid: "local-lvm".into(),
                volname: "subvol-100-disk-0".into()
            })
        );
        assert_eq!(parse_volume("/srv/x"), Ok(Volume::Path("/srv/x".into())));
        assert!(parse_volume("nonsense").is_err());
        assert_eq!(format_size_gib(4.0), "4G");
        assert_eq!(format_size_gib(0.5), "512M");
        assert_eq!(volume_owner("subvol-123-disk-1"), Some(123));
        assert_eq!(compression_of("a.tar.zst"), Some("--zstd"));
        assert_eq!(compression_of("a.zip"), None);
    }
}
