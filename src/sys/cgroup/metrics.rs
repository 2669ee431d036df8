//! Cgroup metrics in the shapes containerd decodes (io.containerd.cgroups.v1/v2.Metrics), read
//! from the cgroup's interface files; a missing or unreadable file reads as zero.

use std::collections::HashMap;
use std::path::Path;

use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;
use containerd_shim_protos::protobuf::MessageField;

use super::Cgroup;

pub(super) fn v1_metrics(cg: &Cgroup) -> v1::Metrics {
    let mut m = v1::Metrics::new();
    if let Some(d) = cg.v1_dir("pids") {
        let mut p = v1::PidsStat::new();
        p.current = read_u64(&d.join("pids.current"));
        // cgroup v1 reports an unlimited pids.max as 0.
        p.limit = match read_u64(&d.join("pids.max")) {
            u64::MAX => 0,
            n => n,
        };
        m.pids = MessageField::some(p);
    }
    if let Some(d) = cg.v1_dir("cpuacct") {
        let mut u = v1::CPUUsage::new();
        u.total = read_u64(&d.join("cpuacct.usage"));
        let stat = read_kv(&d.join("cpuacct.stat"));
        // USER_HZ ticks to nanoseconds.
        u.user = stat.get("user").copied().unwrap_or(0) * 10_000_000;
        u.kernel = stat.get("system").copied().unwrap_or(0) * 10_000_000;
        u.per_cpu = std::fs::read_to_string(d.join("cpuacct.usage_percpu"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect();
        let mut cpu = v1::CPUStat::new();
        cpu.usage = MessageField::some(u);
        if let Some(c) = cg.v1_dir("cpu") {
            let s = read_kv(&c.join("cpu.stat"));
            let mut t = v1::Throttle::new();
            t.periods = s.get("nr_periods").copied().unwrap_or(0);
            t.throttled_periods = s.get("nr_throttled").copied().unwrap_or(0);
            t.throttled_time = s.get("throttled_time").copied().unwrap_or(0);
            cpu.throttling = MessageField::some(t);
        }
        m.cpu = MessageField::some(cpu);
    }
    if let Some(d) = cg.v1_dir("memory") {
        let s = read_kv(&d.join("memory.stat"));
        let g = |k: &str| s.get(k).copied().unwrap_or(0);
        let mut mem = v1::MemoryStat::new();
        mem.cache = g("cache");
        mem.rss = g("rss");
        mem.rss_huge = g("rss_huge");
        mem.mapped_file = g("mapped_file");
        mem.dirty = g("dirty");
        mem.writeback = g("writeback");
        mem.pg_pg_in = g("pgpgin");
        mem.pg_pg_out = g("pgpgout");
        mem.pg_fault = g("pgfault");
        mem.pg_maj_fault = g("pgmajfault");
        mem.inactive_anon = g("inactive_anon");
        mem.active_anon = g("active_anon");
        mem.inactive_file = g("inactive_file");
        mem.active_file = g("active_file");
        mem.unevictable = g("unevictable");
        mem.hierarchical_memory_limit = g("hierarchical_memory_limit");
        mem.hierarchical_swap_limit = g("hierarchical_memsw_limit");
        mem.total_cache = g("total_cache");
        mem.total_rss = g("total_rss");
        mem.total_rss_huge = g("total_rss_huge");
        mem.total_mapped_file = g("total_mapped_file");
        mem.total_dirty = g("total_dirty");
        mem.total_writeback = g("total_writeback");
        mem.total_pg_pg_in = g("total_pgpgin");
        mem.total_pg_pg_out = g("total_pgpgout");
        mem.total_pg_fault = g("total_pgfault");
        mem.total_pg_maj_fault = g("total_pgmajfault");
        mem.total_inactive_anon = g("total_inactive_anon");
        mem.total_active_anon = g("total_active_anon");
        mem.total_inactive_file = g("total_inactive_file");
        mem.total_active_file = g("total_active_file");
        mem.total_unevictable = g("total_unevictable");
        let entry = |prefix: &str| {
            let mut e = v1::MemoryEntry::new();
            e.usage = read_u64(&d.join(format!("{prefix}.usage_in_bytes")));
            e.limit = read_u64(&d.join(format!("{prefix}.limit_in_bytes")));
            e.max = read_u64(&d.join(format!("{prefix}.max_usage_in_bytes")));
            e.failcnt = read_u64(&d.join(format!("{prefix}.failcnt")));
            MessageField::some(e)
        };
        mem.usage = entry("memory");
        mem.swap = entry("memory.memsw");
        mem.kernel = entry("memory.kmem");
        mem.kernel_tcp = entry("memory.kmem.tcp");
        m.memory = MessageField::some(mem);
        let oc = read_kv(&d.join("memory.oom_control"));
        let mut o = v1::MemoryOomControl::new();
        o.oom_kill_disable = oc.get("oom_kill_disable").copied().unwrap_or(0);
        o.under_oom = oc.get("under_oom").copied().unwrap_or(0);
        o.oom_kill = oc.get("oom_kill").copied().unwrap_or(0);
        m.memory_oom_control = MessageField::some(o);
    }
    m
}

pub(super) fn v2_metrics(dir: &Path) -> v2::Metrics {
    let mut m = v2::Metrics::new();
    let mut p = v2::PidsStat::new();
    p.current = read_u64(&dir.join("pids.current"));
    p.limit = read_u64(&dir.join("pids.max"));
    m.pids = MessageField::some(p);
    let s = read_kv(&dir.join("cpu.stat"));
    let g = |k: &str| s.get(k).copied().unwrap_or(0);
    let mut cpu = v2::CPUStat::new();
    cpu.usage_usec = g("usage_usec");
    cpu.user_usec = g("user_usec");
    cpu.system_usec = g("system_usec");
    cpu.nr_periods = g("nr_periods");
    cpu.nr_throttled = g("nr_throttled");
    cpu.throttled_usec = g("throttled_usec");
    m.cpu = MessageField::some(cpu);
    let s = read_kv(&dir.join("memory.stat"));
    let g = |k: &str| s.get(k).copied().unwrap_or(0);
    let mut mem = v2::MemoryStat::new();
    mem.anon = g("anon");
    mem.file = g("file");
    mem.kernel_stack = g("kernel_stack");
    mem.slab = g("slab");
    mem.sock = g("sock");
    mem.shmem = g("shmem");
    mem.file_mapped = g("file_mapped");
    mem.file_dirty = g("file_dirty");
    mem.file_writeback = g("file_writeback");
    mem.inactive_anon = g("inactive_anon");
    mem.active_anon = g("active_anon");
    mem.inactive_file = g("inactive_file");
    mem.active_file = g("active_file");
    mem.unevictable = g("unevictable");
    mem.pgfault = g("pgfault");
    mem.pgmajfault = g("pgmajfault");
    mem.usage = read_u64(&dir.join("memory.current"));
    mem.usage_limit = read_u64(&dir.join("memory.max"));
    mem.max_usage = read_u64(&dir.join("memory.peak"));
    mem.swap_usage = read_u64(&dir.join("memory.swap.current"));
    mem.swap_limit = read_u64(&dir.join("memory.swap.max"));
    m.memory = MessageField::some(mem);
    let e = read_kv(&dir.join("memory.events"));
    let g = |k: &str| e.get(k).copied().unwrap_or(0);
    let mut ev = v2::MemoryEvents::new();
    ev.low = g("low");
    ev.high = g("high");
    ev.max = g("max");
    ev.oom = g("oom");
    ev.oom_kill = g("oom_kill");
    m.memory_events = MessageField::some(ev);
    let mut io = v2::IOStat::new();
    io.usage = io_stat(&dir.join("io.stat"));
    m.io = MessageField::some(io);
    m
}

/// io.stat: one line per device, `MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N`.
fn io_stat(p: &Path) -> Vec<v2::IOEntry> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (maj, min) = it.next()?.split_once(':')?;
            let mut e = v2::IOEntry::new();
            e.major = maj.parse().ok()?;
            e.minor = min.parse().ok()?;
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
