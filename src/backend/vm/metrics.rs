//! Guest figures (and QEMU's host-side ones) as containerd's cgroups v1 `Metrics`.

use pvelxc_agent::proto::Stats;

use crate::sys::cgroup::types::{Pids, V1Cpu, V1CpuUsage, V1Memory, V1Metrics};
use crate::sys::cgroup::Metrics;

/// What QEMU itself uses on the host.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostFigures {
    pub rss_bytes: u64,
    pub cpu_ns: u64,
}

/// QEMU's RSS (/proc/<pid>/status) and CPU time (/proc/<pid>/stat utime+stime).
pub fn host_figures(pid: u32) -> HostFigures {
    let rss_bytes = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_string();
            l.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map(|kib| kib * 1024)
        .unwrap_or(0);
    let cpu_ns = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 1..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            // After the comm: state is field 3, utime 14, stime 15 (1-based over the whole line).
            let ut: u64 = f.get(11)?.parse().ok()?;
            let st: u64 = f.get(12)?.parse().ok()?;
            Some((ut + st) * 10_000_000)
        })
        .unwrap_or(0);
    HostFigures { rss_bytes, cpu_ns }
}

/// Metrics from the guest (`Some`) or, when it cannot answer (paused), from QEMU alone.
pub fn figures(guest: Option<&Stats>, host: HostFigures) -> Metrics {
    let mut mem = V1Memory::default();
    let mut cpu = V1CpuUsage::default();
    let mut pids = None;
    match guest {
        Some(s) => {
            mem.usage.usage = s.mem_used_bytes;
            mem.usage.limit = s.mem_total_bytes;
            mem.stat.rss = s.mem_used_bytes;
            mem.stat.total_rss = s.mem_used_bytes;
            cpu.user = s.cpu_user_ns;
            cpu.kernel = s.cpu_system_ns;
            cpu.total = s.cpu_user_ns + s.cpu_system_ns;
            pids = Some(Pids {
                current: u64::from(s.processes),
                limit: 0,
            });
        }
        None => {
            mem.usage.usage = host.rss_bytes;
            mem.stat.rss = host.rss_bytes;
            mem.stat.total_rss = host.rss_bytes;
            cpu.total = host.cpu_ns;
        }
    }
    mem.usage.max = host.rss_bytes.max(mem.usage.usage);
    Metrics::V1(Box::new(V1Metrics {
        pids,
        cpu: Some(V1Cpu {
            usage: cpu,
            throttling: None,
        }),
        memory: Some(mem),
        memory_oom_control: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_and_host_figures() {
        let s = Stats {
            mem_total_bytes: 200 << 20,
            mem_used_bytes: 20 << 20,
            cpu_user_ns: 5,
            cpu_system_ns: 7,
            processes: 2,
            ..Default::default()
        };
        let v1 = |m: Metrics| match m {
            Metrics::V1(m) => m,
            Metrics::V2(_) => panic!("the vm backend reports v1-shaped metrics"),
        };
        let m = v1(figures(Some(&s), HostFigures::default()));
        let mem = m.memory.expect("memory");
        assert_eq!(mem.usage.usage, 20 << 20);
        assert_eq!(mem.usage.limit, 200 << 20);
        assert_eq!(m.cpu.expect("cpu").usage.total, 12);
        assert_eq!(m.pids.expect("pids").current, 2);
        let me = host_figures(std::process::id());
        assert!(me.rss_bytes > 0);
        let m = v1(figures(None, me));
        assert_eq!(m.memory.expect("memory").usage.usage, me.rss_bytes);
    }
}
