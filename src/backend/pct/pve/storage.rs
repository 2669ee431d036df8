//! `/etc/pve/storage.cfg`: which storage holds CT volumes and which rootfs size it takes.
//! Format: a `type: name` header line, then indented `key value` lines, blank lines between.

use std::path::Path;

use super::super::cmd::Rootfs;
use crate::error::{Error, Result};

pub const STORAGE_CFG: &str = "/etc/pve/storage.cfg";
/// Rootfs size used where a storage needs one (lvmthin, lvm, rbd...) and none is configured.
pub const DEFAULT_SIZED_GIB: u32 = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    pub name: String,
    /// `dir`, `lvmthin`, `zfspool`, `btrfs`, `nfs`, ...
    pub kind: String,
    pub content: Vec<String>,
    pub disabled: bool,
}

impl Storage {
    /// Storages on which `STORAGE:0` makes a plain directory / subvolume (no mkfs, no cap).
    pub fn takes_size_zero(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "dir" | "zfspool" | "btrfs" | "nfs" | "cifs" | "cephfs" | "glusterfs"
        )
    }
}

pub fn parse(text: &str) -> Vec<Storage> {
    let mut out: Vec<Storage> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            if let Some((kind, name)) = line.split_once(':') {
                out.push(Storage {
                    name: name.trim().to_string(),
                    kind: kind.trim().to_string(),
                    content: Vec::new(),
                    disabled: false,
                });
            }
            continue;
        }
        let Some(cur) = out.last_mut() else { continue };
        let l = line.trim();
        let (k, v) = l.split_once(char::is_whitespace).unwrap_or((l, ""));
        match k {
            "content" => {
                cur.content = v
                    .split(',')
                    .map(|c| c.trim().to_string())
                    .filter(|c| !c.is_empty())
                    .collect()
            }
            "disable" => cur.disabled = !matches!(v.trim(), "0"),
            _ => {}
        }
    }
    out
}

/// The `--rootfs` for a new CT on `name`: `size_gib` 0 means "no cap where the storage can
/// (dir, zfspool, btrfs...), else [`DEFAULT_SIZED_GIB`]".
pub fn rootfs_for(storages: &[Storage], name: &str, size_gib: u32) -> Result<Rootfs> {
    let Some(s) = storages.iter().find(|s| s.name == name) else {
        let known: Vec<&str> = storages.iter().map(|s| s.name.as_str()).collect();
        return Err(Error::precondition(format!(
            "[pct] storage = {name:?} is not defined in {STORAGE_CFG} (defined: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    };
    if s.disabled {
        return Err(Error::precondition(format!(
            "storage '{name}' is disabled in {STORAGE_CFG}"
        )));
    }
    if !s.content.iter().any(|c| c == "rootdir") {
        return Err(Error::precondition(format!(
            "storage '{name}' ({}) does not hold container volumes: its content is [{}], \
             without 'rootdir'; pick another [pct] storage or add 'Container' content to it",
            s.kind,
            s.content.join(",")
        )));
    }
    let size_gib = match size_gib {
        0 if s.takes_size_zero() => 0,
        0 => DEFAULT_SIZED_GIB,
        n => n,
    };
    Ok(Rootfs::Alloc {
        storage: name.to_string(),
        size_gib,
    })
}

/// Read and parse the host's storage.cfg.
pub fn load(path: &Path) -> Result<Vec<Storage>> {
    match super::read_capped(path, 1 << 20) {
        Ok(Some(t)) => Ok(parse(&t)),
        Ok(None) => Err(Error::precondition(format!(
            "{} does not exist: is this a Proxmox VE host (pmxcfs mounted at /etc/pve)?",
            path.display()
        ))),
        Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LVM: &str = "dir: local\n\tpath /var/lib/vz\n\tcontent iso,vztmpl,backup\n\n\
                       lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\tcontent rootdir,images\n";
    const ZFS: &str = "dir: local\n\tpath /var/lib/vz\n\tcontent iso,vztmpl,backup\n\n\
                       zfspool: local-zfs\n\tpool rpool/data\n\tsparse 1\n\tcontent images,rootdir\n";
    const BTRFS: &str = "btrfs: local-btrfs\n\tpath /var/lib/pve/local-btrfs\n\
                         \tcontent iso,vztmpl,backup,rootdir,images\n\ndir: old\n\tpath /x\n\
                         \tcontent rootdir\n\tdisable\n";

    fn alloc(s: &str, n: &str, size: u32) -> Result<Rootfs> {
        rootfs_for(&parse(s), n, size)
    }

    #[test]
    fn installs() {
        let lvm = parse(LVM);
        assert_eq!(lvm.len(), 2);
        assert_eq!(lvm[1].kind, "lvmthin");
        assert_eq!(lvm[1].content, ["rootdir", "images"]);
        let sized = |r: Rootfs| match r {
            Rootfs::Alloc { size_gib, .. } => size_gib,
            _ => panic!(),
        };
        assert_eq!(sized(alloc(LVM, "local-lvm", 0).unwrap()), 4);
        assert_eq!(sized(alloc(LVM, "local-lvm", 8).unwrap()), 8);
        assert_eq!(sized(alloc(ZFS, "local-zfs", 0).unwrap()), 0);
        assert_eq!(sized(alloc(BTRFS, "local-btrfs", 0).unwrap()), 0);
        assert_eq!(sized(alloc(BTRFS, "local-btrfs", 2).unwrap()), 2);
    }

    #[test]
    fn clear_errors() {
        let e = alloc(LVM, "local", 0).unwrap_err().to_string();
        assert!(e.contains("without 'rootdir'") && e.contains("local"), "{e}");
        let e = alloc(ZFS, "local-lvm", 0).unwrap_err().to_string();
        assert!(e.contains("not defined") && e.contains("local-zfs"), "{e}");
        let e = alloc(BTRFS, "old", 0).unwrap_err().to_string();
        assert!(e.contains("disabled"), "{e}");
        let e = load(Path::new("/nonexistent/storage.cfg")).unwrap_err().to_string();
        assert!(e.contains("Proxmox VE host"), "{e}");
    }
}
