//! Scalar values of pct options: hostname, tags, rootfs, storage ids, ostype, arch, cmode.

use std::fmt;
use std::path::PathBuf;

use super::{invalid, prop_key, prop_value, CmdError};

/// A DNS label usable as a CT hostname (`[a-z0-9]([a-z0-9-]*[a-z0-9])?`, ≤ 63).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hostname(String);

impl Hostname {
    pub const MAX: usize = 63;

    /// Strict: accept only a valid label (case-insensitive, stored lowercase).
    pub fn parse(s: &str) -> Result<Hostname, CmdError> {
        let l = s.to_ascii_lowercase();
        let ok = !l.is_empty()
            && l.len() <= Self::MAX
            && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-');
        if ok {
            Ok(Hostname(l))
        } else {
            Err(invalid(
                "hostname",
                format!("{s:?} is not a DNS label (a-z, 0-9, '-', at most 63)"),
            ))
        }
    }

    /// Lenient: map any container id / pod name to a label: lowercase, runs of other
    /// characters become one `-`, trimmed, at most 63, `ct` if nothing is left.
    /// Long names keep a stable hash suffix so different long ids stay distinct.
    pub fn sanitize(s: &str) -> Hostname {
        let mut out = String::with_capacity(s.len());
        for c in s.chars() {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() {
                out.push(c);
            } else if !out.ends_with('-') {
                out.push('-');
            }
        }
        let mut t = out.trim_matches('-').to_string();
        if t.len() > Self::MAX {
            // FNV-1a of the original: deterministic across runs and hosts.
            let mut h: u64 = 0xcbf29ce484222325;
            for byte in s.bytes() {
                h ^= u64::from(byte);
                h = h.wrapping_mul(0x100000001b3);
            }
            let suffix = format!("-{:08x}", h as u32);
            t.truncate(Self::MAX - suffix.len());
            let t2 = t.trim_end_matches('-').to_string();
            t = t2 + &suffix;
        }
        if t.is_empty() {
            t = "ct".into();
        }
        Hostname(t)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Proxmox tag: `[a-z0-9_][a-z0-9_\-+.]*` (case-insensitive; pve-tag).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tag(String);

impl Tag {
    pub fn new(s: &str) -> Result<Tag, CmdError> {
        let mut it = s.chars();
        let ok = match it.next() {
            Some(c) if c.is_ascii_alphanumeric() || c == '_' => {
                it.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '.'))
            }
            _ => false,
        };
        if ok {
            Ok(Tag(s.to_string()))
        } else {
            Err(invalid("tags", format!("{s:?} is not a valid tag")))
        }
    }

    /// Map free text (a namespace, a pod name) to a tag: lowercase, invalid
    /// characters become `_`, a leading `-+.` gets a `_` prefix, empty → `_`.
    pub fn sanitize(s: &str) -> Tag {
        let mut t: String = s
            .chars()
            .map(|c| {
                let c = c.to_ascii_lowercase();
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if !t.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            t.insert(0, '_');
        }
        Tag(t)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `--rootfs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rootfs {
    /// `STORAGE:SIZE_GiB` (a new volume; `STORAGE:0` on dir storage = subvol dir).
    Alloc { storage: String, size_gib: u32 },
    /// An existing volume id (`local-lvm:vm-101-disk-0`).
    Volume(String),
    /// A host directory (root only).
    HostPath(PathBuf),
}

impl Rootfs {
    pub(super) fn render(&self, extra: &[(String, String)]) -> Result<String, CmdError> {
        let mut s = match self {
            Rootfs::Alloc { storage, size_gib } => {
                storage_id("rootfs", storage)?;
                format!("{storage}:{size_gib}")
            }
            Rootfs::Volume(v) => {
                prop_value("rootfs", v)?;
                v.clone()
            }
            Rootfs::HostPath(p) => {
                let s = p.to_string_lossy().into_owned();
                if !s.starts_with('/') {
                    return Err(invalid("rootfs", "host path must be absolute"));
                }
                prop_value("rootfs", &s)?;
                s
            }
        };
        for (k, v) in extra {
            prop_key("rootfs", k)?;
            prop_value("rootfs", v)?;
            s.push_str(&format!(",{k}={v}"));
        }
        Ok(s)
    }
}

pub(super) fn storage_id(param: &str, s: &str) -> Result<(), CmdError> {
    // pve-storage-id: [a-z][a-z0-9\-\_\.]*[a-z0-9]
    let ok = s.len() >= 2
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(param, format!("{s:?} is not a storage id")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OsType {
    Debian,
    Devuan,
    Ubuntu,
    Centos,
    Fedora,
    Opensuse,
    Archlinux,
    Alpine,
    Gentoo,
    Nixos,
    Unmanaged,
}

impl OsType {
    pub fn as_str(self) -> &'static str {
        match self {
            OsType::Debian => "debian",
            OsType::Devuan => "devuan",
            OsType::Ubuntu => "ubuntu",
            OsType::Centos => "centos",
            OsType::Fedora => "fedora",
            OsType::Opensuse => "opensuse",
            OsType::Archlinux => "archlinux",
            OsType::Alpine => "alpine",
            OsType::Gentoo => "gentoo",
            OsType::Nixos => "nixos",
            OsType::Unmanaged => "unmanaged",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Amd64,
    I386,
    Arm64,
    Armhf,
    Riscv32,
    Riscv64,
}

impl Arch {
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::I386 => "i386",
            Arch::Arm64 => "arm64",
            Arch::Armhf => "armhf",
            Arch::Riscv32 => "riscv32",
            Arch::Riscv64 => "riscv64",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmode {
    Tty,
    Console,
    Shell,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_rules() {
        assert_eq!(Hostname::parse("Web-1").unwrap().as_str(), "web-1");
        for bad in ["", "-a", "a-", "a_b", "a.b", &"a".repeat(64)] {
            assert!(Hostname::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Hostname::sanitize("My_Pod.Name").as_str(), "my-pod-name");
        assert_eq!(Hostname::sanitize("--x--").as_str(), "x");
        assert_eq!(Hostname::sanitize("___").as_str(), "ct");
        let long = "a".repeat(64) + "b";
        let h = Hostname::sanitize(&long);
        assert!(h.as_str().len() <= 63);
        assert!(Hostname::parse(h.as_str()).is_ok());
        let h2 = Hostname::sanitize(&("a".repeat(64) + "c"));
        assert_ne!(h, h2);
        // a 64-char sha256-like container id
        let id = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa99887766554433221100";
        let h = Hostname::sanitize(id);
        assert!(h.as_str().len() <= 63 && Hostname::parse(h.as_str()).is_ok());
        assert_eq!(h, Hostname::sanitize(id));
    }

    #[test]
    fn tag_rules() {
        for ok in ["k8s", "pvelxc", "ns_default", "a.b-c+d", "_x", "0"] {
            assert!(Tag::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", ".x", "a b", "a;b", "a,b", "ä"] {
            assert!(Tag::new(bad).is_err(), "{bad}");
        }
        assert_eq!(Tag::sanitize("k8s.io/Pod Name").as_str(), "k8s.io_pod_name");
        assert_eq!(Tag::sanitize("-x").as_str(), "_-x");
        assert_eq!(Tag::sanitize("").as_str(), "_");
        assert!(Tag::new(Tag::sanitize("Ω weird").as_str()).is_ok());
    }
}
