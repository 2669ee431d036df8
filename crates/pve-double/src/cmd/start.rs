//! `pct start <vmid> [--skiplock]`.

use super::{check_lock, load_config, write_config, Ctx};
use crate::error::{die, PveError, Result};
use crate::getopt::Parsed;
use crate::lock::{lock_config, DEFAULT_TIMEOUT};
use crate::lxc;
use crate::manager::StartError;

pub fn run(ctx: &Ctx, p: &Parsed) -> Result<()> {
    start_ct(ctx, p.vmid(), p.flag("skiplock"))
}

/// Last lines of the CT's stderr file, for failure messages.
fn stderr_tail(ctx: &Ctx, vmid: u32) -> String {
    let t = std::fs::read_to_string(ctx.root.stderr_path(vmid)).unwrap_or_default();
    let lines: Vec<&str> = t.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(5);
    lines[start..].iter().map(|l| format!("{l}\n")).collect()
}

/// Start a CT: regenerate the LXC config, run lxc-start detached, wait until it runs.
pub fn start_ct(ctx: &Ctx, vmid: u32, skiplock: bool) -> Result<()> {
    let root = &ctx.root;
    load_config(root, vmid)?;
    if lxc::is_running(root, vmid) {
        return Err(die(format!("CT {vmid} already running")));
    }
    let _lock = lock_config(root, &ctx.faults, vmid, DEFAULT_TIMEOUT)?;
    let mut conf = load_config(root, vmid)?;
    if !skiplock {
        check_lock(&conf)?;
    }
    if lxc::is_running(root, vmid) {
        return Err(die(format!("CT {vmid} already running")));
    }
    if conf.get("template") == Some("1") {
        return Err(die("you can't start a CT if it's a template"));
    }
    if conf.apply_pending() {
        write_config(root, vmid, &conf)?;
    }
    let failed = |reason: Option<String>| -> PveError {
        let mut m = String::new();
        if let Some(r) = reason {
            let _ = std::fs::write(root.stderr_path(vmid), format!("{r}\n"));
            m.push_str(&r);
            m.push('\n');
        } else {
            m.push_str(&stderr_tail(ctx, vmid));
        }
        m.push_str(&format!("startup for container '{vmid}' failed"));
        die(m)
    };
    if let Err(e) = lxc::prepare(root, vmid, &conf) {
        return Err(failed(Some(e.to_string())));
    }
    let managed_failure = |e| match e {
        StartError::Failed => failed(None),
        StartError::Manager(m) => failed(Some(m)),
    };
    if crate::manager::systemd::is_used(root) {
        // a host whose PID 1 is systemd (the lab): `systemctl start pve-container@<vmid>`
        return crate::manager::systemd::start(root, vmid, lxc::start_timeout())
            .map_err(managed_failure);
    }
    if crate::manager::is_managed(root) {
        // inside a pve-shape: `systemctl start pve-container@<vmid>` (lxc-start becomes a
        // child of the service manager, not of this pct)
        return crate::manager::start(root, vmid, lxc::start_timeout()).map_err(managed_failure);
    }
    lxc::start(root, vmid).map_err(|_| failed(None))
}
