//! `pct set <vmid> [OPTIONS] [--delete k1,k2]`.

use super::create::{apply_simple_option, create_disk, is_disk_key};
use super::{check_lock, load_config, write_config, Ctx};
use crate::conf::PctConfig;
use crate::error::{die, PveError, Result};
use crate::getopt::Parsed;
use crate::lock::{lock_config, DEFAULT_TIMEOUT};
use crate::lxc;
use crate::propstr::PropStr;
use crate::storage::{self, Volume};

/// Options that only take effect at the next start when the CT is running.
fn is_pending_when_running(k: &str) -> bool {
    matches!(
        k,
        "entrypoint"
            | "env"
            | "features"
            | "arch"
            | "ostype"
            | "cmode"
            | "console"
            | "tty"
            | "rootfs"
            | "hookscript"
            | "nameserver"
            | "searchdomain"
            | "timezone"
            | "debug"
    ) || is_disk_key(k)
        || k.starts_with("net")
        || k.starts_with("dev")
}

/// Options applied to the running CT's cgroups.
fn is_hotplug_limit(k: &str) -> bool {
    matches!(k, "memory" | "swap" | "cpulimit" | "cores" | "cpuunits")
}

const META: &[&str] = &["delete", "digest", "revert", "skiplock"];

/// Move a deleted mpN's own volume to unusedN (as PVE does) instead of losing it.
fn park_volume(conf: &mut PctConfig, vmid: u32, value: &str) {
    let vol = PropStr::parse(value, Some("volume"))
        .ok()
        .and_then(|p| p.default)
        .unwrap_or_default();
    if let Ok(Volume::Existing { volname, .. }) = storage::parse_volume(&vol) {
        if storage::volume_owner(&volname) == Some(vmid) {
            if let Some(i) = (0..256).find(|i| conf.get(&format!("unused{i}")).is_none()) {
                conf.set(&format!("unused{i}"), vol);
            }
        }
    }
}

pub fn run(ctx: &Ctx, p: &Parsed) -> Result<()> {
    let (root, vmid) = (&ctx.root, p.vmid());
    let usage = ctx.spec.usage();
    let deletes: Vec<String> = p
        .opt("delete")
        .map(|d| {
            d.split([',', ';', ' '])
                .filter(|x| !x.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let changes: Vec<(&String, &String)> = p
        .opts
        .iter()
        .filter(|(k, _)| !META.contains(&k.as_str()))
        .collect();
    if changes.is_empty() && deletes.is_empty() && p.opt("revert").is_none() {
        return Err(die("no options specified"));
    }
    if changes.iter().any(|(k, _)| k.as_str() == "unprivileged")
        || deletes.iter().any(|d| d == "unprivileged")
    {
        return Err(die("unable to modify read-only option: 'unprivileged'"));
    }
    for d in &deletes {
        if matches!(d.as_str(), "memory" | "rootfs" | "ostype") {
            return Err(die(format!("unable to delete required option '{d}'")));
        }
        if changes.iter().any(|(k, _)| *k == d) {
            return Err(die(format!(
                "you can't change and delete the same option '{d}'"
            )));
        }
    }

    let _lock = lock_config(root, &ctx.faults, vmid, DEFAULT_TIMEOUT)?;
    let mut conf = load_config(root, vmid)?;
    if changes.iter().all(|(k, _)| k.as_str() != "lock") {
        check_lock(&conf)?;
    }
    let running = lxc::is_running(root, vmid);
    let mut hotplug = false;

    if let Some(r) = p.opt("revert") {
        if let Some(pend) = conf.pending.as_mut() {
            for k in r.split([',', ';', ' ']).filter(|x| !x.is_empty()) {
                pend.keys.remove(k);
            }
        }
    }
    for d in &deletes {
        if running && is_pending_when_running(d) {
            conf.add_pending_delete(d);
            continue;
        }
        if d == "description" {
            conf.main.description = None;
        } else if let Some(old) = conf.remove(d) {
            if d.starts_with("mp") {
                park_volume(&mut conf, vmid, &old);
            }
        }
        hotplug |= running && is_hotplug_limit(d);
    }

    let mut errors: Vec<(String, String)> = Vec::new();
    let mut staged = PctConfig::default();
    for (k, v) in &changes {
        let (k, v) = (k.as_str(), v.as_str());
        if k == "lock" {
            staged.set(k, v);
        } else if is_disk_key(k) {
            let owner = if conf.is_unprivileged() {
                (crate::idmap::BASE, crate::idmap::BASE)
            } else {
                (0, 0)
            };
            let (val, _) = create_disk(root, vmid, k, v, owner)?;
            staged.set(k, val);
        } else {
            apply_simple_option(ctx.profile, &mut staged, k, v, &mut errors);
        }
    }
    if !errors.is_empty() {
        errors.sort();
        return Err(PveError::Param { errors, usage });
    }
    if let Some(d) = staged.main.description.take() {
        conf.main.description = Some(d);
    }
    for (k, v) in staged.main.keys {
        if running && is_pending_when_running(&k) {
            conf.add_pending(&k, &v);
        } else {
            if k.starts_with("mp") {
                if let Some(old) = conf.get(&k).map(str::to_string) {
                    if old != v {
                        park_volume(&mut conf, vmid, &old);
                    }
                }
            }
            hotplug |= running && is_hotplug_limit(&k);
            conf.set(&k, v);
        }
    }
    write_config(root, vmid, &conf)?;
    if hotplug {
        lxc::apply_limits_live(vmid, &conf)?;
    }
    Ok(())
}
