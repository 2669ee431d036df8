//! `pct template <vmid>`: turn a stopped CT into a template (PVE::API2::LXC `template`).
//!
//! Checks under the config lock, in pve-container's order: `CT is locked (<lock>)`,
//! `unable to create template, because CT contains snapshots`, `you can't convert a template
//! to a template`, `you can't convert a CT to template if the CT is running`. Then every
//! volume becomes a base volume (`vdisk_create_base`, see storage::clone), `template: 1` is
//! written and the generated LXC config removed. Silent on success.

use super::create::is_disk_key;
use super::{check_lock, load_config, write_config, Ctx};
use crate::error::{die, Result};
use crate::getopt::Parsed;
use crate::lock::{lock_config, DEFAULT_TIMEOUT};
use crate::propstr::PropStr;
use crate::storage::{self, Volume};
use crate::{lxc, storage::clone};

pub fn run(ctx: &Ctx, p: &Parsed) -> Result<()> {
    let (root, vmid) = (&ctx.root, p.vmid());
    let _lock = lock_config(root, &ctx.faults, vmid, DEFAULT_TIMEOUT)?;
    let mut conf = load_config(root, vmid)?;
    check_lock(&conf)?;
    if !conf.snapshots.is_empty() {
        return Err(die(
            "unable to create template, because CT contains snapshots",
        ));
    }
    if conf.get("template") == Some("1") {
        return Err(die("you can't convert a template to a template"));
    }
    if lxc::is_running(root, vmid) {
        return Err(die(
            "you can't convert a CT to template if the CT is running",
        ));
    }
    let keys: Vec<(String, String)> = conf
        .main
        .keys
        .iter()
        .filter(|(k, _)| is_disk_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // volume_has_feature(template) first, for every volume
    for (_, v) in &keys {
        let vol = volume_of(v);
        if !matches!(storage::parse_volume(&vol), Ok(Volume::Existing { .. })) {
            return Err(die(format!(
                "Template feature is not available for '{vol}'"
            )));
        }
    }
    lxc::unmount_rootfs(root, vmid)?;
    for (k, v) in keys {
        let mut mp = PropStr::parse(&v, Some("volume")).map_err(die)?;
        let vol = volume_of(&v);
        let base = clone::create_base(root, &vol)?;
        mp.default = Some(base);
        conf.set(&k, mp.print(&["mp"]));
        // write after each volume, as template_create does (a later failure leaves the
        // renamed volumes recorded)
        write_config(root, vmid, &conf)?;
    }
    conf.set("template", "1");
    write_config(root, vmid, &conf)?;
    let _ = std::fs::remove_file(root.lxc_dir(vmid).join("config"));
    Ok(())
}

fn volume_of(v: &str) -> String {
    PropStr::parse(v, Some("volume"))
        .ok()
        .and_then(|p| p.default)
        .unwrap_or_default()
}
