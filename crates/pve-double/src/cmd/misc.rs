//! `pct unlock`, `pct mount`, `pct unmount`.

use super::{check_lock, load_config, write_config, Ctx};
use crate::error::Result;
use crate::getopt::Parsed;
use crate::lock::{lock_config, DEFAULT_TIMEOUT};
use crate::lxc;

pub fn unlock(ctx: &Ctx, p: &Parsed) -> Result<()> {
    let (root, vmid) = (&ctx.root, p.vmid());
    let _lock = lock_config(root, &ctx.faults, vmid, DEFAULT_TIMEOUT)?;
    let mut conf = load_config(root, vmid)?;
    if conf.remove("lock").is_some() {
        write_config(root, vmid, &conf)?;
    }
    Ok(())
}

pub fn mount(ctx: &Ctx, p: &Parsed) -> Result<()> {
    let (root, vmid) = (&ctx.root, p.vmid());
    let _lock = lock_config(root, &ctx.faults, vmid, DEFAULT_TIMEOUT)?;
    let mut conf = load_config(root, vmid)?;
    check_lock(&conf)?;
    let dst = lxc::mount_rootfs(root, vmid, &conf)?;
    conf.set("lock", "mounted");
    write_config(root, vmid, &conf)?;
    println!("mounted CT {vmid} in '{}'", dst.display());
    Ok(())
}

pub fn unmount(ctx: &Ctx, p: &Parsed) -> Result<()> {
    let (root, vmid) = (&ctx.root, p.vmid());
    let _lock = lock_config(root, &ctx.faults, vmid, DEFAULT_TIMEOUT)?;
    let mut conf = load_config(root, vmid)?;
    lxc::unmount_rootfs(root, vmid)?;
    if conf.lock() == Some("mounted") {
        conf.remove("lock");
        write_config(root, vmid, &conf)?;
    }
    Ok(())
}
