//! The host cgroup QEMU runs in: the spec's `linux.cgroupsPath` when it is a plain path (as
//! `ctr` and containerd's cgroupfs driver give it), else `pvelxc/<namespace>/<id>`; memory limit =
//! guest RAM + `vm.qemu_overhead_mib`, CPU quota = the spec's. cgroup v1 (each of the memory,
//! cpu, cpuacct and pids hierarchies, as on hybrid hosts) or v2. QEMU joins it between fork and
//! exec (`VmConfig::cgroup_procs`), so it never runs unlimited.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::sys::cgroup::is_unified;

const ROOT: &str = "/sys/fs/cgroup";
/// v1 hierarchies QEMU joins (those present).
const V1_CONTROLLERS: [&str; 4] = ["memory", "cpu", "cpuacct", "pids"];

/// The cgroup path below each hierarchy root: the spec's when it is a plain path, else ours.
pub fn rel_path(spec_path: Option<&str>, ns: &str, id: &str) -> Result<PathBuf> {
    let ours = || PathBuf::from("pvelxc").join(ns).join(id);
    let Some(p) = spec_path.filter(|p| !p.is_empty()) else {
        return Ok(ours());
    };
    // "slice:prefix:name" is the systemd driver's form: not a path we can create here.
    if p.contains(':') {
        return Ok(ours());
    }
    let rel: PathBuf = Path::new(p)
        .components()
        .filter(|c| !matches!(c, Component::RootDir | Component::CurDir))
        .collect();
    if rel.as_os_str().is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(Error::invalid(format!(
            "linux.cgroupsPath {p:?} must be a plain path without '..'"
        )));
    }
    Ok(rel)
}

/// The limits written into the cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    /// (quota, period) in microseconds.
    pub cpu: Option<(i64, u64)>,
}

/// A created cgroup (one dir per v1 hierarchy, or one v2 dir).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuCgroup {
    pub dirs: Vec<PathBuf>,
    /// Remove the (then empty) parent too.
    pub prune_parent: bool,
}

/// `<ns>/<id>` (ctr's default) or our own `pvelxc/<ns>/<id>`.
fn per_namespace(rel: &Path) -> bool {
    let n = rel.components().count();
    n == 2 || (n == 3 && rel.starts_with("pvelxc"))
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value)
        .map_err(|e| Error::io(format!("write {value:?} to {}", path.display()), e))
}

fn mkdir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("create cgroup {}", dir.display()), e))
}

impl QemuCgroup {
    /// Creates the cgroup and sets the limits.
    pub fn create(rel: &Path, limits: Limits) -> Result<QemuCgroup> {
        if is_unified() {
            Self::create_v2(Path::new(ROOT), rel, limits)
        } else {
            Self::create_v1(Path::new(ROOT), rel, limits)
        }
    }

    fn create_v2(root: &Path, rel: &Path, limits: Limits) -> Result<QemuCgroup> {
        // Enable memory and cpu for the children of every ancestor (best effort: an ancestor
        // with processes of its own refuses, and then the limit files below are missing).
        let mut cur = root.to_path_buf();
        for c in rel.components() {
            let _ = std::fs::write(cur.join("cgroup.subtree_control"), "+memory +cpu +pids");
            cur.push(c);
            if !cur.exists() {
                mkdir(&cur)?;
            }
        }
        let cg = QemuCgroup {
            dirs: vec![cur.clone()],
            prune_parent: per_namespace(rel),
        };
        let set = || -> Result<()> {
            write(&cur.join("memory.max"), &limits.memory_bytes.to_string())?;
            if cur.join("memory.swap.max").exists() {
                write(&cur.join("memory.swap.max"), "0")?;
            }
            if let Some((q, p)) = limits.cpu {
                write(&cur.join("cpu.max"), &format!("{q} {p}"))?;
            }
            Ok(())
        };
        if let Err(e) = set() {
            cg.remove();
            return Err(e);
        }
        Ok(cg)
    }

    fn create_v1(root: &Path, rel: &Path, limits: Limits) -> Result<QemuCgroup> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut seen: Vec<PathBuf> = Vec::new();
        for ctrl in V1_CONTROLLERS {
            let base = root.join(ctrl);
            // cpu and cpuacct are often one hierarchy with two names.
            let Ok(real) = std::fs::canonicalize(&base) else {
                continue;
            };
            if seen.contains(&real) {
                continue;
            }
            seen.push(real);
            let dir = base.join(rel);
            mkdir(&dir)?;
            dirs.push(dir);
        }
        let cg = QemuCgroup {
            dirs,
            prune_parent: per_namespace(rel),
        };
        let set = || -> Result<()> {
            let mem = cg
                .dirs
                .iter()
                .find(|d| d.join("memory.limit_in_bytes").exists())
                .ok_or_else(|| Error::precondition("no cgroup v1 memory hierarchy"))?;
            write(
                &mem.join("memory.limit_in_bytes"),
                &limits.memory_bytes.to_string(),
            )?;
            if mem.join("memory.memsw.limit_in_bytes").exists() {
                write(
                    &mem.join("memory.memsw.limit_in_bytes"),
                    &limits.memory_bytes.to_string(),
                )?;
            }
            if let Some((q, p)) = limits.cpu {
                if let Some(cpu) = cg.dirs.iter().find(|d| d.join("cpu.cfs_quota_us").exists()) {
                    write(&cpu.join("cpu.cfs_period_us"), &p.to_string())?;
                    write(&cpu.join("cpu.cfs_quota_us"), &q.to_string())?;
                }
            }
            Ok(())
        };
        if let Err(e) = set() {
            cg.remove();
            return Err(e);
        }
        Ok(cg)
    }

    /// The `cgroup.procs` files QEMU's pid goes into.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Removes the leaf dirs (they must be empty: QEMU gone), and their parent when that is now
    /// empty and is a per-namespace level (`<ns>/<id>` or `pvelxc/<ns>/<id>`, never a parent someone
    /// else manages, such as a Kubernetes pod cgroup). Best effort, logged.
    pub fn remove(&self) {
        for d in &self.dirs {
            if let Err(e) = std::fs::remove_dir(d) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    log::warn!("vm: remove cgroup {}: {e}", d.display());
                }
                continue;
            }
            if self.prune_parent {
                if let Some(parent) = d.parent() {
                    let _ = std::fs::remove_dir(parent);
                }
            }
        }
    }

    /// The dirs a cgroup at `rel` would have (crash cleanup: nothing recorded but the path).
    pub fn existing(rel: &Path) -> QemuCgroup {
        let dirs = if is_unified() {
            vec![Path::new(ROOT).join(rel)]
        } else {
            V1_CONTROLLERS
                .iter()
                .map(|c| Path::new(ROOT).join(c).join(rel))
                .collect()
        };
        QemuCgroup {
            dirs: dirs.into_iter().filter(|d| d.is_dir()).collect(),
            prune_parent: per_namespace(rel),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            rel_path(Some("/default/c1"), "default", "c1").unwrap(),
            PathBuf::from("default/c1")
        );
        assert_eq!(
            rel_path(None, "k8s.io", "c2").unwrap(),
            PathBuf::from("pvelxc/k8s.io/c2")
        );
        assert_eq!(
            rel_path(Some("system.slice:cri:c3"), "n", "c3").unwrap(),
            PathBuf::from("pvelxc/n/c3")
        );
        assert!(rel_path(Some("/a/../../etc"), "n", "x").is_err());
        assert!(rel_path(Some("/"), "n", "x").is_err());
        assert!(per_namespace(Path::new("default/c1")));
        assert!(per_namespace(Path::new("pvelxc/n/c1")));
        assert!(!per_namespace(Path::new("kubepods/burstable/pod1/c1")));
    }

    #[test]
    fn v1_layout_in_a_fake_root() {
        let root = std::env::temp_dir().join(format!("pvelxc-cg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for c in ["memory", "cpu", "pids"] {
            std::fs::create_dir_all(root.join(c).join("a/b")).unwrap();
        }
        std::os::unix::fs::symlink("cpu", root.join("cpuacct")).unwrap();
        std::fs::write(root.join("memory/a/b/memory.limit_in_bytes"), "").unwrap();
        std::fs::write(root.join("cpu/a/b/cpu.cfs_quota_us"), "").unwrap();
        let cg = QemuCgroup::create_v1(
            &root,
            Path::new("a/b"),
            Limits {
                memory_bytes: 1 << 30,
                cpu: Some((150_000, 100_000)),
            },
        )
        .unwrap();
        assert_eq!(cg.dirs.len(), 3, "{:?}", cg.dirs);
        let r = |p: &str| std::fs::read_to_string(root.join(p)).unwrap();
        assert_eq!(r("memory/a/b/memory.limit_in_bytes"), "1073741824");
        assert_eq!(r("cpu/a/b/cpu.cfs_quota_us"), "150000");
        assert_eq!(r("cpu/a/b/cpu.cfs_period_us"), "100000");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
