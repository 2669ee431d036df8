//! Storages as configured in `$ROOT/etc/pve/storage.cfg` (see [`cfg`]); every storage keeps its
//! data below `$ROOT/storage/<sid>/`.
//!
//! Volume names per type:
//! * lvmthin: `vm-<vmid>-disk-<n>`, a loop-mounted ext4 image with a hard size cap ([`thin`]);
//! * zfspool: `subvol-<vmid>-disk-<n>`, a directory (size recorded, not enforced);
//! * dir/btrfs (nfs/cifs/cephfs): `<vmid>/subvol-<vmid>-disk-<n>.subvol`, a directory at
//!   `images/<vmid>/...` (size recorded, not enforced).
//!
//! Base volumes and linked clones (`pct template`, `pct clone`): see [`clone`].
//!
//! Templates: `<sid>:vztmpl/NAME` = `$ROOT/storage/<sid>/template/cache/NAME`.

pub mod cfg;
pub mod clone;
pub mod thin;
pub mod written;

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{die, Context, Result};
use crate::paths::Root;
pub use cfg::{Kind, StorageDef};

/// Check a storage id exists; message as PVE::Storage::storage_config.
pub fn check_storage(root: &Root, sid: &str) -> Result<StorageDef> {
    cfg::lookup(root, sid)
}

/// Does the storage support container directories (content `rootdir`)?
pub fn supports_rootdir(def: &StorageDef) -> bool {
    def.has_content("rootdir")
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

/// Format a size like PVE::JSONSchema::format_size of the allocated size (`4G`, `512M`,
/// `1T`, and `0T` for size 0).
pub fn format_size_gib(g: f64) -> String {
    let kb = size_kib(g);
    let mb = kb / 1024;
    if mb * 1024 != kb {
        return format!("{kb}K");
    }
    let gb = mb / 1024;
    if gb * 1024 != mb {
        return format!("{mb}M");
    }
    let tb = gb / 1024;
    if tb * 1024 != gb {
        return format!("{gb}G");
    }
    format!("{tb}T")
}

/// KiB of a GiB size as PVE computes it (`int(size_gb * 1024) * 1024`).
pub fn size_kib(g: f64) -> u64 {
    ((g * 1024.0) as u64) * 1024
}

/// A volume name must not escape its storage: no `..`, no empty parts, at most `<vmid>/name`.
fn check_volname(volname: &str) -> Result<()> {
    let parts: Vec<&str> = volname.split('/').collect();
    let ok = !volname.is_empty()
        && !volname.contains("..")
        && parts.iter().all(|p| !p.is_empty())
        && (parts.len() == 1
            || (parts.len() == 2 && parts[0].bytes().all(|b| b.is_ascii_digit()))
            || (parts.len() == 2 && parts[0].starts_with("basevol-"))
            || (parts.len() == 2 && parts[0] == "vztmpl"));
    if ok {
        Ok(())
    } else {
        Err(die(format!("unable to parse volume name '{volname}'")))
    }
}

fn path_in(root: &Root, def: &StorageDef, volname: &str) -> PathBuf {
    let base = root.storage_dir(&def.sid);
    if let Some(name) = volname.strip_prefix("vztmpl/") {
        return base.join("template/cache").join(name);
    }
    match def.kind {
        Kind::Dir | Kind::Btrfs if volname.contains('/') => base.join("images").join(volname),
        // a zfs clone `basevol-X-disk-N/subvol-Y-disk-M` is dataset pool/subvol-Y-disk-M
        _ => base.join(volname.rsplit('/').next().unwrap_or(volname)),
    }
}

/// Host path of an existing volume of storage `sid`.
pub fn volume_path(root: &Root, sid: &str, volname: &str) -> Result<PathBuf> {
    let def = check_storage(root, sid)?;
    check_volname(volname)?;
    Ok(path_in(root, &def, volname))
}

/// VMID owning a volume (`vm-<vmid>-disk-<n>`, `subvol-<vmid>-disk-<n>`, `<vmid>/...`).
pub fn volume_owner(volname: &str) -> Option<u32> {
    let name = volname.rsplit('/').next()?;
    let r = ["subvol-", "vm-", "basevol-", "base-"]
        .iter()
        .find_map(|p| name.strip_prefix(p))?;
    let (v, _) = r.split_once("-disk-")?;
    v.parse().ok()
}

/// Make a volume usable at its path (lvmthin: loop-mount the image). Other kinds: no-op.
pub fn activate(root: &Root, volid: &str) -> Result<()> {
    let Ok(Volume::Existing { sid, volname }) = parse_volume(volid) else {
        return Ok(());
    };
    let def = check_storage(root, &sid)?;
    check_volname(&volname)?;
    if clone::is_clone(root, &sid, &volname) {
        clone::activate(root, &sid, &volname)?;
    } else if def.kind == Kind::LvmThin {
        thin::activate(root, &sid, &volname)?;
    }
    Ok(())
}

/// Allocate a new volume of `size_gib` on `sid` for `vmid`, its root owned by `owner`;
/// returns the volume id.
pub fn alloc(
    root: &Root,
    sid: &str,
    vmid: u32,
    size_gib: f64,
    owner: (u32, u32),
) -> Result<String> {
    let def = check_storage(root, sid)?;
    if !supports_rootdir(&def) {
        return Err(die(format!(
            "storage '{sid}' does not support container directories"
        )));
    }
    let kib = size_kib(size_gib);
    if def.kind == Kind::LvmThin && kib == 0 {
        // pve-container asks for a 'subvol' for size 0, which LvmThinPlugin refuses
        // (the Perl line number is not verified).
        return Err(die(
            "unsupported format 'subvol' at /usr/share/perl5/PVE/Storage/LvmThinPlugin.pm line 202.",
        ));
    }
    if let Kind::Other(t) = &def.kind {
        return Err(die(format!(
            "unable to create containers on storage type '{t}' (not supported by pve-double)"
        )));
    }
    for n in 0..1000 {
        let volname = match def.kind {
            Kind::LvmThin => format!("vm-{vmid}-disk-{n}"),
            Kind::ZfsPool => format!("subvol-{vmid}-disk-{n}"),
            _ => format!("{vmid}/subvol-{vmid}-disk-{n}.subvol"),
        };
        let p = path_in(root, &def, &volname);
        if p.exists() || thin::image_path(root, sid, &volname).exists() {
            continue;
        }
        if def.kind == Kind::LvmThin {
            if let Err(e) = thin::create(root, sid, &volname, kib, owner) {
                let _ = thin::free(root, sid, &volname);
                return Err(e);
            }
        } else {
            if let Some(d) = p.parent() {
                fs::create_dir_all(d).ctx(|| format!("unable to create '{}'", d.display()))?;
            }
            fs::create_dir(&p).ctx(|| format!("unable to create volume '{}'", p.display()))?;
            std::os::unix::fs::lchown(&p, Some(owner.0), Some(owner.1))
                .ctx(|| format!("unable to chown '{}'", p.display()))?;
        }
        return Ok(format!("{sid}:{volname}"));
    }
    Err(die(format!(
        "unable to allocate an image name for VM {vmid} in storage '{sid}'"
    )))
}

/// Remove a volume. Missing volumes are fine.
pub fn free_volume(root: &Root, volid: &str) -> Result<()> {
    let Ok(Volume::Existing { sid, volname }) = parse_volume(volid) else {
        return Ok(());
    };
    let def = check_storage(root, &sid)?;
    check_volname(&volname)?;
    if clone::is_clone(root, &sid, &volname) {
        return clone::free(root, &sid, &volname);
    }
    // LVM-thin lets a used base go (see thin::free); other storages refuse
    if def.kind != Kind::LvmThin
        && clone::is_base(&volname)
        && !clone::clones_of(root, &sid, &volname).is_empty()
    {
        return Err(die(format!(
            "base volume '{volname}' is still in use by linked clones"
        )));
    }
    if def.kind == Kind::LvmThin {
        return thin::free(root, &sid, &volname);
    }
    let p = path_in(root, &def, &volname);
    remove_tree(&p)?;
    if volname.contains('/') {
        // images/<vmid>/ of dir storages: remove when empty
        if let Some(d) = p.parent() {
            let _ = fs::remove_dir(d);
        }
    }
    Ok(())
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
        let def = check_storage(root, sid)?;
        let Some(name) = volname.strip_prefix("vztmpl/") else {
            return Err(die(format!(
                "unable to parse directory volume name '{volname}'"
            )));
        };
        if !def.has_content("vztmpl") {
            return Err(die(format!(
                "storage '{sid}' does not support content-type 'vztmpl'"
            )));
        }
        if name.contains('/') || compression_of(name).is_none() {
            return Err(die(format!(
                "unable to parse directory volume name '{volname}'"
            )));
        }
        root.storage_dir(sid).join("template/cache").join(name)
    };
    if !path.is_file() {
        return Err(die(format!("can't find file '{ostemplate}'")));
    }
    Ok(path)
}

/// tar's decompression option for a template name as pve-container picks it (Some("") for a
/// plain tar, None when the name does not look like a template archive).
pub fn compression_of(name: &str) -> Option<&'static str> {
    if name.ends_with(".tar") {
        Some("")
    } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        Some("-z")
    } else if name.ends_with(".tar.xz") {
        Some("-J")
    } else if name.ends_with(".tar.zst") {
        Some("--zstd")
    } else if name.ends_with(".tar.bz2") {
        Some("-j")
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
            parse_volume("local-lvm:vm-100-disk-0"),
            Ok(Volume::Existing {
                sid: "local-lvm".into(),
                volname: "vm-100-disk-0".into()
            })
        );
        assert_eq!(parse_volume("/srv/x"), Ok(Volume::Path("/srv/x".into())));
        assert!(parse_volume("nonsense").is_err());
        assert_eq!(format_size_gib(4.0), "4G");
        assert_eq!(format_size_gib(0.5), "512M");
        assert_eq!(format_size_gib(0.1), "102M");
        assert_eq!(format_size_gib(0.0), "0T");
        assert_eq!(format_size_gib(2048.0), "2T");
        assert_eq!(size_kib(0.5), 512 * 1024);
        assert_eq!(size_kib(0.0), 0);
        assert_eq!(volume_owner("subvol-123-disk-1"), Some(123));
        assert_eq!(volume_owner("vm-124-disk-0"), Some(124));
        assert_eq!(volume_owner("125/subvol-125-disk-0.subvol"), Some(125));
        assert_eq!(volume_owner("base-1-disk-0"), Some(1));
        assert_eq!(volume_owner("basevol-7-disk-0/subvol-8-disk-0"), Some(8));
        assert_eq!(volume_owner("template-1"), None);
        assert_eq!(compression_of("a.tar.zst"), Some("--zstd"));
        assert_eq!(compression_of("a.tar.gz"), Some("-z"));
        assert_eq!(compression_of("a.zip"), None);
    }

    #[test]
    fn volnames() {
        assert!(check_volname("vm-1-disk-0").is_ok());
        assert!(check_volname("100/subvol-100-disk-0.subvol").is_ok());
        assert!(check_volname("vztmpl/x.tar").is_ok());
        assert!(check_volname("basevol-1-disk-0/subvol-2-disk-0").is_ok());
        assert!(check_volname("../x").is_err());
        assert!(check_volname("a/b").is_err());
        assert!(check_volname("1/2/3").is_err());
        assert!(check_volname("").is_err());
    }

    fn tmp_root(tag: &str, cfg: &str) -> Root {
        let d = std::env::temp_dir().join(format!("double-st-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("etc/pve")).unwrap();
        if !cfg.is_empty() {
            fs::write(d.join("etc/pve/storage.cfg"), cfg).unwrap();
        }
        Root {
            root: d,
            node: "pve".into(),
        }
    }

    #[test]
    fn lookup_and_paths() {
        let r = tmp_root("lookup", "");
        // default written on first use (flavour lvm unless the env says otherwise)
        if std::env::var_os("PVE_DOUBLE_INSTALL").is_none() {
            let d = check_storage(&r, "local-lvm").unwrap();
            assert_eq!(d.kind, Kind::LvmThin);
            assert!(cfg::cfg_path(&r).is_file());
        }
        let e = check_storage(&r, "nope").unwrap_err();
        assert_eq!(e.to_string(), "storage 'nope' does not exist");
        fs::remove_dir_all(&r.root).unwrap();

        let r = tmp_root(
            "dirs",
            "dir: local\n\tpath /var/lib/vz\n\tcontent vztmpl,rootdir\nzfspool: z\n\tpool rpool/data\n\tcontent rootdir\n",
        );
        let v = alloc(&r, "local", 105, 0.0, (0, 0)).unwrap();
        assert_eq!(v, "local:105/subvol-105-disk-0.subvol");
        let p = volume_path(&r, "local", "105/subvol-105-disk-0.subvol").unwrap();
        assert_eq!(
            p,
            r.root
                .join("storage/local/images/105/subvol-105-disk-0.subvol")
        );
        assert!(p.is_dir());
        let z = alloc(&r, "z", 105, 2.0, (0, 0)).unwrap();
        assert_eq!(z, "z:subvol-105-disk-0");
        assert_eq!(
            alloc(&r, "z", 105, 2.0, (0, 0)).unwrap(),
            "z:subvol-105-disk-1"
        );
        free_volume(&r, &v).unwrap();
        assert!(!r.root.join("storage/local/images/105").exists());
        free_volume(&r, &z).unwrap();
        assert!(!r.root.join("storage/z/subvol-105-disk-0").exists());
        assert_eq!(
            resolve_template(&r, "local:vztmpl/none.tar")
                .unwrap_err()
                .to_string(),
            "can't find file 'local:vztmpl/none.tar'"
        );
        assert_eq!(
            resolve_template(&r, "z:vztmpl/a.tar")
                .unwrap_err()
                .to_string(),
            "storage 'z' does not support content-type 'vztmpl'"
        );
        fs::remove_dir_all(&r.root).unwrap();
    }

    #[test]
    fn lvmthin_rules() {
        let r = tmp_root(
            "thin",
            "lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\tcontent rootdir,images\ndir: local\n\tpath /x\n\tcontent vztmpl\n",
        );
        let e = alloc(&r, "local-lvm", 106, 0.0, (0, 0)).unwrap_err();
        assert!(e.to_string().starts_with("unsupported format 'subvol'"));
        let e = alloc(&r, "local", 106, 1.0, (0, 0)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "storage 'local' does not support container directories"
        );
        fs::remove_dir_all(&r.root).unwrap();
    }
}
