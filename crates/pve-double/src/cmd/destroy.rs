//! `pct destroy <vmid> [--force] [--purge]`.

use std::fs;

use super::{check_lock, load_config, Ctx};
use crate::conf::PctConfig;
use crate::error::{die, Result};
use crate::getopt::Parsed;
use crate::lock::{lock_config, DEFAULT_TIMEOUT};
use crate::lxc;
use crate::propstr::PropStr;
use crate::storage::{self, Volume};

/// Volumes of this CT that live on a storage and belong to it (rootfs, mpN, unusedN).
pub fn owned_volumes(conf: &PctConfig, vmid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in &conf.main.keys {
        let is_vol_key = k == "rootfs"
            || (k.starts_with("mp") && k[2..].bytes().all(|b| b.is_ascii_digit()))
            || k.starts_with("unused");
        if !is_vol_key {
            continue;
        }
        let vol = PropStr::parse(v, Some("volume"))
            .ok()
            .and_then(|p| p.default)
            .unwrap_or_default();
        if let Ok(Volume::Existing { volname, .. }) = storage::parse_volume(&vol) {
            if storage::volume_owner(&volname) == Some(vmid) {
                out.push(vol);
            }
        }
    }
    out
}

pub fn run(ctx: &Ctx, p: &Parsed) -> Result<()> {
    let (root, vmid) = (&ctx.root, p.vmid());
    let conf = load_config(root, vmid)?;
    if conf.get("protection") == Some("1") {
        return Err(die(format!(
            "can't remove CT {vmid} - protection mode enabled"
        )));
    }
    let running_msg = format!("unable to destroy CT {vmid} - container is running");
    if lxc::is_running(root, vmid) {
        if !p.flag("force") {
            return Err(die(running_msg));
        }
        println!("forced to stop CT {vmid} before destroying!");
        lxc::stop_kill(root, vmid)?;
    }
    let _lock = lock_config(root, &ctx.faults, vmid, DEFAULT_TIMEOUT)?;
    let conf = load_config(root, vmid)?;
    check_lock(&conf)?;
    if lxc::is_running(root, vmid) {
        return Err(die(running_msg));
    }
    lxc::unmount_rootfs(root, vmid)?;
    for v in owned_volumes(&conf, vmid) {
        storage::free_volume(root, &v)?;
    }
    storage::remove_tree(&root.lxc_dir(vmid))?;
    for f in [root.lxc_log_path(vmid), root.console_log_path(vmid)] {
        let _ = fs::remove_file(f);
    }
    fs::remove_file(root.conf_path(vmid)).map_err(|e| {
        die(format!(
            "unable to remove '{}' - {e}",
            root.conf_path(vmid).display()
        ))
    })?;
    crate::cluster::refresh_vmlist(root) // shape hook: .vmlist follows the config files
}
