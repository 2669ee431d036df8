//! UpdateContainerResources for a pod container: its own cgroup below the CT's (made by the
//! init), written directly. cgroup file systems hold no symlinks; the CT could only rename its
//! own cgroups, i.e. misdirect limits among its own containers.

use std::path::Path;

use oci_spec::runtime::LinuxResources;

use crate::error::{Error, Result};
use crate::sys::cgroup::Cgroup;

fn write(dir: &Path, file: &str, v: &str) -> Result<()> {
    let p = dir.join(file);
    std::fs::write(&p, v).map_err(|e| Error::io(format!("write {} to {}", v, p.display()), e))
}

/// runc's cpu.shares → cpu.weight conversion.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// Apply the memory, CPU and pids limits of `r` to `cg`.
pub fn apply(cg: &Cgroup, r: &LinuxResources) -> Result<()> {
    let mem = r
        .memory()
        .as_ref()
        .and_then(|m| m.limit())
        .filter(|l| *l != 0);
    let cpu = r.cpu().as_ref();
    let shares = cpu.and_then(|c| c.shares()).filter(|s| *s > 0);
    let quota = cpu.and_then(|c| c.quota()).filter(|q| *q != 0);
    let period = cpu.and_then(|c| c.period()).filter(|p| *p > 0);
    let pids = r.pids().as_ref().map(|p| p.limit()).filter(|l| *l != 0);
    match cg {
        Cgroup::V1(m) => {
            let dir = |c: &str| {
                m.get(c)
                    .ok_or_else(|| Error::precondition(format!("the container has no {c} cgroup")))
            };
            if let Some(l) = mem {
                let d = dir("memory")?;
                let v = if l < 0 {
                    "-1".to_string()
                } else {
                    l.to_string()
                };
                // memsw must stay >= the limit: raise it first when it exists.
                if d.join("memory.memsw.limit_in_bytes").exists() {
                    let _ = write(d, "memory.memsw.limit_in_bytes", "-1");
                }
                write(d, "memory.limit_in_bytes", &v)?;
            }
            if let Some(s) = shares {
                write(dir("cpu")?, "cpu.shares", &s.to_string())?;
            }
            if let Some(p) = period {
                write(dir("cpu")?, "cpu.cfs_period_us", &p.to_string())?;
            }
            if let Some(q) = quota {
                write(dir("cpu")?, "cpu.cfs_quota_us", &q.to_string())?;
            }
            if let Some(l) = pids {
                let v = if l < 0 {
                    "max".to_string()
                } else {
                    l.to_string()
                };
                write(dir("pids")?, "pids.max", &v)?;
            }
        }
        Cgroup::V2(d) => {
            if let Some(l) = mem {
                let v = if l < 0 {
                    "max".to_string()
                } else {
                    l.to_string()
                };
                write(d, "memory.max", &v)?;
            }
            if let Some(s) = shares {
                write(d, "cpu.weight", &shares_to_weight(s).to_string())?;
            }
            if quota.is_some() || period.is_some() {
                let q = quota
                    .filter(|q| *q > 0)
                    .map(|q| q.to_string())
                    .unwrap_or_else(|| "max".into());
                let v = match period {
                    Some(p) => format!("{q} {p}"),
                    None => q,
                };
                write(d, "cpu.max", &v)?;
            }
            if let Some(l) = pids {
                let v = if l < 0 {
                    "max".to_string()
                } else {
                    l.to_string()
                };
                write(d, "pids.max", &v)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder};

    #[test]
    fn weights_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn v2_files_get_the_values() {
        let d = tempfile::tempdir().unwrap();
        let r = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(64 << 20)
                    .build()
                    .unwrap(),
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .shares(512u64)
                    .quota(50_000i64)
                    .period(100_000u64)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        apply(&Cgroup::V2(d.path().to_path_buf()), &r).unwrap();
        let rd = |f: &str| std::fs::read_to_string(d.path().join(f)).unwrap();
        assert_eq!(rd("memory.max"), (64u64 << 20).to_string());
        assert_eq!(rd("cpu.weight"), "20");
        assert_eq!(rd("cpu.max"), "50000 100000");
    }

    #[test]
    fn v1_without_the_controller_says_so() {
        let r = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(1 << 20)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let e = apply(&Cgroup::V1(Default::default()), &r).unwrap_err();
        assert!(e.to_string().contains("memory"), "{e}");
    }
}
