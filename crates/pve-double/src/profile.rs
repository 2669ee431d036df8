//! Version profiles: which Proxmox VE release the double imitates.
//!
//! Selected by `PVE_DOUBLE_PROFILE`, else the file `$PVE_DOUBLE_ROOT/profile` (one word),
//! else `pve9.1`. Feature gates derive from the pve-container version, as on a real host.

use std::path::Path;

use crate::error::{die, Result};

/// A supported profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// PVE 8.4 (bookworm, pve-container 5.2.7).
    Pve8,
    /// PVE 9.0 (trixie, pve-container 6.0.14).
    Pve90,
    /// PVE 9.1 (trixie, pve-container 6.0.18).
    Pve91,
}

/// Profile names as accepted in the environment / profile file.
pub const NAMES: &[&str] = &["pve8", "pve9.0", "pve9.1"];

/// pve-container release that introduced entrypoint/env and host-managed networking, and
/// lists every template archive (`tar -tf`) at create to detect OCI images.
const APP_CONTAINERS: (u32, u32, u32) = (6, 0, 15);

impl Profile {
    pub fn parse(s: &str) -> Option<Profile> {
        match s.trim() {
            "pve8" => Some(Profile::Pve8),
            "pve9.0" => Some(Profile::Pve90),
            "pve9.1" => Some(Profile::Pve91),
            _ => None,
        }
    }

    /// From `PVE_DOUBLE_PROFILE`, else `<root>/profile`, else the default (`pve9.1`).
    pub fn load(root: Option<&Path>) -> Result<Profile> {
        let (value, source) = match std::env::var("PVE_DOUBLE_PROFILE") {
            Ok(v) if !v.trim().is_empty() => (v, "PVE_DOUBLE_PROFILE".to_string()),
            _ => {
                let file = root.map(|r| r.join("profile"));
                match file.as_ref().and_then(|f| std::fs::read_to_string(f).ok()) {
                    Some(v) if !v.trim().is_empty() => {
                        (v, file.map(|f| f.display().to_string()).unwrap_or_default())
                    }
                    _ => return Ok(Profile::Pve91),
                }
            }
        };
        Profile::parse(&value).ok_or_else(|| {
            die(format!(
                "pve-double: unknown profile '{}' (from {source}); expected one of: {}",
                value.trim(),
                NAMES.join(", ")
            ))
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Profile::Pve8 => "pve8",
            Profile::Pve90 => "pve9.0",
            Profile::Pve91 => "pve9.1",
        }
    }

    pub fn pve_container(self) -> &'static str {
        match self {
            Profile::Pve8 => "5.2.7",
            Profile::Pve90 => "6.0.14",
            Profile::Pve91 => "6.0.18",
        }
    }

    pub fn pve_manager(self) -> &'static str {
        match self {
            Profile::Pve8 => "8.4.1",
            Profile::Pve90 => "9.0.11",
            Profile::Pve91 => "9.1.2",
        }
    }

    /// Build hash shown by pveversion (placeholder values, not the real release hashes).
    pub fn pve_manager_hash(self) -> &'static str {
        match self {
            Profile::Pve8 => "2a5fa54a8503f96d",
            Profile::Pve90 => "3bf5476b8a4699e2",
            Profile::Pve91 => "b5c5f3a1e07d4c21",
        }
    }

    /// The `proxmox-ve` meta package version.
    pub fn proxmox_ve(self) -> &'static str {
        match self {
            Profile::Pve8 => "8.4.0",
            Profile::Pve90 => "9.0.0",
            Profile::Pve91 => "9.1.0",
        }
    }

    pub fn lxc_pve(self) -> &'static str {
        match self {
            Profile::Pve8 => "6.0.0-1",
            Profile::Pve90 => "6.0.5-1",
            Profile::Pve91 => "6.0.5-3",
        }
    }

    /// Debian release (version, codename).
    pub fn debian(self) -> (&'static str, &'static str) {
        match self {
            Profile::Pve8 => ("12", "bookworm"),
            Profile::Pve90 | Profile::Pve91 => ("13", "trixie"),
        }
    }

    fn container_at_least(self, want: (u32, u32, u32)) -> bool {
        parse_version(self.pve_container()).is_some_and(|v| v >= want)
    }

    /// `entrypoint` and `env` CT options exist (pve-container >= 6.0.15).
    pub fn has_entrypoint_env(self) -> bool {
        self.container_at_least(APP_CONTAINERS)
    }

    /// `host-managed` netN property exists (pve-container >= 6.0.15).
    pub fn has_host_managed(self) -> bool {
        self.container_at_least(APP_CONTAINERS)
    }

    /// `pct create` lists the template archive first (`tar -tf`, OCI detection; >= 6.0.15).
    pub fn lists_archive_at_create(self) -> bool {
        self.container_at_least(APP_CONTAINERS)
    }
}

/// `X.Y.Z` (ignoring a `-N` Debian revision) as a comparable tuple.
pub fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let v = v.split('-').next()?;
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    let t = (it.next()??, it.next()??, it.next().flatten().unwrap_or(0));
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for n in NAMES {
            assert_eq!(Profile::parse(n).map(|p| p.name()), Some(*n));
        }
        assert_eq!(Profile::parse(" pve8\n"), Some(Profile::Pve8));
        assert_eq!(Profile::parse("pve9"), None);
        assert_eq!(Profile::parse("PVE8"), None);
    }

    #[test]
    fn gates_follow_pve_container_version() {
        assert!(!Profile::Pve8.has_entrypoint_env());
        assert!(!Profile::Pve90.has_entrypoint_env());
        assert!(Profile::Pve91.has_entrypoint_env());
        assert!(!Profile::Pve8.has_host_managed());
        assert!(!Profile::Pve90.has_host_managed());
        assert!(Profile::Pve91.has_host_managed());
        assert!(!Profile::Pve90.lists_archive_at_create());
        assert!(Profile::Pve91.lists_archive_at_create());
        assert_eq!(parse_version("6.0.15"), Some((6, 0, 15)));
        assert_eq!(parse_version("6.0.5-3"), Some((6, 0, 5)));
        assert_eq!(parse_version("x"), None);
        assert!(parse_version("6.0.14") < parse_version("6.0.15"));
    }

    #[test]
    fn facts() {
        assert_eq!(Profile::Pve8.pve_container(), "5.2.7");
        assert_eq!(Profile::Pve90.pve_manager(), "9.0.11");
        assert_eq!(Profile::Pve91.lxc_pve(), "6.0.5-3");
        assert_eq!(Profile::Pve8.debian(), ("12", "bookworm"));
    }

    #[test]
    fn load_from_file_and_errors() {
        // the env var is not set by the test runner; the file decides
        if std::env::var_os("PVE_DOUBLE_PROFILE").is_some() {
            return;
        }
        let d = std::env::temp_dir().join(format!("double-profile-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        assert_eq!(Profile::load(Some(&d)).unwrap(), Profile::Pve91);
        std::fs::write(d.join("profile"), "pve9.0\n").unwrap();
        assert_eq!(Profile::load(Some(&d)).unwrap(), Profile::Pve90);
        std::fs::write(d.join("profile"), "pve7\n").unwrap();
        let (msg, code) = Profile::load(Some(&d)).unwrap_err().render();
        assert_eq!(code, 255);
        assert!(msg.contains("unknown profile 'pve7'"), "{msg}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
