//! Guest process list and resource figures from /proc.

use std::collections::HashMap;
use std::fs;

use pvelxc_agent::proto::{ProcInfo, Stats};

/// `(pid, ppid, comm)` from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(u32, String)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s.get(open + 1..close)?.to_string();
    let mut rest = s.get(close + 2..)?.split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((ppid, comm))
}

/// User processes (not PID 1, not kernel threads), tagged with the agent id when known.
pub fn pids(ids: &HashMap<u32, String>) -> Vec<ProcInfo> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Some((ppid, comm)) = stat(pid) else {
            continue;
        };
        if pid <= 2 || ppid == 2 || ppid == 0 {
            continue;
        }
        out.push(ProcInfo {
            pid,
            ppid,
            id: ids.get(&pid).cloned().unwrap_or_default(),
            comm,
        });
    }
    out.sort_by_key(|p| p.pid);
    out
}

fn meminfo_kib(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

pub fn stats(processes: u32) -> Stats {
    let mem = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let total = meminfo_kib(&mem, "MemTotal") * 1024;
    let avail = meminfo_kib(&mem, "MemAvailable") * 1024;
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .unwrap_or(100)
        .max(1);
    let cpu: Vec<u64> = fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let ticks = |i: usize| cpu.get(i).copied().unwrap_or(0) * 1_000_000_000 / hz;
    let uptime_ms = fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map(|s| (s * 1000.0) as u64)
        .unwrap_or(0);
    Stats {
        mem_total_bytes: total,
        mem_available_bytes: avail,
        mem_used_bytes: total.saturating_sub(avail),
        cpu_user_ns: ticks(0) + ticks(1),
        cpu_system_ns: ticks(2) + ticks(5) + ticks(6),
        cpu_idle_ns: ticks(3) + ticks(4),
        processes,
        uptime_ms,
    }
}
