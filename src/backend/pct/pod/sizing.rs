//! A pod CT's size: the whole pod's resources, as kubelet computed them, become the CT's
//! `memory`, `cores`, `cpulimit` and `cpuunits`.
//!
//! containerd's CRI hands the sandbox the pod's totals as annotations (kubelet 1.23+ sends
//! them in `PodSandboxConfig.linux.resources`: the sum of its containers' limits and
//! requests, without the RuntimeClass overhead). The sandbox spec's own `linux.resources`
//! are `pause`'s (cpu shares 2) and must not size the CT. The overhead is not passed to a
//! shim, so `[pct] pod_overhead_mib` adds it (keep it equal to the RuntimeClass's
//! `overhead.podFixed.memory`). A pod without a memory limit is bounded by the node alone, as
//! on any Kubernetes node: its CT gets the host's memory, never Proxmox's 512 MiB default.

use std::collections::HashMap;

use super::super::cmd::CtOptions;
use crate::error::{Error, Result};

pub const SANDBOX_MEMORY: &str = "io.kubernetes.cri.sandbox-memory";
pub const SANDBOX_CPU_QUOTA: &str = "io.kubernetes.cri.sandbox-cpu-quota";
pub const SANDBOX_CPU_PERIOD: &str = "io.kubernetes.cri.sandbox-cpu-period";
pub const SANDBOX_CPU_SHARES: &str = "io.kubernetes.cri.sandbox-cpu-shares";
const MIB: u64 = 1024 * 1024;
/// Proxmox's smallest CT memory.
const MIN_MEMORY_MB: u64 = 16;

/// The pod's totals from CRI's annotations (absent or 0: none).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PodResources {
    pub memory_bytes: u64,
    pub cpu_quota: i64,
    pub cpu_period: u64,
    pub cpu_shares: u64,
}

fn number<T: std::str::FromStr + Default>(ann: &HashMap<String, String>, key: &str) -> Result<T> {
    match ann.get(key).map(|v| v.trim()) {
        None | Some("") => Ok(T::default()),
        Some(v) => v
            .parse()
            .map_err(|_| Error::invalid(format!("annotation {key} = {v:?}: not a number"))),
    }
}

impl PodResources {
    pub fn from_annotations(ann: &HashMap<String, String>) -> Result<Self> {
        Ok(PodResources {
            memory_bytes: number(ann, SANDBOX_MEMORY)?,
            cpu_quota: number(ann, SANDBOX_CPU_QUOTA)?,
            cpu_period: number(ann, SANDBOX_CPU_PERIOD)?,
            cpu_shares: number(ann, SANDBOX_CPU_SHARES)?,
        })
    }
}

/// Size the pod's CT: memory = the pod's limit + `overhead_mib` (no limit: `host_mib`), no
/// swap (Kubernetes pods get none unless the node is configured for it), CPU quota → cores
/// and cpulimit, CPU shares (the sum of requests) → cpuunits.
pub fn apply(r: &PodResources, overhead_mib: u64, host_mib: u64, unified: bool, o: &mut CtOptions) {
    let memory = if r.memory_bytes > 0 {
        r.memory_bytes.div_ceil(MIB).saturating_add(overhead_mib)
    } else {
        host_mib
    };
    o.memory_mb = Some(memory.max(MIN_MEMORY_MB));
    o.swap_mb = Some(0);
    o.cores = None;
    o.cpulimit = None;
    o.cpuunits = None;
    if let Some((limit, cores)) = crate::backend::pct::spec::cpu_limit(r.cpu_quota, r.cpu_period) {
        o.cpulimit = Some(limit);
        o.cores = Some(cores);
    }
    if r.cpu_shares > 0 {
        o.cpuunits = Some(crate::backend::pct::spec::cpuunits(r.cpu_shares, unified));
    }
}

/// The host's memory in MiB (`MemTotal` of /proc/meminfo), the size of an unlimited pod's CT.
pub fn host_memory_mib() -> Result<u64> {
    let text = super::super::pve::read_capped(std::path::Path::new("/proc/meminfo"), 64 * 1024)
        .map_err(|e| Error::io("read /proc/meminfo", e))?
        .unwrap_or_default();
    parse_mem_total(&text).ok_or_else(|| Error::internal("/proc/meminfo has no MemTotal line"))
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testutil::ann;

    /// What containerd 1.6+ puts on a sandbox of a pod with limits (from its CRI code).
    #[test]
    fn limits_overhead_and_cpu_become_the_ct_size() {
        let r = PodResources::from_annotations(&ann(&[
            (SANDBOX_MEMORY, "268435456"),
            (SANDBOX_CPU_QUOTA, "150000"),
            (SANDBOX_CPU_PERIOD, "100000"),
            (SANDBOX_CPU_SHARES, "512"),
        ]))
        .unwrap();
        let mut o = CtOptions {
            memory_mb: Some(999),
            cpuunits: Some(1),
            ..Default::default()
        };
        apply(&r, 64, 8000, false, &mut o);
        assert_eq!(o.memory_mb, Some(256 + 64));
        assert_eq!(o.swap_mb, Some(0));
        assert_eq!((o.cores, o.cpulimit), (Some(2), Some(1.5)));
        assert_eq!(o.cpuunits, Some(512));
        apply(&r, 64, 8000, true, &mut o);
        assert_eq!(o.cpuunits, Some(20), "cgroup v2: cpu.weight of 512 shares");
    }

    #[test]
    fn a_pod_without_limits_gets_the_host_not_proxmox_default() {
        // No annotations (kubelet before 1.23) or zeros (best-effort pod): no cap but the node.
        for a in [
            ann(&[]),
            ann(&[
                (SANDBOX_MEMORY, "0"),
                (SANDBOX_CPU_QUOTA, "0"),
                (SANDBOX_CPU_PERIOD, "100000"),
                (SANDBOX_CPU_SHARES, "2"),
            ]),
        ] {
            let r = PodResources::from_annotations(&a).unwrap();
            let mut o = CtOptions::default();
            apply(&r, 64, 7_900, false, &mut o);
            assert_eq!(o.memory_mb, Some(7_900));
            assert_eq!((o.cores, o.cpulimit), (None, None));
        }
        // A quota of -1 (unlimited) is no limit either.
        let r = PodResources::from_annotations(&ann(&[(SANDBOX_CPU_QUOTA, "-1")])).unwrap();
        let mut o = CtOptions::default();
        apply(&r, 0, 100, false, &mut o);
        assert_eq!(o.cores, None);
    }

    #[test]
    fn tiny_limits_respect_proxmox_minimum_and_bad_numbers_are_named() {
        let r = PodResources::from_annotations(&ann(&[(SANDBOX_MEMORY, "1048576")])).unwrap();
        let mut o = CtOptions::default();
        apply(&r, 0, 100, false, &mut o);
        assert_eq!(o.memory_mb, Some(MIN_MEMORY_MB));
        let e = PodResources::from_annotations(&ann(&[(SANDBOX_MEMORY, "lots")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains(SANDBOX_MEMORY) && e.contains("lots"), "{e}");
    }

    #[test]
    fn mem_total_is_read_in_mib() {
        let m = "MemTotal:       24576000 kB\nMemFree:  1 kB\n";
        assert_eq!(parse_mem_total(m), Some(24_000));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert!(host_memory_mib().unwrap() > 0);
    }
}
