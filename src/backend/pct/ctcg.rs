//! The CT's own cgroup (`lxc/<vmid>`, processes in `lxc/<vmid>/ns`): freeze/thaw for
//! Pause/Resume (`pct suspend` is CRIU, not a freeze) and the host pids for `ps`.

use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::sys::cgroup::Cgroup;

/// How long the kernel may take to report a freeze or thaw done.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound on the cgroups walked for the CT's processes (the guest makes cgroups below `ns`).
const MAX_CGROUPS: usize = 65536;

/// The CT-level directories found from the init's cgroup.
#[derive(Debug, Clone)]
pub struct CtCgroup {
    /// v1 freezer dir, or the v2 dir (then `cgroup.freeze`).
    freeze: Option<(PathBuf, bool)>,
    /// A dir whose subtree's cgroup.procs lists every process of the CT.
    procs: Option<PathBuf>,
}

/// The CT's own cgroup for the init's cgroup `p`. On Proxmox VE that is `.../lxc/<vmid>` with
/// the processes in its `ns` child (the CT's cgroup namespace root, where the guest may make
/// cgroups of its own, even more `ns`): the path is cut before the `ns` that follows
/// `lxc/<digits>`. Elsewhere a trailing `ns` is dropped; any other cgroup is its own CT level.
fn ct_level(p: &Path) -> PathBuf {
    let parts: Vec<Component> = p.components().collect();
    let pve = parts.windows(3).position(|w| {
        w[0].as_os_str() == "lxc"
            && w[1]
                .as_os_str()
                .to_str()
                .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            && w[2].as_os_str() == "ns"
    });
    if let Some(i) = pve {
        return parts[..i + 2].iter().collect();
    }
    if p.file_name().map(|n| n == "ns").unwrap_or(false) {
        p.parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| p.to_path_buf())
    } else {
        p.to_path_buf()
    }
}

/// The same cgroup one level up where it is the CT's `ns` child (every controller).
pub fn ct_level_cgroup(cg: &Cgroup) -> Cgroup {
    match cg {
        Cgroup::V1(m) => Cgroup::V1(m.iter().map(|(k, p)| (k.clone(), ct_level(p))).collect()),
        Cgroup::V2(p) => Cgroup::V2(ct_level(p)),
    }
}

/// Copy the CT-level memory limit (where `pct create/set --memory` puts it) onto the init's
/// own `ns` cgroup, so that tools reading the limit of the task's cgroup (containerd's tests,
/// cgroups.Load of the task pid) see it too. Best-effort; nothing to do outside an `ns` child.
pub fn mirror_memory_limit(cg: &Cgroup) -> Result<()> {
    let (dir, file) = match cg {
        Cgroup::V1(m) => match m.get("memory") {
            Some(p) => (p.clone(), "memory.limit_in_bytes"),
            None => return Ok(()),
        },
        Cgroup::V2(p) => (p.clone(), "memory.max"),
    };
    let up = ct_level(&dir);
    if up == dir {
        return Ok(());
    }
    let src = up.join(file);
    let val = std::fs::read_to_string(&src)
        .map_err(|e| Error::io(format!("read {}", src.display()), e))?;
    let dst = dir.join(file);
    std::fs::write(&dst, val.trim()).map_err(|e| Error::io(format!("write {}", dst.display()), e))
}

impl CtCgroup {
    /// Freezer and processes of exactly this cgroup (a pod container's own, below the CT's).
    pub fn exact(cg: &Cgroup) -> CtCgroup {
        match cg {
            Cgroup::V1(m) => CtCgroup {
                freeze: m.get("freezer").map(|p| (p.clone(), true)),
                procs: ["pids", "memory", "freezer", "cpu"]
                    .iter()
                    .find_map(|c| m.get(*c))
                    .cloned(),
            },
            Cgroup::V2(p) => CtCgroup {
                freeze: Some((p.clone(), false)),
                procs: Some(p.clone()),
            },
        }
    }

    pub fn of(cg: &Cgroup) -> CtCgroup {
        match cg {
            Cgroup::V1(m) => CtCgroup {
                freeze: m.get("freezer").map(|p| (ct_level(p), true)),
                procs: ["pids", "memory", "freezer", "cpu"]
                    .iter()
                    .find_map(|c| m.get(*c))
                    .map(|p| ct_level(p)),
            },
            Cgroup::V2(p) => CtCgroup {
                freeze: Some((ct_level(p), false)),
                procs: Some(ct_level(p)),
            },
        }
    }

    /// Ask for the state and wait until the kernel reports it (v2: `frozen 1|0` in
    /// cgroup.events, v1: freezer.state). A freeze that does not complete within `timeout` is
    /// undone (thawed, best effort) before the error: the CT is left running, not half frozen.
    fn set_frozen(&self, frozen: bool, timeout: Duration) -> Result<()> {
        let (dir, v1) = self
            .freeze
            .as_ref()
            .ok_or_else(|| Error::precondition("the CT has no freezer cgroup"))?;
        let (file, val, state_file, want) = if *v1 {
            let v = if frozen { "FROZEN" } else { "THAWED" };
            ("freezer.state", v, "freezer.state", v)
        } else {
            let v = if frozen { "1" } else { "0" };
            (
                "cgroup.freeze",
                v,
                "cgroup.events",
                if frozen { "frozen 1" } else { "frozen 0" },
            )
        };
        std::fs::write(dir.join(file), val)
            .map_err(|e| Error::io(format!("write {}", dir.join(file).display()), e))?;
        let start = Instant::now();
        loop {
            let st = std::fs::read_to_string(dir.join(state_file)).unwrap_or_default();
            let done = if *v1 {
                st.trim() == want
            } else {
                st.lines().any(|l| l.trim() == want)
            };
            if done {
                return Ok(());
            }
            if start.elapsed() > timeout {
                if frozen {
                    let (f, v) = if *v1 {
                        ("freezer.state", "THAWED")
                    } else {
                        ("cgroup.freeze", "0")
                    };
                    if let Err(e) = std::fs::write(dir.join(f), v) {
                        log::warn!("undo the freeze of {}: {e}", dir.display());
                    }
                }
                return Err(Error::DeadlineExceeded(format!(
                    "{} did not become {want} within {timeout:?}",
                    dir.display()
                )));
            }
            if *v1 && frozen {
                // v1 may stay FREEZING until asked again.
                let _ = std::fs::write(dir.join(file), val);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn freeze(&self) -> Result<()> {
        self.set_frozen(true, FREEZE_TIMEOUT)
    }

    pub fn thaw(&self) -> Result<()> {
        self.set_frozen(false, FREEZE_TIMEOUT)
    }

    /// Host pids of every process in the CT (the whole subtree).
    pub fn pids(&self) -> Result<Vec<u32>> {
        self.pids_within(MAX_CGROUPS)
    }

    /// [`Self::pids`], walking at most `max` cgroups.
    fn pids_within(&self, max: usize) -> Result<Vec<u32>> {
        let root = self
            .procs
            .as_ref()
            .ok_or_else(|| Error::precondition("the CT has no cgroup"))?;
        let mut out = Vec::new();
        let mut stack = vec![root.clone()];
        let mut seen = 0usize;
        while let Some(d) = stack.pop() {
            seen += 1;
            if seen > max {
                return Err(Error::precondition(format!(
                    "more than {max} cgroups below {}",
                    root.display()
                )));
            }
            if let Ok(t) = std::fs::read_to_string(d.join("cgroup.procs")) {
                out.extend(t.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
            if let Ok(rd) = std::fs::read_dir(&d) {
                for e in rd.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        stack.push(e.path());
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

#[cfg(test)]
mod fixture_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn memory_limit_is_mirrored_into_ns() {
        let d = tempfile::tempdir().expect("tempdir");
        let ns = d.path().join("memory/lxc/9/ns");
        std::fs::create_dir_all(&ns).expect("mkdir");
        std::fs::write(
            d.path().join("memory/lxc/9/memory.limit_in_bytes"),
            "33554432\n",
        )
        .expect("write");
        std::fs::write(ns.join("memory.limit_in_bytes"), "9223372036854771712\n").expect("write");
        let mut m = HashMap::new();
        m.insert("memory".to_string(), ns.clone());
        mirror_memory_limit(&Cgroup::V1(m)).expect("mirror");
        let got = std::fs::read_to_string(ns.join("memory.limit_in_bytes")).expect("read");
        assert_eq!(got, "33554432");
        // v2, and a cgroup that is not an `ns` child is left alone.
        std::fs::write(d.path().join("memory/lxc/9/memory.max"), "max\n").expect("write");
        mirror_memory_limit(&Cgroup::V2(ns.clone())).expect("mirror v2");
        let got = std::fs::read_to_string(ns.join("memory.max")).expect("read");
        assert_eq!(got, "max");
        mirror_memory_limit(&Cgroup::V2(d.path().join("memory"))).expect("not ns");
    }

    #[test]
    fn levels() {
        let mut m = HashMap::new();
        m.insert(
            "freezer".to_string(),
            PathBuf::from("/sys/fs/cgroup/freezer/lxc/300100/ns"),
        );
        m.insert(
            "memory".to_string(),
            PathBuf::from("/sys/fs/cgroup/memory/lxc/300100/ns"),
        );
        let c = CtCgroup::of(&Cgroup::V1(m.clone()));
        assert_eq!(
            c.freeze,
            Some((PathBuf::from("/sys/fs/cgroup/freezer/lxc/300100"), true))
        );
        assert_eq!(
            c.procs,
            Some(PathBuf::from("/sys/fs/cgroup/memory/lxc/300100"))
        );
        let mut up = HashMap::new();
        up.insert(
            "freezer".to_string(),
            PathBuf::from("/sys/fs/cgroup/freezer/lxc/300100"),
        );
        up.insert(
            "memory".to_string(),
            PathBuf::from("/sys/fs/cgroup/memory/lxc/300100"),
        );
        assert_eq!(ct_level_cgroup(&Cgroup::V1(m)), Cgroup::V1(up));
        assert_eq!(
            ct_level_cgroup(&Cgroup::V2(PathBuf::from("/sys/fs/cgroup/lxc/7/ns"))),
            Cgroup::V2(PathBuf::from("/sys/fs/cgroup/lxc/7"))
        );
        let c = CtCgroup::of(&Cgroup::V2(PathBuf::from("/sys/fs/cgroup/lxc/7/ns")));
        assert_eq!(
            c.freeze,
            Some((PathBuf::from("/sys/fs/cgroup/lxc/7"), false))
        );
    }
}
