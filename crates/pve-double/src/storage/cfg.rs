//! `/etc/pve/storage.cfg` (here `$ROOT/etc/pve/storage.cfg`): parser and the defaults a fresh
//! Proxmox VE install writes, per install flavour (`PVE_DOUBLE_INSTALL` / `$ROOT/install`).

use std::fs;
use std::path::PathBuf;

use crate::error::{die, Context, Result};
use crate::paths::Root;

/// Storage backends the double knows how to imitate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// `dir` (and the path-based network storages nfs/cifs/cephfs): directory volumes.
    Dir,
    /// `lvmthin`: sized volumes only, a loop-mounted ext4 image (hard size cap).
    LvmThin,
    /// `zfspool`: subvolume directories.
    ZfsPool,
    /// `btrfs`: subvolume directories.
    Btrfs,
    /// Any other type (lvm, rbd, iscsi, ...): listed, but volumes cannot be created on it.
    Other(String),
}

impl Kind {
    fn from_type(t: &str) -> Kind {
        match t {
            "dir" | "nfs" | "cifs" | "cephfs" => Kind::Dir,
            "lvmthin" => Kind::LvmThin,
            "zfspool" => Kind::ZfsPool,
            "btrfs" => Kind::Btrfs,
            o => Kind::Other(o.to_string()),
        }
    }
}

/// One storage section.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageDef {
    pub sid: String,
    pub type_name: String,
    pub kind: Kind,
    pub content: Vec<String>,
    /// Other properties in file order (`path`, `vgname`, `thinpool`, `pool`, ...).
    pub props: Vec<(String, String)>,
}

impl StorageDef {
    pub fn has_content(&self, c: &str) -> bool {
        self.content.iter().any(|x| x == c)
    }
    pub fn prop(&self, k: &str) -> Option<&str> {
        self.props
            .iter()
            .find(|(kk, _)| kk == k)
            .map(|(_, v)| v.as_str())
    }
    pub fn disabled(&self) -> bool {
        self.prop("disable").is_some_and(|v| v != "0")
    }
}

/// Parse storage.cfg text: `type: id` headers, indented `key value` lines, `#` comments.
pub fn parse(text: &str) -> std::result::Result<Vec<StorageDef>, String> {
    let mut out: Vec<StorageDef> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let indented = line.starts_with([' ', '\t']);
        if !indented {
            let Some((ty, sid)) = t.split_once(':') else {
                return Err(format!("storage.cfg line {}: syntax error '{t}'", n + 1));
            };
            let (ty, sid) = (ty.trim(), sid.trim());
            let valid_id = !sid.is_empty()
                && sid.as_bytes()[0].is_ascii_alphabetic()
                && sid
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !valid_id || ty.is_empty() {
                return Err(format!("storage.cfg line {}: syntax error '{t}'", n + 1));
            }
            if out.iter().any(|s| s.sid == sid) {
                return Err(format!("storage.cfg: duplicate storage ID '{sid}'"));
            }
            out.push(StorageDef {
                sid: sid.to_string(),
                type_name: ty.to_string(),
                kind: Kind::from_type(ty),
                content: Vec::new(),
                props: Vec::new(),
            });
            continue;
        }
        let Some(cur) = out.last_mut() else {
            return Err(format!(
                "storage.cfg line {}: property outside a section",
                n + 1
            ));
        };
        let (k, v) = match t.split_once([' ', '\t']) {
            Some((k, v)) => (k, v.trim()),
            None => (t, "1"),
        };
        if k == "content" {
            cur.content = v
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
        } else {
            cur.props.push((k.to_string(), v.to_string()));
        }
    }
    Ok(out)
}

/// Install flavour of the imitated host (which storage the installer created).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Lvm,
    Zfs,
    Btrfs,
}

impl Flavour {
    /// From `PVE_DOUBLE_INSTALL`, else `$ROOT/install`, else `lvm` (ext4/xfs install).
    pub fn load(root: &Root) -> Result<Flavour> {
        let v = match std::env::var("PVE_DOUBLE_INSTALL") {
            Ok(v) if !v.trim().is_empty() => v,
            _ => fs::read_to_string(root.root.join("install")).unwrap_or_default(),
        };
        match v.trim() {
            "" | "lvm" => Ok(Flavour::Lvm),
            "zfs" => Ok(Flavour::Zfs),
            "btrfs" => Ok(Flavour::Btrfs),
            o => Err(die(format!(
                "pve-double: unknown install flavour '{o}' (PVE_DOUBLE_INSTALL or $PVE_DOUBLE_ROOT/install); expected lvm, zfs or btrfs"
            ))),
        }
    }
}

const LOCAL: &str = "dir: local\n\tpath /var/lib/vz\n\tcontent iso,vztmpl,backup\n\n";

/// The storage.cfg the Proxmox VE installer writes for a flavour.
pub fn default_text(f: Flavour) -> String {
    let second = match f {
        Flavour::Lvm => {
            "lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\tcontent rootdir,images\n"
        }
        Flavour::Zfs => {
            "zfspool: local-zfs\n\tpool rpool/data\n\tsparse 1\n\tcontent images,rootdir\n"
        }
        Flavour::Btrfs => {
            "btrfs: local-btrfs\n\tpath /var/lib/pve/local-btrfs\n\tcontent iso,vztmpl,backup,rootdir,images\n"
        }
    };
    format!("{LOCAL}{second}")
}

pub fn cfg_path(root: &Root) -> PathBuf {
    root.root.join("etc/pve/storage.cfg")
}

/// Read storage.cfg, writing the install default first when it is missing.
pub fn load(root: &Root) -> Result<Vec<StorageDef>> {
    let p = cfg_path(root);
    let text = match fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let t = default_text(Flavour::load(root)?);
            if let Some(d) = p.parent() {
                fs::create_dir_all(d).ctx(|| format!("unable to create '{}'", d.display()))?;
            }
            let tmp = p.with_extension(format!("tmp.{}", std::process::id()));
            fs::write(&tmp, &t).ctx(|| format!("unable to write '{}'", tmp.display()))?;
            fs::rename(&tmp, &p).ctx(|| format!("unable to write '{}'", p.display()))?;
            t
        }
        Err(e) => return Err(die(format!("unable to read '{}' - {e}", p.display()))),
    };
    parse(&text).map_err(die)
}

/// Write the install default when storage.cfg is missing (every pct/pvesh call does this, so a
/// root is complete after its first call); a malformed file is left to the commands using it.
pub fn ensure(root: &Root) -> Result<()> {
    if cfg_path(root).exists() {
        return Ok(());
    }
    load(root).map(|_| ())
}

/// The named storage; message as PVE::Storage::storage_config.
pub fn lookup(root: &Root, sid: &str) -> Result<StorageDef> {
    load(root)?
        .into_iter()
        .find(|s| s.sid == sid)
        .ok_or_else(|| die(format!("storage '{sid}' does not exist")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let l = parse(&default_text(Flavour::Lvm)).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].sid, "local");
        assert_eq!(l[0].kind, Kind::Dir);
        assert!(l[0].has_content("vztmpl") && !l[0].has_content("rootdir"));
        assert_eq!(l[0].prop("path"), Some("/var/lib/vz"));
        assert_eq!(l[1].sid, "local-lvm");
        assert_eq!(l[1].kind, Kind::LvmThin);
        assert_eq!(l[1].prop("vgname"), Some("pve"));
        assert!(l[1].has_content("rootdir"));
        let z = parse(&default_text(Flavour::Zfs)).unwrap();
        assert_eq!(
            (z[1].sid.as_str(), &z[1].kind),
            ("local-zfs", &Kind::ZfsPool)
        );
        assert_eq!(z[1].prop("pool"), Some("rpool/data"));
        let b = parse(&default_text(Flavour::Btrfs)).unwrap();
        assert_eq!(b[1].kind, Kind::Btrfs);
        assert!(b[1].has_content("rootdir") && b[1].has_content("vztmpl"));
    }

    #[test]
    fn parse_details() {
        let t = "# comment\ndir: tpl\n    path /srv/tpl\n    content vztmpl, rootdir\n    shared\n\nnfs: nas\n\tpath /mnt/pve/nas\n\tcontent rootdir\n\trbd: x\nrbd: ceph\n\tcontent rootdir\n";
        let l = parse(t).unwrap();
        assert_eq!(l[0].content, vec!["vztmpl", "rootdir"]);
        assert_eq!(l[0].prop("shared"), Some("1"));
        assert_eq!(l[1].kind, Kind::Dir);
        assert_eq!(l[2].kind, Kind::Other("rbd".into()));
        assert!(parse("\tpath /x\n").is_err());
        assert!(parse("dir local\n").is_err());
        assert!(parse("dir: a\ndir: a\n").is_err());
        assert!(parse("dir: 1x\n").is_err());
        let d = parse("dir: x\n\tdisable\n").unwrap();
        assert!(d[0].disabled());
    }
}
