//! The limits of a container's cgroup ([`CgroupSpec`]) as cgroup v1 or v2 file writes.

use pvelxc_init::pod::CgroupSpec;

/// The limits of a [`CgroupSpec`] (0 = not set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Memory,
    CpuShares,
    CpuQuota,
    CpuPeriod,
    Pids,
}

impl Limit {
    pub fn name(self) -> &'static str {
        match self {
            Limit::Memory => "memory limit",
            Limit::CpuShares => "cpu shares",
            Limit::CpuQuota => "cpu quota",
            Limit::CpuPeriod => "cpu period",
            Limit::Pids => "pids limit",
        }
    }
}

pub fn requested(s: &CgroupSpec) -> Vec<Limit> {
    let mut v = Vec::new();
    let set = [
        (s.memory_limit.is_some_and(|x| x != 0), Limit::Memory),
        (s.cpu_shares.is_some_and(|x| x != 0), Limit::CpuShares),
        (s.cpu_quota.is_some_and(|x| x != 0), Limit::CpuQuota),
        (s.cpu_period.is_some_and(|x| x != 0), Limit::CpuPeriod),
        (s.pids_limit.is_some_and(|x| x != 0), Limit::Pids),
    ];
    for (on, l) in set {
        if on {
            v.push(l);
        }
    }
    v
}

/// One limit file write: (controller, file, value, the limits it carries).
pub type LimitWrite = (&'static str, &'static str, String, Vec<Limit>);

fn max_or(v: i64) -> String {
    if v < 0 {
        "max".into()
    } else {
        v.to_string()
    }
}

/// runc's cgroup v1 shares → v2 weight: `1 + ((shares - 2) * 9999) / 262142`.
pub fn cpu_weight(shares: u64) -> u64 {
    let s = shares.clamp(2, 262_144);
    1 + ((s - 2) * 9999) / 262_142
}

/// The writes for a hierarchy with `controllers` (v1: its own; v2: those its parent offers).
pub fn limit_writes(v2: bool, controllers: &[String], s: &CgroupSpec) -> Vec<LimitWrite> {
    let has = |c: &str| controllers.iter().any(|x| x == c);
    let nz = |v: Option<i64>| v.filter(|x| *x != 0);
    let nzu = |v: Option<u64>| v.filter(|x| *x != 0);
    let mut w: Vec<LimitWrite> = Vec::new();
    if has("memory") {
        if let Some(m) = nz(s.memory_limit) {
            let (file, val) = if v2 {
                ("memory.max", max_or(m))
            } else {
                ("memory.limit_in_bytes", m.to_string())
            };
            w.push(("memory", file, val, vec![Limit::Memory]));
        }
    }
    if has("cpu") {
        if let Some(sh) = nzu(s.cpu_shares) {
            let (file, val) = if v2 {
                ("cpu.weight", cpu_weight(sh).to_string())
            } else {
                ("cpu.shares", sh.to_string())
            };
            w.push(("cpu", file, val, vec![Limit::CpuShares]));
        }
        let (quota, period) = (nz(s.cpu_quota), nzu(s.cpu_period));
        if v2 && (quota.is_some() || period.is_some()) {
            let q = quota
                .filter(|q| *q > 0)
                .map_or("max".into(), |q| q.to_string());
            let val = format!("{q} {}", period.unwrap_or(100_000));
            let mut covers = Vec::new();
            quota.is_some().then(|| covers.push(Limit::CpuQuota));
            period.is_some().then(|| covers.push(Limit::CpuPeriod));
            w.push(("cpu", "cpu.max", val, covers));
        } else if !v2 {
            if let Some(p) = period {
                w.push((
                    "cpu",
                    "cpu.cfs_period_us",
                    p.to_string(),
                    vec![Limit::CpuPeriod],
                ));
            }
            if let Some(q) = quota {
                w.push((
                    "cpu",
                    "cpu.cfs_quota_us",
                    q.to_string(),
                    vec![Limit::CpuQuota],
                ));
            }
        }
    }
    if has("pids") {
        if let Some(p) = nz(s.pids_limit) {
            w.push(("pids", "pids.max", max_or(p), vec![Limit::Pids]));
        }
    }
    w
}
