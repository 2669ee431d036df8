//! `pveversion [-v|--verbose]` for the selected profile.
//!
//! The pve-manager, proxmox-ve, pve-container and lxc-pve versions are the profile's; the other
//! package versions are plausible values for the release, not verified; build hashes are
//! placeholders. The kernel is the machine's (`uname -r`).

use crate::error::{PveError, Result};
use crate::profile::Profile;

/// `uname -r`.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Package lines of `pveversion -v` after the first two (sorted by name).
fn packages(p: Profile) -> Vec<(&'static str, &'static str)> {
    let (common, cluster, storage, guest, qemu, lxcfs, zfs, corosync, lvm) = match p {
        Profile::Pve8 => (
            "8.3.1",
            "8.1.0",
            "8.3.6",
            "5.2.2",
            "8.3.12",
            "6.0.0-pve2",
            "2.2.7-pve2",
            "3.1.9-pve1",
            "2.03.16-2",
        ),
        Profile::Pve90 => (
            "9.0.10",
            "9.0.6",
            "9.0.13",
            "6.0.2",
            "9.0.22",
            "6.0.4-pve1",
            "2.3.4-pve1",
            "3.1.9-pve2",
            "2.03.31-2",
        ),
        Profile::Pve91 => (
            "9.0.15",
            "9.0.7",
            "9.1.0",
            "6.0.2",
            "9.1.1",
            "6.0.4-pve1",
            "2.3.4-pve1",
            "3.1.9-pve2",
            "2.03.31-2",
        ),
    };
    let mut v = vec![
        ("corosync", corosync),
        ("libpve-cluster-perl", cluster),
        ("libpve-common-perl", common),
        ("libpve-guest-common-perl", guest),
        ("libpve-storage-perl", storage),
        ("lvm2", lvm),
        ("lxc-pve", p.lxc_pve()),
        ("lxcfs", lxcfs),
        ("pve-cluster", cluster),
        ("pve-container", p.pve_container()),
        ("qemu-server", qemu),
        ("zfsutils-linux", zfs),
    ];
    v.sort();
    v
}

/// The output for `args` (without the program name).
pub fn run(p: Profile, kernel: &str, args: &[String]) -> Result<String> {
    let verbose = match args {
        [] => false,
        [a] if matches!(a.as_str(), "-v" | "--verbose" | "-verbose") => true,
        _ => {
            let mut msg = String::new();
            for a in args {
                if a.starts_with('-') && !matches!(a.as_str(), "-v" | "--verbose" | "-verbose") {
                    msg.push_str(&format!("Unknown option: {}\n", a.trim_start_matches('-')));
                }
            }
            msg.push_str("USAGE: pveversion [--verbose]");
            return Err(PveError::Die(msg));
        }
    };
    let (mgr, hash) = (p.pve_manager(), p.pve_manager_hash());
    if !verbose {
        return Ok(format!(
            "pve-manager/{mgr}/{hash} (running kernel: {kernel})\n"
        ));
    }
    let mut out = format!(
        "proxmox-ve: {} (running kernel: {kernel})\npve-manager: {mgr} (running version: {mgr}/{hash})\n",
        p.proxmox_ve()
    );
    for (name, ver) in packages(p) {
        out.push_str(&format!("{name}: {ver}\n"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn short_form() {
        assert_eq!(
            run(Profile::Pve8, "6.8.12-9-pve", &[]).unwrap(),
            "pve-manager/8.4.1/2a5fa54a8503f96d (running kernel: 6.8.12-9-pve)\n"
        );
        assert!(run(Profile::Pve91, "k", &[])
            .unwrap()
            .starts_with("pve-manager/9.1.2/"));
    }

    #[test]
    fn verbose_form_per_profile() {
        for (p, mgr, ct, lxc) in [
            (Profile::Pve8, "8.4.1", "5.2.7", "6.0.0-1"),
            (Profile::Pve90, "9.0.11", "6.0.14", "6.0.5-1"),
            (Profile::Pve91, "9.1.2", "6.0.18", "6.0.5-3"),
        ] {
            let o = run(p, "6.1.0-k", &v(&["-v"])).unwrap();
            let lines: Vec<&str> = o.lines().collect();
            assert!(lines[0].starts_with("proxmox-ve: "), "{o}");
            assert!(lines[0].ends_with(" (running kernel: 6.1.0-k)"), "{o}");
            assert!(
                lines[1].starts_with(&format!("pve-manager: {mgr} (running version: {mgr}/")),
                "{o}"
            );
            assert!(
                lines.contains(&format!("pve-container: {ct}").as_str()),
                "{o}"
            );
            assert!(lines.contains(&format!("lxc-pve: {lxc}").as_str()), "{o}");
            let names: Vec<&str> = lines[2..]
                .iter()
                .map(|l| l.split(':').next().unwrap())
                .collect();
            let mut sorted = names.clone();
            sorted.sort();
            assert_eq!(names, sorted);
            assert_eq!(o, run(p, "6.1.0-k", &v(&["--verbose"])).unwrap());
        }
    }

    #[test]
    fn bad_option() {
        let (m, c) = run(Profile::Pve91, "k", &v(&["--bogus"]))
            .unwrap_err()
            .render();
        assert_eq!(c, 255);
        assert_eq!(m, "Unknown option: bogus\nUSAGE: pveversion [--verbose]\n");
    }
}
