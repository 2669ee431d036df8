//! Cgroup metrics (`types.rs`, shaped like containerd's io.containerd.cgroups.v1/v2.Metrics), read
//! from the cgroup's interface files; a missing or unreadable file reads as zero.

use std::collections::HashMap;
use std::path::Path;

use super::types::{
    Pids, V1Cpu, V1CpuUsage, V1Memory, V1MemoryEntry, V1MemoryStat, V1Metrics, V1OomControl,
    V1Throttle, V2Cpu, V2IoEntry, V2Memory, V2MemoryEvents, V2Metrics,
};
use super::Cgroup;

pub(super) fn v1_metrics(cg: &Cgroup) -> V1Metrics {
    let mut m = V1Metrics::default();
    if let Some(d) = cg.v1_dir("pids") {
        m.pids = Some(Pids {
            current: read_u64(&d.join("pids.current")),
            // cgroup v1 reports an unlimited pids.max as 0.
            limit: match read_u64(&d.join("pids.max")) {
                u64::MAX => 0,
                n => n,
            },
        });
    }
    if let Some(d) = cg.v1_dir("cpuacct") {
        let stat = read_kv(&d.join("cpuacct.stat"));
        let usage = V1CpuUsage {
            total: read_u64(&d.join("cpuacct.usage")),
            // USER_HZ ticks to nanoseconds.
            user: stat.get("user").copied().unwrap_or(0) * 10_000_000,
            kernel: stat.get("system").copied().unwrap_or(0) * 10_000_000,
            per_cpu: std::fs::read_to_string(d.join("cpuacct.usage_percpu"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|s| s.parse().ok())
                .collect(),
        };
        let throttling = cg.v1_dir("cpu").map(|c| {
            let s = read_kv(&c.join("cpu.stat"));
            let g = |k: &str| s.get(k).copied().unwrap_or(0);
            V1Throttle {
                periods: g("nr_periods"),
                throttled_periods: g("nr_throttled"),
                throttled_time: g("throttled_time"),
            }
        });
        m.cpu = Some(V1Cpu { usage, throttling });
    }
    if let Some(d) = cg.v1_dir("memory") {
        let s = read_kv(&d.join("memory.stat"));
        let g = |k: &str| s.get(k).copied().unwrap_or(0);
        let stat = V1MemoryStat {
            cache: g("cache"),
            rss: g("rss"),
            rss_huge: g("rss_huge"),
            mapped_file: g("mapped_file"),
            dirty: g("dirty"),
            writeback: g("writeback"),
            pg_pg_in: g("pgpgin"),
            pg_pg_out: g("pgpgout"),
            pg_fault: g("pgfault"),
            pg_maj_fault: g("pgmajfault"),
            inactive_anon: g("inactive_anon"),
            active_anon: g("active_anon"),
            inactive_file: g("inactive_file"),
            active_file: g("active_file"),
            unevictable: g("unevictable"),
            hierarchical_memory_limit: g("hierarchical_memory_limit"),
            hierarchical_swap_limit: g("hierarchical_memsw_limit"),
            total_cache: g("total_cache"),
            total_rss: g("total_rss"),
            total_rss_huge: g("total_rss_huge"),
            total_mapped_file: g("total_mapped_file"),
            total_dirty: g("total_dirty"),
            total_writeback: g("total_writeback"),
            total_pg_pg_in: g("total_pgpgin"),
            total_pg_pg_out: g("total_pgpgout"),
            total_pg_fault: g("total_pgfault"),
            total_pg_maj_fault: g("total_pgmajfault"),
            total_inactive_anon: g("total_inactive_anon"),
            total_active_anon: g("total_active_anon"),
            total_inactive_file: g("total_inactive_file"),
            total_active_file: g("total_active_file"),
            total_unevictable: g("total_unevictable"),
        };
        let entry = |prefix: &str| V1MemoryEntry {
            usage: read_u64(&d.join(format!("{prefix}.usage_in_bytes"))),
            limit: read_u64(&d.join(format!("{prefix}.limit_in_bytes"))),
            max: read_u64(&d.join(format!("{prefix}.max_usage_in_bytes"))),
            failcnt: read_u64(&d.join(format!("{prefix}.failcnt"))),
        };
        m.memory = Some(V1Memory {
            stat,
            usage: entry("memory"),
            swap: entry("memory.memsw"),
            kernel: entry("memory.kmem"),
            kernel_tcp: entry("memory.kmem.tcp"),
        });
        let oc = read_kv(&d.join("memory.oom_control"));
        let g = |k: &str| oc.get(k).copied().unwrap_or(0);
        m.memory_oom_control = Some(V1OomControl {
            oom_kill_disable: g("oom_kill_disable"),
            under_oom: g("under_oom"),
            oom_kill: g("oom_kill"),
        });
    }
    m
}

pub(super) fn v2_metrics(dir: &Path) -> V2Metrics {
    let cpu = read_kv(&dir.join("cpu.stat"));
    let c = |k: &str| cpu.get(k).copied().unwrap_or(0);
    let mem = read_kv(&dir.join("memory.stat"));
    let g = |k: &str| mem.get(k).copied().unwrap_or(0);
    let ev = read_kv(&dir.join("memory.events"));
    let e = |k: &str| ev.get(k).copied().unwrap_or(0);
    V2Metrics {
        pids: Pids {
            current: read_u64(&dir.join("pids.current")),
            limit: read_u64(&dir.join("pids.max")),
        },
        cpu: V2Cpu {
            usage_usec: c("usage_usec"),
            user_usec: c("user_usec"),
            system_usec: c("system_usec"),
            nr_periods: c("nr_periods"),
            nr_throttled: c("nr_throttled"),
            throttled_usec: c("throttled_usec"),
        },
        memory: V2Memory {
            anon: g("anon"),
            file: g("file"),
            kernel_stack: g("kernel_stack"),
            slab: g("slab"),
            sock: g("sock"),
            shmem: g("shmem"),
            file_mapped: g("file_mapped"),
            file_dirty: g("file_dirty"),
            file_writeback: g("file_writeback"),
            inactive_anon: g("inactive_anon"),
            active_anon: g("active_anon"),
            inactive_file: g("inactive_file"),
            active_file: g("active_file"),
            unevictable: g("unevictable"),
            pgfault: g("pgfault"),
            pgmajfault: g("pgmajfault"),
            usage: read_u64(&dir.join("memory.current")),
            usage_limit: read_u64(&dir.join("memory.max")),
            max_usage: read_u64(&dir.join("memory.peak")),
            swap_usage: read_u64(&dir.join("memory.swap.current")),
            swap_limit: read_u64(&dir.join("memory.swap.max")),
        },
        memory_events: V2MemoryEvents {
            low: e("low"),
            high: e("high"),
            max: e("max"),
            oom: e("oom"),
            oom_kill: e("oom_kill"),
        },
        io: io_stat(&dir.join("io.stat")),
    }
}

/// io.stat: one line per device, `MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N`.
fn io_stat(p: &Path) -> Vec<V2IoEntry> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (maj, min) = it.next()?.split_once(':')?;
            let mut e = V2IoEntry {
                major: maj.parse().ok()?,
                minor: min.parse().ok()?,
                ..Default::default()
            };
            for kv in it {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                let v = v.parse().unwrap_or(0);
                match k {
                    "rbytes" => e.rbytes = v,
                    "wbytes" => e.wbytes = v,
                    "rios" => e.rios = v,
                    "wios" => e.wios = v,
                    _ => {}
                }
            }
            Some(e)
        })
        .collect()
}

/// A number file; "max" reads as u64::MAX, anything unreadable as 0.
fn read_u64(p: &Path) -> u64 {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let s = s.trim();
    if s == "max" {
        return u64::MAX;
    }
    s.parse().unwrap_or(0)
}

/// "key value" lines.
pub(super) fn read_kv(p: &Path) -> HashMap<String, u64> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}
