//! `check` for the pct backend: what a create would find on this host, without making
//! anything (no cache written, no directory created, no VMID reserved).

use std::path::Path;
use std::time::Duration;

use super::cmd::Rootfs;
use super::ctdir;
use super::pve::{cluster, storage, version, PVE_DIR};
use crate::check::Report;
use crate::config::PctConfig;
use crate::sys::command::{which, Cmd};

pub async fn report(cfg: &PctConfig) -> Report {
    let mut r = Report::default();
    match which(&cfg.pct) {
        Ok(p) => r.fact("pct", p.display().to_string()),
        Err(e) => r.problem(format!("pct: {e}")),
    }
    match ctdir::find_init(&cfg.init_path) {
        Ok(p) => r.fact("init", p.display().to_string()),
        Err(e) => r.problem(e),
    }
    let lxc = Path::new(PVE_DIR).join("lxc");
    if !lxc.is_dir() {
        r.problem(format!(
            "{} does not exist: this is not a Proxmox VE node (pmxcfs not mounted)",
            lxc.display()
        ));
        return r.done();
    }
    pve_version(cfg, &mut r).await;
    match storage::load(Path::new(storage::STORAGE_CFG)) {
        Ok(list) => {
            let names: Vec<String> = list
                .iter()
                .map(|s| {
                    let rootdir = s.content.iter().any(|c| c == "rootdir");
                    format!(
                        "{} ({}{})",
                        s.name,
                        s.kind,
                        if rootdir { ", rootdir" } else { "" }
                    )
                })
                .collect();
            r.fact("storages", names.join(", "));
            match storage::rootfs_for(&list, &cfg.storage, cfg.rootfs_size_gib) {
                Ok(Rootfs::Alloc {
                    storage,
                    size_gib: 0,
                }) => r.fact(
                    "rootfs",
                    format!("{storage}:0 (a directory or subvolume per CT, no size cap)"),
                ),
                Ok(Rootfs::Alloc { storage, size_gib }) => r.fact(
                    "rootfs",
                    format!("{storage}:{size_gib} (a {size_gib} GiB volume per CT: a hard cap)"),
                ),
                Ok(other) => r.fact("rootfs", format!("{other:?}")),
                Err(e) => r.problem(e.to_string()),
            }
        }
        Err(e) => r.problem(e.to_string()),
    }
    state_dir(Path::new(&cfg.state_dir), &mut r);
    vmids(cfg, &mut r);
    r.done()
}

async fn pve_version(cfg: &PctConfig, r: &mut Report) {
    let v = if cfg.pve_container_version.is_empty() {
        let out = Cmd::new([cfg.pveversion.as_str(), "-v"])
            .timeout(Duration::from_secs(30))
            .output()
            .await;
        match out {
            Ok(o) if o.success() => version::parse_pveversion(&o.stdout),
            Ok(o) => {
                r.problem(format!(
                    "`{} -v` exited {}: {}",
                    cfg.pveversion,
                    o.code,
                    o.stderr.trim()
                ));
                return;
            }
            Err(e) => {
                r.problem(format!("{}: {e}", cfg.pveversion));
                return;
            }
        }
    } else {
        version::PkgVersion::parse(&cfg.pve_container_version)
    };
    let Some(v) = v else {
        r.problem("no pve-container version found (`pveversion -v` has no pve-container line)");
        return;
    };
    let f = v.features();
    r.fact("pve-container", v.to_string());
    r.fact(
        "init mechanism",
        if f.entrypoint {
            "--entrypoint (6.0.15+)"
        } else {
            "raw lxc.init.cmd in the CT config (before 6.0.15)"
        },
    );
    if cfg.network == "bridge" {
        if f.host_managed_net {
            r.fact("network", format!("bridge {} (host-managed=1)", cfg.bridge));
        } else if cfg.ip == "dhcp" {
            r.problem(format!(
                "[pct] ip = \"dhcp\" needs pve-container 6.0.15 or later (this host: {v})"
            ));
        } else {
            r.fact(
                "network",
                format!("bridge {} (address set by the init)", cfg.bridge),
            );
        }
    }
}

/// The state directory (or, when it does not exist yet, the mount it would be made on) must
/// allow exec: the CT runs its init from it.
fn state_dir(dir: &Path, r: &mut Report) {
    let Some(existing) = dir.ancestors().find(|a| a.exists()) else {
        r.problem(format!("state_dir {}: no existing ancestor", dir.display()));
        return;
    };
    match nix::sys::statvfs::statvfs(existing) {
        Ok(st) if st.flags().contains(nix::sys::statvfs::FsFlags::ST_NOEXEC) => r.problem(format!(
            "[pct] state_dir {} is on a noexec mount ({}): the CT could not run its init",
            dir.display(),
            existing.display()
        )),
        Ok(_) => r.fact("state_dir", format!("{} (exec allowed)", dir.display())),
        Err(e) => r.problem(format!("statvfs {}: {e}", existing.display())),
    }
}

fn vmids(cfg: &PctConfig, r: &mut Report) {
    let (lo, hi) = match cluster::effective_range(cfg.vmid_min, cfg.vmid_max) {
        Ok(v) => v,
        Err(e) => {
            r.problem(e.to_string());
            return;
        }
    };
    match cluster::guests() {
        Ok(g) => {
            let used = g.keys().filter(|id| (lo..=hi).contains(*id)).count();
            let total = (hi - lo + 1) as usize;
            r.fact(
                "VMID range",
                format!(
                    "{lo}..={hi}: {} free, {used} taken by guests of the cluster",
                    total - used
                ),
            );
            if used >= total {
                r.problem(format!("no free VMID in {lo}..={hi}"));
            }
        }
        Err(e) => r.problem(e.to_string()),
    }
}
