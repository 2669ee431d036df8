//! `pct status <vmid> [--verbose]` and the vmstatus data shared with list/pvesh.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{load_config, Ctx};
use crate::conf::PctConfig;
use crate::error::Result;
use crate::getopt::Parsed;
use crate::lxc;
use crate::paths::Root;
use crate::propstr::PropStr;

fn size_to_bytes(s: &str) -> u64 {
    let (num, mult) = match s.chars().last() {
        Some('T') => (&s[..s.len() - 1], 1u64 << 40),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('K') => (&s[..s.len() - 1], 1 << 10),
        _ => (s, 1),
    };
    num.parse::<f64>()
        .map(|n| (n * mult as f64) as u64)
        .unwrap_or(0)
}

fn uptime_of(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    // fields after the comm: state is field 3; starttime is field 22
    let start: u64 = after
        .split_whitespace()
        .nth(19)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let up: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|u| u.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0.0);
    (up as u64).saturating_sub(start / hz)
}

fn mem_usage(vmid: u32) -> u64 {
    let p = if lxc::host_is_cgroup2() {
        lxc::cgroup_dir(vmid, "").join("memory.current")
    } else {
        lxc::cgroup_dir(vmid, "memory").join("memory.usage_in_bytes")
    };
    std::fs::read_to_string(p)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// The status hash PVE::LXC::vmstatus computes (the subset that is meaningful here).
pub fn vm_status(root: &Root, vmid: u32, conf: &PctConfig) -> BTreeMap<String, Value> {
    let running = lxc::is_running(root, vmid);
    let mut m = BTreeMap::new();
    let host_cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as u64;
    let cpus = conf
        .get("cores")
        .and_then(|c| c.parse::<u64>().ok())
        .unwrap_or(host_cpus)
        .min(host_cpus);
    let mib = |k: &str, d: u64| {
        conf.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(d) * 1024 * 1024
    };
    let maxdisk = conf
        .get("rootfs")
        .and_then(|r| PropStr::parse(r, Some("volume")).ok())
        .and_then(|p| p.get("size").map(size_to_bytes))
        .unwrap_or(0);
    m.insert("cpu".into(), json!(0));
    m.insert("cpus".into(), json!(cpus));
    m.insert("disk".into(), json!(0));
    m.insert("diskread".into(), json!(0));
    m.insert("diskwrite".into(), json!(0));
    m.insert("maxdisk".into(), json!(maxdisk));
    m.insert("maxmem".into(), json!(mib("memory", 512)));
    m.insert("maxswap".into(), json!(mib("swap", 512)));
    m.insert(
        "mem".into(),
        json!(if running { mem_usage(vmid) } else { 0 }),
    );
    m.insert("name".into(), json!(conf.hostname(vmid)));
    m.insert("netin".into(), json!(0));
    m.insert("netout".into(), json!(0));
    m.insert(
        "status".into(),
        json!(if running { "running" } else { "stopped" }),
    );
    m.insert("swap".into(), json!(0));
    m.insert("type".into(), json!("lxc"));
    m.insert("uptime".into(), json!(0));
    m.insert("vmid".into(), json!(vmid));
    if let Some(l) = conf.lock() {
        m.insert("lock".into(), json!(l));
    }
    if let Some(t) = conf.get("tags") {
        m.insert("tags".into(), json!(t));
    }
    if conf.get("template") == Some("1") {
        m.insert("template".into(), json!(1));
    }
    if running {
        if let Some(pid) = lxc::init_pid(root, vmid) {
            m.insert("pid".into(), json!(pid));
            m.insert("uptime".into(), json!(uptime_of(pid)));
        }
    }
    m
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn run(ctx: &Ctx, p: &Parsed) -> Result<()> {
    let (root, vmid) = (&ctx.root, p.vmid());
    let conf = load_config(root, vmid)?;
    if p.flag("verbose") {
        let st = vm_status(root, vmid, &conf);
        let mut out = String::new();
        for (k, v) in &st {
            out.push_str(&format!("{k}: {}\n", plain(v)));
        }
        print!("{out}");
    } else {
        let running = lxc::is_running(root, vmid);
        println!("status: {}", if running { "running" } else { "stopped" });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::size_to_bytes("4G"), 4 << 30);
        assert_eq!(super::size_to_bytes("512M"), 512 << 20);
    }
}
