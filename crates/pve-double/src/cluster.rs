//! The cluster file system as pmxcfs presents it under `$ROOT/etc/pve`:
//!
//! * guest configs live in `nodes/<node>/lxc/<vmid>.conf` and `nodes/<node>/qemu-server/`;
//! * `lxc`, `qemu-server` and `local` are relative symlinks to this node's directories, so
//!   `/etc/pve/lxc/<vmid>.conf` works once the tree is bind-mounted at `/etc/pve`;
//! * `.vmlist` (JSON) lists every guest of every node; pmxcfs derives it from the config files,
//!   the double regenerates it (atomically) after every create/destroy;
//! * VMIDs are unique cluster-wide: pmxcfs refuses a config file for a VMID that another node
//!   (or the other guest type) already has, with EEXIST.
//!
//! Writes that change the set of guests are serialised by a flock on `$ROOT/run/pmxcfs.lock`
//! (pmxcfs applies all writes one at a time).

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{symlink, OpenOptionsExt};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use crate::error::{die, Context, Result};
use crate::paths::{valid_node_name, Root};

mod vmlist;
pub use vmlist::render_vmlist;
use vmlist::write_vmlist;

/// Guest type as `.vmlist` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Lxc,
    Qemu,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Lxc => "lxc",
            Kind::Qemu => "qemu",
        }
    }
    /// Config directory name below `nodes/<node>/`.
    pub fn dir(self) -> &'static str {
        match self {
            Kind::Lxc => "lxc",
            Kind::Qemu => "qemu-server",
        }
    }
    /// How PVE's check_vmid_unused names the guest in messages.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Lxc => "CT",
            Kind::Qemu => "VM",
        }
    }
}

/// A guest found in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guest {
    pub vmid: u32,
    pub node: String,
    pub kind: Kind,
}

/// Create `etc/pve/nodes/<node>/{lxc,qemu-server}` and the symlinks `lxc`, `qemu-server`,
/// `local`; migrate an old flat `etc/pve/lxc` directory into `nodes/<node>/lxc`.
/// Safe to run concurrently (every pct/pvesh call runs it).
pub fn ensure_tree(root: &Root) -> Result<()> {
    let pve = root.pve_dir();
    let node_dir = root.node_dir(&root.node);
    for d in [
        node_dir.join("lxc"),
        node_dir.join("qemu-server"),
        root.root.join("run"),
    ] {
        if !d.is_dir() {
            fs::create_dir_all(&d)
                .ctx(|| format!("unable to create directory '{}'", d.display()))?;
        }
    }
    migrate_flat_dir(root, &pve.join("lxc"))?;
    let rel_node = format!("nodes/{}", root.node);
    ensure_symlink(&pve.join("lxc"), &format!("{rel_node}/lxc"))?;
    ensure_symlink(&pve.join("qemu-server"), &format!("{rel_node}/qemu-server"))?;
    ensure_symlink(&pve.join("local"), &rel_node)?;
    if !root.vmlist_path().exists() {
        refresh_vmlist(root)?;
    }
    Ok(())
}

/// A real directory at `etc/pve/lxc` (the double's old layout): move its files into this
/// node's directory. The directory is first renamed away, so concurrent callers cannot both
/// migrate it.
fn migrate_flat_dir(root: &Root, flat: &Path) -> Result<()> {
    let is_dir = fs::symlink_metadata(flat)
        .map(|m| m.is_dir())
        .unwrap_or(false);
    if !is_dir {
        return Ok(());
    }
    let aside = root
        .pve_dir()
        .join(format!(".lxc.migrating.{}", std::process::id()));
    match fs::rename(flat, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(die(format!("unable to migrate '{}' - {e}", flat.display()))),
    }
    let dest = root.conf_dir();
    for e in fs::read_dir(&aside).ctx(|| format!("unable to read '{}'", aside.display()))? {
        let e = e.ctx(|| format!("unable to read '{}'", aside.display()))?;
        let to = dest.join(e.file_name());
        if to.exists() {
            return Err(die(format!(
                "unable to migrate '{}': '{}' exists (left in '{}')",
                flat.display(),
                to.display(),
                aside.display()
            )));
        }
        fs::rename(e.path(), &to).ctx(|| format!("unable to move '{}'", e.path().display()))?;
    }
    fs::remove_dir(&aside).ctx(|| format!("unable to remove '{}'", aside.display()))
}

/// `link -> target` (relative); replaced atomically when it points elsewhere.
fn ensure_symlink(link: &Path, target: &str) -> Result<()> {
    match fs::read_link(link) {
        Ok(t) if t == Path::new(target) => return Ok(()),
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => match symlink(target, link) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return ensure_symlink(link, target),
            Err(e) => return Err(die(format!("unable to create '{}' - {e}", link.display()))),
        },
        Err(e) => {
            return Err(die(format!(
                "'{}' must be a symlink to '{target}' - {e}",
                link.display()
            )))
        }
    }
    let tmp = link.with_file_name(format!(".symlink.tmp.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    symlink(target, &tmp).ctx(|| format!("unable to create '{}'", tmp.display()))?;
    fs::rename(&tmp, link).ctx(|| format!("unable to replace '{}'", link.display()))
}

/// Every guest config of every node, sorted by VMID (a VMID seen twice is reported twice).
pub fn scan(root: &Root) -> Vec<Guest> {
    let mut out = Vec::new();
    let Ok(nodes) = fs::read_dir(root.pve_dir().join("nodes")) else {
        return out;
    };
    for n in nodes.filter_map(|e| e.ok()) {
        let node = n.file_name().to_string_lossy().into_owned();
        if !valid_node_name(&node) || !n.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        for kind in [Kind::Lxc, Kind::Qemu] {
            let Ok(rd) = fs::read_dir(n.path().join(kind.dir())) else {
                continue;
            };
            for e in rd.filter_map(|e| e.ok()) {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(id) = name.strip_suffix(".conf") else {
                    continue;
                };
                if let Ok(vmid) = crate::vmid::parse_vmid(id) {
                    out.push(Guest {
                        vmid,
                        node: node.clone(),
                        kind,
                    });
                }
            }
        }
    }
    out.sort_by(|a, b| (a.vmid, &a.node).cmp(&(b.vmid, &b.node)));
    out
}

/// Every VMID in use anywhere in the cluster (VMs and CTs share the space), sorted.
pub fn all_ids(root: &Root) -> Vec<u32> {
    let mut v: Vec<u32> = scan(root).into_iter().map(|g| g.vmid).collect();
    v.dedup();
    v
}

/// Which node has `vmid`, and as what.
pub fn owner(root: &Root, vmid: u32) -> Option<(String, Kind)> {
    scan(root)
        .into_iter()
        .find(|g| g.vmid == vmid)
        .map(|g| (g.node, g.kind))
}

/// PVE::Cluster::check_vmid_unused: `CT <vmid> already exists on node '<node>'`
/// (`VM ...` for a QEMU guest).
pub fn check_vmid_unused(root: &Root, vmid: u32) -> Result<()> {
    match owner(root, vmid) {
        None => Ok(()),
        Some((node, kind)) => Err(die(format!(
            "{} {vmid} already exists on node '{node}'",
            kind.label()
        ))),
    }
}

/// The check `pct create` does before taking the lock: with `--force`, only an existing CT
/// of this node may be overwritten.
pub fn precheck_create(root: &Root, vmid: u32, force: bool) -> Result<()> {
    if force && root.conf_path(vmid).exists() {
        return Ok(());
    }
    check_vmid_unused(root, vmid)
}

/// The path as PVE's file_set_contents names it in messages.
fn display_path(root: &Root, vmid: u32) -> String {
    format!("/etc/pve/{}", root.conf_display(vmid))
}

/// Write the first config of a new CT the way pmxcfs accepts it: refused with EEXIST when
/// another node or a VM has the VMID, and (unless `allow_existing`, i.e. `--force`) when the
/// file exists already (O_CREAT|O_EXCL, so a racing writer loses). Regenerates `.vmlist`.
///
/// Message: `close (rename) atomic file '/etc/pve/nodes/<node>/lxc/<vmid>.conf' failed: File
/// exists` — what PVE::Tools::file_set_contents prints when pmxcfs refuses the rename
/// (taken from the source, not verified on a live cluster).
pub fn create_config(root: &Root, vmid: u32, text: &str, allow_existing: bool) -> Result<()> {
    let _lock = cluster_lock(root)?;
    let eexist = || {
        die(format!(
            "close (rename) atomic file '{}' failed: File exists",
            display_path(root, vmid)
        ))
    };
    if let Some((node, kind)) = owner(root, vmid) {
        if node != root.node || kind != Kind::Lxc {
            return Err(eexist());
        }
    }
    let path = root.conf_path(vmid);
    if allow_existing && path.exists() {
        let tmp = root
            .conf_dir()
            .join(format!(".{vmid}.conf.tmp.{}", std::process::id()));
        fs::write(&tmp, text).ctx(|| format!("unable to write '{}'", tmp.display()))?;
        fs::rename(&tmp, &path).ctx(|| format!("unable to write '{}'", path.display()))?;
    } else {
        let mut f = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Err(eexist()),
            Err(e) => return Err(die(format!("unable to create '{}' - {e}", path.display()))),
        };
        if let Err(e) = f.write_all(text.as_bytes()) {
            let _ = fs::remove_file(&path);
            return Err(die(format!("unable to write '{}' - {e}", path.display())));
        }
    }
    write_vmlist(root)
}

/// Regenerate `.vmlist` from the config files (atomically, under the cluster lock).
pub fn refresh_vmlist(root: &Root) -> Result<()> {
    let _lock = cluster_lock(root)?;
    write_vmlist(root)
}

fn cluster_lock(root: &Root) -> Result<Flock<File>> {
    let p = root.cluster_lock_path();
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .ctx(|| format!("unable to open '{}'", p.display()))?;
    Flock::lock(f, FlockArg::LockExclusive)
        .map_err(|(_, e)| die(format!("unable to lock '{}' - {e}", p.display())))
}

/// Write a minimal valid config of a guest on another node (pve-shape's `--foreign`).
pub fn seed_foreign(root: &Root, node: &str, kind: Kind, vmid: u32) -> Result<()> {
    if !valid_node_name(node) {
        return Err(die(format!("invalid node name '{node}'")));
    }
    let _lock = cluster_lock(root)?;
    if let Some((n, k)) = owner(root, vmid) {
        if n == node && k == kind {
            return Ok(());
        }
        return Err(die(format!(
            "{} {vmid} already exists on node '{n}'",
            k.label()
        )));
    }
    let dir = root.node_dir(node).join(kind.dir());
    fs::create_dir_all(&dir).ctx(|| format!("unable to create '{}'", dir.display()))?;
    let text = match kind {
        Kind::Lxc => format!(
            "arch: amd64\nhostname: foreign-{vmid}\nmemory: 512\nostype: debian\nrootfs: local-lvm:vm-{vmid}-disk-0,size=8G\n"
        ),
        Kind::Qemu => format!("memory: 2048\nname: foreign-{vmid}\n"),
    };
    let path = dir.join(format!("{vmid}.conf"));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(&path)
        .ctx(|| format!("unable to create '{}'", path.display()))?;
    f.write_all(text.as_bytes())
        .ctx(|| format!("unable to write '{}'", path.display()))?;
    write_vmlist(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::path::PathBuf;

    fn tmp_root(tag: &str) -> Root {
        let dir = PathBuf::from(format!("/tmp/shape-unit-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Root {
            root: dir,
            node: "pve".into(),
        }
    }

    #[test]
    fn tree_symlinks_migration_and_ownership() {
        let r = tmp_root("tree");
        let flat = r.root.join("etc/pve/lxc");
        fs::create_dir_all(&flat).unwrap();
        fs::write(flat.join("123.conf"), "memory: 512\n").unwrap();
        ensure_tree(&r).unwrap();
        assert_eq!(
            fs::read_link(&flat).unwrap(),
            PathBuf::from("nodes/pve/lxc")
        );
        assert_eq!(
            fs::read_to_string(r.root.join("etc/pve/nodes/pve/lxc/123.conf")).unwrap(),
            "memory: 512\n"
        );
        assert_eq!(
            fs::read_link(r.root.join("etc/pve/qemu-server")).unwrap(),
            PathBuf::from("nodes/pve/qemu-server")
        );
        ensure_tree(&r).unwrap(); // idempotent
        seed_foreign(&r, "pve2", Kind::Qemu, 124).unwrap();
        assert_eq!(owner(&r, 124), Some(("pve2".into(), Kind::Qemu)));
        assert_eq!(
            check_vmid_unused(&r, 124).unwrap_err().to_string(),
            "VM 124 already exists on node 'pve2'"
        );
        assert_eq!(all_ids(&r), vec![123, 124]);
        let v: Value = serde_json::from_str(&fs::read_to_string(r.vmlist_path()).unwrap()).unwrap();
        assert_eq!(v["ids"]["123"]["node"], "pve");
        assert_eq!(v["ids"]["124"]["type"], "qemu");
        // pmxcfs refuses a CT config for a VMID another node has; O_EXCL for this node's
        let e = create_config(&r, 124, "memory: 1\n", true).unwrap_err();
        assert!(
            e.to_string().ends_with("124.conf' failed: File exists"),
            "{e}"
        );
        assert!(create_config(&r, 123, "lock: create\n", false).is_err());
        create_config(&r, 123, "lock: create\n", true).unwrap();
        create_config(&r, 125, "lock: create\n", false).unwrap();
        assert_eq!(owner(&r, 125), Some(("pve".into(), Kind::Lxc)));
        let _ = fs::remove_dir_all(&r.root);
    }
}
