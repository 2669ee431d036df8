//! `pct clone <vmid> <newid> [--full 0|1] [--hostname] [--description] [--pool] [--snapname]
//! [--storage] [--target] [--bwlimit]` (PVE::API2::LXC `clone_vm`).
//!
//! The source is locked (`lock: disk`) and the new CT's config created locked (`lock:
//! create`, pmxcfs rules as in create); every option is copied except `unusedN`, snapshot
//! keys, `[pve:pending]` and `template`; each netN gets a new MAC; `--hostname` and
//! `--description` replace the source's. A template's default is a linked clone (`--full 0`),
//! any other CT's a full copy. Refusals: `parameter 'storage' not allowed for linked clones`,
//! `unable to clone mountpoint 'mpN' (type bind)`, `Linked clone feature for '<volid>' is not
//! available`, `Full clone of a running container is only possible from a snapshot`. The
//! worker prints `creating a clone of container V with ID N` and per volume `create linked
//! clone of mount point K (VOLID)` / `create full clone of mountpoint K (VOLID)`; a failure
//! frees what it made and fails `clone failed: <msg>`. Rootfs bytes written are accounted
//! (storage::written).

use std::process::Command;

use super::create::is_disk_key;
use super::{check_lock, load_config, write_config, Ctx};
use crate::conf::PctConfig;
use crate::error::{die, Result};
use crate::getopt::Parsed;
use crate::lock::{lock_config, CREATE_TIMEOUT, DEFAULT_TIMEOUT};
use crate::paths::Root;
use crate::propstr::PropStr;
use crate::storage::{self, clone, written, Volume};
use crate::{cluster, lxc};

/// `set_lock` / `remove_lock` of PVE::AbstractConfig.
fn set_lock(ctx: &Ctx, vmid: u32, lock: Option<&str>) -> Result<PctConfig> {
    let _l = lock_config(&ctx.root, &ctx.faults, vmid, DEFAULT_TIMEOUT)?;
    let mut conf = load_config(&ctx.root, vmid)?;
    match lock {
        Some(l) => {
            check_lock(&conf)?;
            conf.set("lock", l);
        }
        None => {
            conf.remove("lock");
        }
    }
    write_config(&ctx.root, vmid, &conf)?;
    Ok(conf)
}

fn destroy_new(root: &Root, newid: u32, vols: &[String]) {
    for v in vols {
        let _ = storage::free_volume(root, v);
    }
    let _ = std::fs::remove_file(root.conf_path(newid));
    let _ = cluster::refresh_vmlist(root);
}

pub fn run(ctx: &Ctx, p: &Parsed) -> Result<()> {
    let (root, vmid) = (&ctx.root, p.vmid());
    let newid: u32 = p.arg("newid").parse().unwrap_or(0);
    if let Some(t) = p.opt("target") {
        if t != root.node && t != "localhost" {
            return Err(die(format!(
                "pve-double: clone to another node ('{t}') is not supported"
            )));
        }
    }
    if let Some(s) = p.opt("storage") {
        storage::check_storage(root, s)?;
    }
    let src = set_lock(ctx, vmid, Some("disk"))?;
    let created = {
        let _l = lock_config(root, &ctx.faults, newid, CREATE_TIMEOUT);
        _l.and_then(|_l| {
            if ctx.faults.create_exists(newid) {
                return Err(die(format!(
                    "CT {newid} already exists on node '{}'",
                    root.node
                )));
            }
            cluster::check_vmid_unused(root, newid)?;
            let mut placeholder = PctConfig::default();
            placeholder.set("lock", "create");
            cluster::create_config(root, newid, &placeholder.to_text(), false)
        })
    };
    if let Err(e) = created {
        let _ = set_lock(ctx, vmid, None);
        return Err(e);
    }
    let planned = plan(ctx, p, &src, vmid, newid);
    let (mut conf, volumes) = match planned {
        Ok(v) => v,
        Err(e) => {
            let _ = set_lock(ctx, vmid, None);
            destroy_new(root, newid, &[]);
            return Err(e);
        }
    };
    println!("creating a clone of container {vmid} with ID {newid}");
    let mut made: Vec<String> = Vec::new();
    let res = copy_volumes(ctx, p, newid, &volumes, &mut conf, &mut made);
    let _ = set_lock(ctx, vmid, None);
    if let Err(e) = res {
        destroy_new(root, newid, &made);
        let (m, _) = e.render();
        return Err(die(format!("clone failed: {}", m.trim_end())));
    }
    conf.remove("lock");
    write_config(root, newid, &conf)
}

/// The new CT's config (still `lock: create`) and the volumes to clone (key, value, full).
type Planned = (PctConfig, Vec<(String, String, bool)>);

fn plan(ctx: &Ctx, p: &Parsed, src: &PctConfig, vmid: u32, newid: u32) -> Result<Planned> {
    let root = &ctx.root;
    let running = lxc::is_running(root, vmid);
    let template = src.get("template") == Some("1");
    let full = p.opt("full").map(|v| v == "1").unwrap_or(!template);
    if p.opt("storage").is_some() && !full {
        return Err(die("parameter 'storage' not allowed for linked clones"));
    }
    if let Some(s) = p.opt("snapname") {
        if !src.snapshots.iter().any(|(n, _)| n == s) {
            return Err(die(format!("snapshot '{s}' does not exist")));
        }
        return Err(die("pve-double: cloning from a snapshot is not supported"));
    }
    let mut conf = PctConfig {
        main: src.main.clone(),
        pending: None,
        snapshots: Vec::new(),
    };
    let mut volumes = Vec::new();
    for (k, v) in &src.main.keys {
        if k.starts_with("unused") || matches!(k.as_str(), "parent" | "snaptime" | "snapstate") {
            conf.remove(k);
        } else if is_disk_key(k) {
            let vol = PropStr::parse(v, Some("volume"))
                .ok()
                .and_then(|p| p.default)
                .unwrap_or_default();
            match storage::parse_volume(&vol) {
                Ok(Volume::Existing { .. }) => {}
                _ => return Err(die(format!("unable to clone mountpoint '{k}' (type bind)"))),
            }
            if full && running {
                return Err(die(
                    "Full clone of a running container is only possible from a snapshot",
                ));
            }
            if !full && !clone::can_link(root, &vol)? {
                return Err(die(format!(
                    "Linked clone feature for '{vol}' is not available"
                )));
            }
            volumes.push((k.clone(), v.clone(), full));
        } else if k.starts_with("net") {
            let mut n = PropStr::parse(v, Some("name")).map_err(die)?;
            n.set("hwaddr", &super::validate::random_hwaddr());
            conf.set(k, n.print(&["name", "bridge", "hwaddr"]));
        }
    }
    conf.set("lock", "create");
    conf.remove("template");
    if let Some(h) = p.opt("hostname") {
        if !super::validate::is_dns_name(h) {
            return Err(die(
                "hostname: invalid format - value does not look like a valid DNS name",
            ));
        }
        conf.set("hostname", h);
    }
    if let Some(d) = p.opt("description") {
        conf.main.description = Some(d.to_string());
    }
    write_config(root, newid, &conf)?;
    Ok((conf, volumes))
}

fn copy_volumes(
    ctx: &Ctx,
    p: &Parsed,
    newid: u32,
    volumes: &[(String, String, bool)],
    conf: &mut PctConfig,
    made: &mut Vec<String>,
) -> Result<()> {
    let root = &ctx.root;
    for (k, v, full) in volumes {
        let mut mp = PropStr::parse(v, Some("volume")).map_err(die)?;
        let vol = mp.default.clone().unwrap_or_default();
        let (new, bytes) = if *full {
            println!("create full clone of mountpoint {k} ({vol})");
            full_copy(root, p, newid, &vol, &mp, made)?
        } else {
            println!("create linked clone of mount point {k} ({vol})");
            let new = clone::link(root, &vol, newid)?;
            made.push(new.clone());
            let bytes = match storage::parse_volume(&new) {
                Ok(Volume::Existing { sid, volname }) => clone::private_bytes(root, &sid, &volname),
                _ => 0,
            };
            (new, bytes)
        };
        written::record(root, "clone", newid, &new, bytes);
        mp.default = Some(new);
        conf.set(k, mp.print(&["mp"]));
        write_config(root, newid, conf)?;
    }
    Ok(())
}

/// `copy_volume`: a new volume of the same size on the target storage, the files copied.
fn full_copy(
    root: &Root,
    p: &Parsed,
    newid: u32,
    vol: &str,
    mp: &PropStr,
    made: &mut Vec<String>,
) -> Result<(String, u64)> {
    let Ok(Volume::Existing { sid, volname }) = storage::parse_volume(vol) else {
        return Err(die(format!("unable to parse volume ID '{vol}'")));
    };
    storage::activate(root, vol)?;
    let from = storage::volume_path(root, &sid, &volname)?;
    let target = p.opt("storage").unwrap_or(&sid).to_string();
    let size = mp
        .get("size")
        .map(size_gib)
        .unwrap_or(if sid == target { 0.0 } else { 4.0 });
    let md = std::fs::metadata(&from).map_err(|e| die(format!("{vol}: {e}")))?;
    use std::os::unix::fs::MetadataExt;
    let new = storage::alloc(root, &target, newid, size, (md.uid(), md.gid()))?;
    made.push(new.clone());
    let Ok(Volume::Existing {
        sid: ns,
        volname: nv,
    }) = storage::parse_volume(&new)
    else {
        return Err(die(format!("unable to parse volume ID '{new}'")));
    };
    let to = storage::volume_path(root, &ns, &nv)?;
    let out = Command::new("cp")
        .arg("-a")
        .arg("--")
        .arg(from.join("."))
        .arg(&to)
        .output()
        .map_err(|e| die(format!("unable to run 'cp' - {e}")))?;
    if !out.status.success() {
        return Err(die(format!(
            "copy of '{vol}' failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok((new, written::tree_bytes(&to)))
}

/// `4G`, `512M`, `0T`, ... in GiB.
fn size_gib(s: &str) -> f64 {
    let (n, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = n.parse().unwrap_or(0.0);
    match unit {
        "T" => n * 1024.0,
        "M" => n / 1024.0,
        "K" => n / (1024.0 * 1024.0),
        _ => n,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes() {
        assert_eq!(super::size_gib("4G"), 4.0);
        assert_eq!(super::size_gib("512M"), 0.5);
        assert_eq!(super::size_gib("0T"), 0.0);
    }
}
