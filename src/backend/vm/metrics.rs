//! Guest figures (and QEMU's host-side ones) as containerd's cgroups v1 `Metrics`.

use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use pvelxc_agent::proto::Stats;

use crate::error::{Error, Result};

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
pub fn encode(guest: Option<&Stats>, host: HostFigures) -> Result<Any> {
    let mut m = v1::Metrics::new();
    let mut mem = v1::MemoryStat::new();
    let mut usage = v1::MemoryEntry::new();
    let mut cpu_usage = v1::CPUUsage::new();
    match guest {
        Some(s) => {
            usage.usage = s.mem_used_bytes;
            usage.limit = s.mem_total_bytes;
            mem.rss = s.mem_used_bytes;
            mem.total_rss = s.mem_used_bytes;
            cpu_usage.user = s.cpu_user_ns;
            cpu_usage.kernel = s.cpu_system_ns;
            cpu_usage.total = s.cpu_user_ns + s.cpu_system_ns;
            let mut p = v1::PidsStat::new();
            p.current = u64::from(s.processes);
            m.pids = MessageField::some(p);
        }
        None => {
            usage.usage = host.rss_bytes;
            mem.rss = host.rss_bytes;
            mem.total_rss = host.rss_bytes;
            cpu_usage.total = host.cpu_ns;
        }
    }
    usage.max = host.rss_bytes.max(usage.usage);
    mem.usage = MessageField::some(usage);
    m.memory = MessageField::some(mem);
    let mut cpu = v1::CPUStat::new();
    cpu.usage = MessageField::some(cpu_usage);
    m.cpu = MessageField::some(cpu);
    let mut any = Any::new();
    any.type_url = "io.containerd.cgroups.v1.Metrics".into();
    any.value = m
        .write_to_bytes()
        .map_err(|e| Error::internal(format!("encode metrics: {e}")))?;
    Ok(any)
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
        let any = encode(Some(&s), HostFigures::default()).expect("encode");
        let m = v1::Metrics::parse_from_bytes(&any.value).expect("decode");
        assert_eq!(m.memory.usage.usage, 20 << 20);
        assert_eq!(m.memory.usage.limit, 200 << 20);
        assert_eq!(m.cpu.usage.total, 12);
        assert_eq!(m.pids.current, 2);
        let me = host_figures(std::process::id());
        assert!(me.rss_bytes > 0);
        let any = encode(None, me).expect("encode");
        let m = v1::Metrics::parse_from_bytes(&any.value).expect("decode");
        assert_eq!(m.memory.usage.usage, me.rss_bytes);
    }
}
