//! `pct stop`, `pct shutdown`, `pct reboot`.

use super::{check_lock, load_config, Ctx};
use crate::error::{die, Result};
use crate::getopt::Parsed;
use crate::lock::{lock_config, DEFAULT_TIMEOUT};
use crate::lxc;

pub fn stop(ctx: &Ctx, p: &Parsed) -> Result<()> {
    let (root, vmid) = (&ctx.root, p.vmid());
    if !lxc::is_running(root, vmid) {
        return Err(die(format!("CT {vmid} not running")));
    }
    let _lock = lock_config(root, &ctx.faults, vmid, DEFAULT_TIMEOUT)?;
    let conf = load_config(root, vmid)?;
    if !p.flag("skiplock") {
        check_lock(&conf)?;
    }
    if !lxc::is_running(root, vmid) {
        return Err(die(format!("CT {vmid} not running")));
    }
    lxc::stop_kill(root, vmid)
}

fn do_shutdown(ctx: &Ctx, vmid: u32, timeout: u64, force: bool) -> Result<()> {
    let root = &ctx.root;
    let _lock = lock_config(root, &ctx.faults, vmid, DEFAULT_TIMEOUT)?;
    let conf = load_config(root, vmid)?;
    check_lock(&conf)?;
    if !lxc::is_running(root, vmid) {
        return Err(die(format!("CT {vmid} not running")));
    }
    if lxc::shutdown(root, vmid, timeout)? {
        return Ok(());
    }
    if force {
        return lxc::stop_kill(root, vmid);
    }
    Err(die("container did not stop"))
}

pub fn shutdown(ctx: &Ctx, p: &Parsed) -> Result<()> {
    let vmid = p.vmid();
    if !lxc::is_running(&ctx.root, vmid) {
        return Err(die(format!("CT {vmid} not running")));
    }
    let timeout = p.opt("timeout").and_then(|t| t.parse().ok()).unwrap_or(60);
    do_shutdown(ctx, vmid, timeout, p.flag("forceStop"))
}

pub fn reboot(ctx: &Ctx, p: &Parsed) -> Result<()> {
    let vmid = p.vmid();
    if !lxc::is_running(&ctx.root, vmid) {
        return Err(die(format!("VM {vmid} not running")));
    }
    let timeout = p.opt("timeout").and_then(|t| t.parse().ok()).unwrap_or(60);
    do_shutdown(ctx, vmid, timeout, true)?;
    super::start::start_ct(ctx, vmid, false)
}
