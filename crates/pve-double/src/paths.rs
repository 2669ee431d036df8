//! The on-disk layout under `$PVE_DOUBLE_ROOT`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::{die, Context, Result};

/// Resolved state root and node name.
#[derive(Debug, Clone)]
pub struct Root {
    pub root: PathBuf,
    pub node: String,
}

impl Root {
    /// From `PVE_DOUBLE_ROOT` (required, absolute) and `PVE_DOUBLE_NODE` (default `pve`).
    pub fn from_env() -> Result<Root> {
        let r = std::env::var_os("PVE_DOUBLE_ROOT").ok_or_else(|| {
            die("PVE_DOUBLE_ROOT is not set (pve-double keeps all its state there)")
        })?;
        let root = PathBuf::from(r);
        if !root.is_absolute() {
            return Err(die(format!(
                "PVE_DOUBLE_ROOT must be an absolute path, got '{}'",
                root.display()
            )));
        }
        let node = std::env::var("PVE_DOUBLE_NODE")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "pve".to_string());
        if !valid_node_name(&node) {
            return Err(die(format!(
                "PVE_DOUBLE_NODE: invalid node name '{node}' (letters, digits and '-', max 63)"
            )));
        }
        let r = Root { root, node };
        r.ensure_layout()?;
        Ok(r)
    }

    /// Create the fixed directories (all 0755 so the unprivileged CT root can traverse them)
    /// and the pmxcfs-like tree (`etc/pve/nodes/<node>/{lxc,qemu-server}`, symlinks
    /// `etc/pve/{lxc,qemu-server,local}`; see cluster.rs).
    pub fn ensure_layout(&self) -> Result<()> {
        crate::cluster::ensure_tree(self)?;
        for d in [
            self.conf_dir(),
            self.lock_dir(),
            self.lxc_path(),
            self.run_dir(),
            self.template_dir(),
            self.storage_dir("local-lvm"),
        ] {
            if !d.is_dir() {
                fs::create_dir_all(&d)
                    .ctx(|| format!("unable to create directory '{}'", d.display()))?;
            }
        }
        for d in [
            self.root.clone(),
            self.root.join("storage"),
            self.storage_dir("local-lvm"),
            self.lxc_path(),
        ] {
            chmod_at_least(&d, 0o755)?;
        }
        Ok(())
    }

    /// Make every directory from `/` down to `p` traversable by others (o+x), as a Proxmox host
    /// has it for /var/lib/lxc; needed so uid 100000 can reach an unprivileged CT's rootfs.
    pub fn ensure_traversable(&self, p: &Path) -> Result<()> {
        let mut cur = PathBuf::from("/");
        for c in p.components().skip(1) {
            cur.push(c);
            let md = match fs::symlink_metadata(&cur) {
                Ok(m) => m,
                Err(_) => break,
            };
            if md.is_dir() && md.permissions().mode() & 0o001 == 0 {
                let mode = md.permissions().mode() | 0o001;
                fs::set_permissions(&cur, fs::Permissions::from_mode(mode))
                    .ctx(|| format!("unable to chmod '{}'", cur.display()))?;
            }
        }
        Ok(())
    }

    /// `etc/pve` (bind-mounted at /etc/pve by pve-shape).
    pub fn pve_dir(&self) -> PathBuf {
        self.root.join("etc/pve")
    }
    /// `etc/pve/nodes/<node>` of any node.
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.pve_dir().join("nodes").join(node)
    }
    /// This node's CT configs: `etc/pve/nodes/<node>/lxc` (`etc/pve/lxc` links here).
    pub fn conf_dir(&self) -> PathBuf {
        self.node_dir(&self.node).join("lxc")
    }
    /// `etc/pve/.vmlist` (all guests of the cluster, JSON).
    pub fn vmlist_path(&self) -> PathBuf {
        self.pve_dir().join(".vmlist")
    }
    /// Lock serialising cluster-tree writes (pmxcfs applies them one at a time).
    pub fn cluster_lock_path(&self) -> PathBuf {
        self.root.join("run/pmxcfs.lock")
    }
    /// Unix socket of pve-shape's service manager (present only inside a shape).
    pub fn manager_socket(&self) -> PathBuf {
        self.root.join("run/manager.sock")
    }
    pub fn conf_path(&self, vmid: u32) -> PathBuf {
        self.conf_dir().join(format!("{vmid}.conf"))
    }
    /// The path as Proxmox names it in messages (relative to /etc/pve).
    pub fn conf_display(&self, vmid: u32) -> String {
        format!("nodes/{}/lxc/{vmid}.conf", self.node)
    }
    pub fn lock_dir(&self) -> PathBuf {
        self.root.join("lock")
    }
    pub fn lock_path(&self, vmid: u32) -> PathBuf {
        self.lock_dir().join(format!("pve-config-{vmid}.lock"))
    }
    pub fn lxc_path(&self) -> PathBuf {
        self.root.join("lxc")
    }
    pub fn lxc_dir(&self, vmid: u32) -> PathBuf {
        self.lxc_path().join(vmid.to_string())
    }
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run/pve")
    }
    pub fn stderr_path(&self, vmid: u32) -> PathBuf {
        self.run_dir().join(format!("ct-{vmid}.stderr"))
    }
    pub fn lxc_log_path(&self, vmid: u32) -> PathBuf {
        self.run_dir().join(format!("ct-{vmid}.lxc.log"))
    }
    pub fn console_log_path(&self, vmid: u32) -> PathBuf {
        self.run_dir().join(format!("ct-{vmid}.console.log"))
    }
    pub fn storage_dir(&self, sid: &str) -> PathBuf {
        self.root.join("storage").join(sid)
    }
    pub fn template_dir(&self) -> PathBuf {
        self.storage_dir("local").join("template/cache")
    }
    pub fn calls_log(&self) -> PathBuf {
        self.root.join("calls.log")
    }
    pub fn faults_file(&self) -> PathBuf {
        self.root.join("faults")
    }
    pub fn faults_state(&self) -> PathBuf {
        self.root.join("run/faults.consumed")
    }
    pub fn datacenter_cfg(&self) -> PathBuf {
        self.pve_dir().join("datacenter.cfg")
    }
}

/// A node name as PVE accepts it (a DNS label).
pub fn valid_node_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !n.starts_with('-')
        && !n.ends_with('-')
}

fn chmod_at_least(p: &Path, mode: u32) -> Result<()> {
    if let Ok(md) = fs::metadata(p) {
        let cur = md.permissions().mode() & 0o7777;
        if cur & mode != mode {
            fs::set_permissions(p, fs::Permissions::from_mode(cur | mode))
                .ctx(|| format!("unable to chmod '{}'", p.display()))?;
        }
    }
    Ok(())
}
