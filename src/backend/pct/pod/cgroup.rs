//! A pod container's cgroup, made by the shim on the host: `pvelxc-<name>` next to the CT's
//! `ns` cgroup (inside the CT's own level, so the pod's limits bound it; not inside `ns`, which
//! holds processes: cgroup v2 enables no controller below a cgroup with processes). The
//! container's limits are written there and its process moved in once it runs; the CT cannot
//! write this directory (it is outside the CT's cgroup namespace root).

use std::collections::HashMap;
use std::path::PathBuf;

use oci_spec::runtime::LinuxResources;

use crate::backend::pct::ctcg::ct_level_cgroup;
use crate::error::{Error, Result};
use crate::sys::cgroup::Cgroup;

fn mkdir(p: &PathBuf) -> Result<()> {
    match std::fs::create_dir(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io(format!("create cgroup {}", p.display()), e)),
    }
}

/// Make the container's cgroup below the CT level of the CT init's cgroup `init`.
pub fn make(init: &Cgroup, name: &str) -> Result<Cgroup> {
    let leaf = format!("pvelxc-{name}");
    match ct_level_cgroup(init) {
        Cgroup::V1(m) => {
            let mut out = HashMap::new();
            for (ctrl, dir) in m {
                let p = dir.join(&leaf);
                if let Err(e) = mkdir(&p) {
                    // A named or read-only hierarchy: the container stays in the CT's there.
                    log::debug!("{e}");
                    continue;
                }
                if ctrl == "cpuset" {
                    for f in ["cpuset.cpus", "cpuset.mems"] {
                        if let Ok(v) = std::fs::read_to_string(dir.join(f)) {
                            let _ = std::fs::write(p.join(f), v.trim());
                        }
                    }
                }
                out.insert(ctrl, p);
            }
            Ok(Cgroup::V1(out))
        }
        Cgroup::V2(dir) => {
            let p = dir.join(&leaf);
            mkdir(&p)?;
            Ok(Cgroup::V2(p))
        }
    }
}

/// Move process `pid` into `cg` (every hierarchy); fine when it has exited already.
pub fn enter(cg: &Cgroup, pid: u32) -> Result<()> {
    let dirs: Vec<PathBuf> = match cg {
        Cgroup::V1(m) => m.values().cloned().collect(),
        Cgroup::V2(p) => vec![p.clone()],
    };
    let mut seen = std::collections::HashSet::new();
    for d in dirs.into_iter().filter(|d| seen.insert(d.clone())) {
        let f = d.join("cgroup.procs");
        match std::fs::write(&f, pid.to_string()) {
            Ok(()) => {}
            // Already exited (a short program): nothing left to limit.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(()),
            Err(e) => return Err(Error::io(format!("move {pid} into {}", f.display()), e)),
        }
    }
    Ok(())
}

/// The limits of the container's spec.
pub fn limit(cg: &Cgroup, r: Option<&LinuxResources>) -> Result<()> {
    match r {
        Some(r) => super::limits::apply(cg, r),
        None => Ok(()),
    }
}

/// Remove the container's cgroup (its processes are gone); a few tries while the kernel lets
/// go of the last ones.
pub fn remove(cg: &Cgroup) {
    let dirs: Vec<PathBuf> = match cg {
        Cgroup::V1(m) => m.values().cloned().collect(),
        Cgroup::V2(p) => vec![p.clone()],
    };
    for d in dirs {
        for i in 0..20 {
            match std::fs::remove_dir(&d) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if i == 19 => log::warn!("remove cgroup {}: {e}", d.display()),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(25)),
            }
        }
    }
}
