//! The host's pve-container version, and what it allows. Found once with `pveversion -v`
//! (line `pve-container: X.Y.Z`) and cached in the state directory, keyed by the mtime of
//! dpkg's status file (any package upgrade invalidates it) and the identity of /etc/pve. `[pct] pve_container_version`
//! overrides detection.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::sys::command::Cmd;

/// A Debian package version's numeric head: `6.0.15`, `5.2.7` (`6.0.15~bpo1` → 6.0.15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PkgVersion(pub u32, pub u32, pub u32);

impl PkgVersion {
    pub fn parse(s: &str) -> Option<PkgVersion> {
        let head: String = s
            .trim()
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let mut it = head.split('.').filter(|p| !p.is_empty());
        let major = it.next()?.parse().ok()?;
        let minor = it.next().map_or(Some(0), |p| p.parse().ok())?;
        let patch = it.next().map_or(Some(0), |p| p.parse().ok())?;
        Some(PkgVersion(major, minor, patch))
    }

    /// What this pve-container version offers (docs: real-hosts.md).
    pub fn features(self) -> Features {
        let modern = self >= PkgVersion(6, 0, 15);
        Features {
            entrypoint: modern,
            host_managed_net: modern,
        }
    }
}

impl fmt::Display for PkgVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Version-dependent CT options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// `--entrypoint` / `--env` (6.0.15+, PVE 9.1); otherwise a raw `lxc.init.cmd` line.
    pub entrypoint: bool,
    /// `host-managed=1` on netN: PVE configures the address itself (6.0.15+).
    pub host_managed_net: bool,
}

/// `pve-container: 6.0.18` in `pveversion -v` output.
pub fn parse_pveversion(out: &str) -> Option<PkgVersion> {
    out.lines().find_map(|l| {
        let v = l.trim().strip_prefix("pve-container:")?;
        PkgVersion::parse(v)
    })
}

const CACHE_FILE: &str = "pve-container.version";
const DPKG_STATUS: &str = "/var/lib/dpkg/status";

/// Changes when packages change (dpkg's status file) or when /etc/pve is another mount
/// (pmxcfs restarted, or another host shape): then the version is asked again.
fn cache_key() -> String {
    use std::os::unix::fs::MetadataExt;
    let dpkg = std::fs::metadata(DPKG_STATUS)
        .map(|m| format!("{}.{}", m.mtime(), m.mtime_nsec()))
        .unwrap_or_else(|_| "none".into());
    let pve = std::fs::metadata(super::PVE_DIR)
        .map(|m| format!("{:x}.{:x}", m.dev(), m.ino()))
        .unwrap_or_else(|_| "none".into());
    format!("dpkg-{dpkg}/pve-{pve}")
}

fn read_cache(state_dir: &Path, key: &str) -> Option<PkgVersion> {
    let text = super::read_capped(&state_dir.join(CACHE_FILE), 256).ok()??;
    let (k, v) = text.trim().split_once(' ')?;
    (k == key).then(|| PkgVersion::parse(v)).flatten()
}

fn write_cache(state_dir: &Path, key: &str, v: PkgVersion) {
    let tmp = state_dir.join(format!(".{CACHE_FILE}.{}", std::process::id()));
    let res = std::fs::write(&tmp, format!("{key} {v}\n"))
        .and_then(|_| std::fs::rename(&tmp, state_dir.join(CACHE_FILE)));
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        log::debug!("cache pve-container version: {e}");
    }
}

/// The host's pve-container version: the configured override, the cache, else `pveversion -v`.
pub async fn detect(configured: &str, pveversion: &str, state_dir: &Path) -> Result<PkgVersion> {
    if !configured.is_empty() {
        return PkgVersion::parse(configured).ok_or_else(|| {
            Error::invalid(format!(
                "[pct] pve_container_version = {configured:?} is not a version like 6.0.15"
            ))
        });
    }
    let key = cache_key();
    if let Some(v) = read_cache(state_dir, &key) {
        return Ok(v);
    }
    let out = Cmd::new([pveversion, "-v"])
        .timeout(Duration::from_secs(60))
        .output()
        .await
        .map_err(|e| {
            Error::precondition(format!(
                "cannot find the Proxmox VE version (`{pveversion} -v`): {e}; is this a Proxmox \
                 VE host? (set [pct] pve_container_version to override)"
            ))
        })?;
    let v = parse_pveversion(&out.stdout).ok_or_else(|| {
        Error::precondition(format!(
            "`{pveversion} -v` printed no `pve-container:` line (exit {}); set [pct] \
             pve_container_version to override",
            out.code
        ))
    })?;
    write_cache(state_dir, &key, v);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_gates() {
        assert_eq!(PkgVersion::parse("6.0.15"), Some(PkgVersion(6, 0, 15)));
        assert_eq!(PkgVersion::parse("6.0.15~bpo1"), Some(PkgVersion(6, 0, 15)));
        assert_eq!(PkgVersion::parse(" 5.2.7 "), Some(PkgVersion(5, 2, 7)));
        assert_eq!(PkgVersion::parse("6"), Some(PkgVersion(6, 0, 0)));
        assert_eq!(PkgVersion::parse("x"), None);
        assert!(!PkgVersion(5, 2, 7).features().entrypoint);
        assert!(!PkgVersion(6, 0, 14).features().entrypoint);
        assert!(PkgVersion(6, 0, 15).features().entrypoint);
        assert!(PkgVersion(6, 1, 0).features().host_managed_net);
    }

    #[test]
    fn pveversion_output() {
        let out = "proxmox-ve: 8.4.0 (running kernel: 6.8.12-9-pve)\n\
                   pve-manager: 8.4.1 (running version: 8.4.1/2a5fa54a8503f96d)\n\
                   pve-container: 5.2.7\npve-docs: 8.4.0\n";
        assert_eq!(parse_pveversion(out), Some(PkgVersion(5, 2, 7)));
        assert_eq!(parse_pveversion("pve-manager: 9.1.2\n"), None);
    }

    #[test]
    fn cache_round_trip() {
        let d = tempfile::tempdir().unwrap();
        write_cache(d.path(), "k1", PkgVersion(6, 0, 18));
        assert_eq!(read_cache(d.path(), "k1"), Some(PkgVersion(6, 0, 18)));
        assert_eq!(read_cache(d.path(), "k2"), None);
    }
}
