//! `pct create <vmid> <ostemplate> [OPTIONS]`.

use std::fs;
use std::path::{Path, PathBuf};

use super::extract;
use super::validate::{check_features, is_dns_name, normalize_net, normalize_tags, parse_mp};
use super::{check_lock, config_exists, load_config, write_config, Ctx};
use crate::conf::PctConfig;
use crate::error::{die, param_err, Context, PveError, Result};
use crate::getopt::Parsed;
use crate::idmap;
use crate::lock::{lock_config, CREATE_TIMEOUT};
use crate::paths::Root;
use crate::profile::Profile;
use crate::propstr::PropStr;
use crate::storage::{self, Volume};

/// Options that are not stored in the config.
const NOT_CONFIG: &[&str] = &[
    "force",
    "ha-managed",
    "ignore-unpack-errors",
    "password",
    "pool",
    "restore",
    "ssh-public-keys",
    "start",
    "storage",
    "unique",
    "unprivileged",
];

pub fn is_disk_key(k: &str) -> bool {
    k == "rootfs"
        || (k.starts_with("mp") && k.len() > 2 && k[2..].bytes().all(|b| b.is_ascii_digit()))
}

/// Validate/normalise one non-disk option into `conf`; errors go to `errors`.
pub fn apply_simple_option(
    profile: Profile,
    conf: &mut PctConfig,
    k: &str,
    v: &str,
    errors: &mut Vec<(String, String)>,
) {
    match k {
        "hostname" => {
            if is_dns_name(v) {
                conf.set(k, v);
            } else {
                errors.push((
                    k.into(),
                    "invalid format - value does not look like a valid DNS name".into(),
                ));
            }
        }
        "tags" => match normalize_tags(v) {
            Ok(t) => conf.set(k, t),
            Err(e) => errors.push((k.into(), e)),
        },
        "features" => match check_features(v) {
            Ok(()) => conf.set(k, v),
            Err(e) => errors.push((k.into(), e)),
        },
        "description" => conf.main.description = Some(v.to_string()),
        _ if k.starts_with("net") => match normalize_net(v, profile.has_host_managed()) {
            Ok(n) => conf.set(k, n),
            Err(errs) => errors.extend(errs.into_iter().map(|(sfx, m)| (format!("{k}{sfx}"), m))),
        },
        _ => conf.set(k, v),
    }
}

/// Allocate (or check) the volume of a rootfs/mpN value; returns the config value to store and
/// the newly allocated volume id, if any. New volumes' roots are owned by `owner` (the CT's
/// root on the host).
pub fn create_disk(
    root: &Root,
    vmid: u32,
    key: &str,
    value: &str,
    owner: (u32, u32),
) -> Result<(String, Option<String>)> {
    let mut p = parse_mp(value, key == "rootfs").map_err(|(s, m)| die(format!("{key}{s}: {m}")))?;
    let vol = p.default.clone().unwrap_or_default();
    match storage::parse_volume(&vol).map_err(die)? {
        Volume::Alloc { sid, size_gib } => {
            let volid = storage::alloc(root, &sid, vmid, size_gib, owner)?;
            p.default = Some(volid.clone());
            p.set("size", &storage::format_size_gib(size_gib));
            Ok((p.print(&["mp"]), Some(volid)))
        }
        Volume::Existing { sid, volname } => {
            let path = storage::volume_path(root, &sid, &volname)?;
            if !path.exists() && !storage::thin::image_path(root, &sid, &volname).exists() {
                return Err(die(format!("volume '{vol}' does not exist")));
            }
            Ok((p.print(&["mp"]), None))
        }
        Volume::Path(path) => {
            if key == "rootfs" {
                fs::create_dir_all(&path)
                    .ctx(|| format!("unable to create '{}'", path.display()))?;
            } else if !path.exists() {
                return Err(die(format!(
                    "mount point '{}' does not exist",
                    path.display()
                )));
            }
            Ok((p.print(&["mp"]), None))
        }
    }
}

fn map_os_id(id: &str) -> Option<&'static str> {
    Some(match id {
        "debian" => "debian",
        "devuan" => "devuan",
        "ubuntu" => "ubuntu",
        "centos" | "rocky" | "almalinux" | "rhel" | "ol" => "centos",
        "fedora" => "fedora",
        "arch" | "archlinux" => "archlinux",
        "alpine" => "alpine",
        "gentoo" => "gentoo",
        "nixos" => "nixos",
        i if i.starts_with("opensuse") || i == "sles" => "opensuse",
        _ => return None,
    })
}

/// Detect the OS type of an unpacked rootfs (no /etc/os-release and no known marker → unmanaged).
pub fn detect_ostype(rootfs: &Path) -> Result<String> {
    for rel in ["etc/os-release", "usr/lib/os-release"] {
        let p = rootfs.join(rel);
        if fs::symlink_metadata(&p)
            .map(|m| m.is_file())
            .unwrap_or(false)
        {
            let text = fs::read_to_string(&p).unwrap_or_default();
            let id = text
                .lines()
                .find_map(|l| l.strip_prefix("ID="))
                .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_string())
                .unwrap_or_default();
            return map_os_id(&id)
                .map(str::to_string)
                .ok_or_else(|| die("unable to detect OS distribution"));
        }
    }
    if rootfs.join("etc/debian_version").exists() {
        return Ok("debian".into());
    }
    if rootfs.join("etc/alpine-release").exists() {
        return Ok("alpine".into());
    }
    Ok("unmanaged".into())
}

pub fn run(ctx: &Ctx, p: &Parsed) -> Result<()> {
    let root = &ctx.root;
    let vmid = p.vmid();
    let usage = ctx.spec.usage();
    let force = p.flag("force");
    let exists_msg = format!("CT {vmid} already exists on node '{}'", root.node);
    crate::cluster::precheck_create(root, vmid, force)?; // shape hook: VMIDs are cluster-wide
    if config_exists(root, vmid) {
        if !force {
            return Err(die(exists_msg));
        }
        if crate::lxc::is_running(root, vmid) {
            return Err(die("can't overwrite running container"));
        }
    }
    let archive = storage::resolve_template(root, p.arg("ostemplate"))?;
    let storage_id = p.opt("storage").unwrap_or("local").to_string();
    let default_storage = storage::check_storage(root, &storage_id)?;

    // disks: plain numbers mean "default storage:SIZE"
    let mut disks: Vec<(String, String)> = Vec::new();
    let mut errors: Vec<(String, String)> = Vec::new();
    for (k, v) in &p.opts {
        if !is_disk_key(k) {
            continue;
        }
        let is_num = !v.is_empty()
            && v.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            && v.parse::<f64>().is_ok();
        let v = if is_num {
            format!("{storage_id}:{v}")
        } else {
            v.clone()
        };
        match parse_mp(&v, k == "rootfs") {
            Ok(pp) => {
                let vol = pp.default.clone().unwrap_or_default();
                match storage::parse_volume(&vol) {
                    Ok(Volume::Alloc { sid, .. }) | Ok(Volume::Existing { sid, .. }) => {
                        let def = storage::check_storage(root, &sid)?;
                        if !storage::supports_rootdir(&def) {
                            return Err(param_err(
                                "storage",
                                format!("storage '{sid}' does not support container directories"),
                                &usage,
                            ));
                        }
                    }
                    Ok(Volume::Path(_)) => {}
                    Err(e) => errors.push((k.clone(), e)),
                }
            }
            Err((sfx, m)) => errors.push((format!("{k}{sfx}"), m)),
        }
        disks.push((k.clone(), v));
    }
    if !disks.is_empty() && !disks.iter().any(|(k, _)| k == "rootfs") {
        return Err(die(
            "mount points configured, but 'rootfs' not set - aborting",
        ));
    }
    if disks.is_empty() {
        if !storage::supports_rootdir(&default_storage) {
            return Err(param_err(
                "storage",
                format!("storage '{storage_id}' does not support container directories"),
                &usage,
            ));
        }
        disks.push(("rootfs".into(), format!("{storage_id}:4")));
    }
    // rootfs first, then mount points
    disks.sort_by_key(|(k, _)| (k != "rootfs", k.clone()));

    let mut conf = PctConfig::default();
    for (k, v) in &p.opts {
        if is_disk_key(k) || NOT_CONFIG.contains(&k.as_str()) {
            continue;
        }
        apply_simple_option(ctx.profile, &mut conf, k, v, &mut errors);
    }
    if !errors.is_empty() {
        errors.sort();
        return Err(PveError::Param { errors, usage });
    }
    let unprivileged = p.opt("unprivileged").unwrap_or("1") == "1";
    if unprivileged {
        conf.set("unprivileged", "1");
    }

    {
        let _lock = lock_config(root, &ctx.faults, vmid, CREATE_TIMEOUT)?;
        let fail = |e: PveError| -> PveError {
            let (m, _) = e.render();
            die(format!("unable to create CT {vmid} - {}", m.trim_end()))
        };
        if ctx.faults.create_exists(vmid) {
            return Err(fail(die(exists_msg)));
        }
        if !force {
            crate::cluster::check_vmid_unused(root, vmid).map_err(fail)?; // shape hook
        }
        if config_exists(root, vmid) {
            if !force {
                return Err(fail(die(exists_msg)));
            }
            let old = load_config(root, vmid).map_err(fail)?;
            check_lock(&old).map_err(fail)?;
        }
        // create_and_lock_config: the CT exists from now on, locked
        let mut placeholder = PctConfig::default();
        placeholder.set("lock", "create");
        // shape hook: pmxcfs semantics (EEXIST for a VMID used elsewhere, O_EXCL, .vmlist)
        crate::cluster::create_config(root, vmid, &placeholder.to_text(), force).map_err(fail)?;

        let mut allocated: Vec<String> = Vec::new();
        let res = build(
            ctx,
            vmid,
            &archive,
            &disks,
            &mut conf,
            unprivileged,
            p,
            &mut allocated,
        );
        if let Err(e) = res {
            for v in &allocated {
                let _ = storage::free_volume(root, v);
            }
            let _ = fs::remove_file(root.conf_path(vmid));
            let _ = crate::cluster::refresh_vmlist(root); // shape hook
            return Err(fail(e));
        }
    }
    if p.flag("start") {
        super::start::start_ct(ctx, vmid, false)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn build(
    ctx: &Ctx,
    vmid: u32,
    archive: &Path,
    disks: &[(String, String)],
    conf: &mut PctConfig,
    unprivileged: bool,
    p: &Parsed,
    allocated: &mut Vec<String>,
) -> Result<()> {
    let root = &ctx.root;
    let owner = if unprivileged {
        (idmap::BASE, idmap::BASE)
    } else {
        (0, 0)
    };
    for (k, v) in disks {
        let (val, new) = create_disk(root, vmid, k, v, owner)?;
        if let Some(n) = new {
            allocated.push(n);
        }
        conf.set(k, val);
    }
    if let Some(vol) = conf
        .get("rootfs")
        .and_then(|r| PropStr::parse(r, Some("volume")).ok())
        .and_then(|p| p.default)
    {
        storage::activate(root, &vol)?;
    }
    let rootfs: PathBuf = crate::lxc::rootfs_path(root, conf)?;
    if unprivileged {
        idmap::ensure_subids()?;
        root.ensure_traversable(&rootfs)?;
    }
    std::os::unix::fs::lchown(&rootfs, Some(owner.0), Some(owner.1))
        .ctx(|| format!("unable to chown '{}'", rootfs.display()))?;
    {
        let _mps = extract::mount_mps(root, conf, &rootfs, unprivileged)?;
        if ctx.profile.lists_archive_at_create() {
            extract::list_archive(archive)?;
        }
        match extract::extract(archive, &rootfs, unprivileged) {
            Ok(()) => {}
            Err(e) if p.flag("ignore-unpack-errors") => {
                println!("WARN: {}", e.to_string().trim_end());
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(vol) = conf
        .get("rootfs")
        .and_then(|r| PropStr::parse(r, Some("volume")).ok())
        .and_then(|p| p.default)
    {
        let bytes = storage::written::tree_bytes(&rootfs);
        storage::written::record(root, "create", vmid, &vol, bytes);
    }
    if conf.get("ostype").is_none() {
        let os = detect_ostype(&rootfs)?;
        conf.set("ostype", os);
    }
    if conf.get("arch").is_none() {
        conf.set("arch", "amd64");
    }
    if conf.get("hostname").is_none() {
        conf.set("hostname", format!("CT{vmid}"));
    }
    if conf.get("memory").is_none() {
        conf.set("memory", "512");
    }
    if conf.get("swap").is_none() {
        conf.set("swap", "512");
    }
    write_config(root, vmid, conf)
}
