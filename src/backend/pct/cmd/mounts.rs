//! `--mpN` mount points and `--features`.

use super::{b, invalid, prop_value, CmdError};

/// `--mpN VOLUME,mp=/path[,ro=1]...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPoint {
    pub index: u8,
    /// A host directory (bind mount), an existing volume, or `STORAGE:SIZE_GiB`.
    pub volume: String,
    /// Absolute path inside the CT.
    pub mp: String,
    pub ro: bool,
    pub backup: Option<bool>,
    pub size: Option<String>,
    pub acl: Option<bool>,
    pub quota: Option<bool>,
    pub replicate: Option<bool>,
    pub shared: Option<bool>,
    /// `mountoptions=noatime;nosuid` (allowed: noatime, lazytime, nodev, noexec, nosuid, discard).
    pub mountoptions: Vec<String>,
}

impl MountPoint {
    /// A bind mount of a host directory.
    pub fn bind(index: u8, host_dir: impl Into<String>, mp: impl Into<String>) -> Self {
        MountPoint {
            index,
            volume: host_dir.into(),
            mp: mp.into(),
            ro: false,
            backup: None,
            size: None,
            acl: None,
            quota: None,
            replicate: None,
            shared: None,
            mountoptions: Vec::new(),
        }
    }

    pub fn option(&self) -> String {
        format!("--mp{}", self.index)
    }

    /// e.g. `/run/pvelxc/default/web,mp=/.pvelxc,ro=1`.
    pub fn render(&self) -> Result<String, CmdError> {
        let p = format!("mp{}", self.index);
        prop_value(&p, &self.volume)?;
        prop_value(&p, &self.mp)?;
        if !self.mp.starts_with('/') {
            return Err(invalid(&p, "mp must be an absolute path"));
        }
        if self.mp.split('/').any(|c| c == "..") {
            return Err(invalid(&p, "mp must not contain '..'"));
        }
        let mut s = format!("{},mp={}", self.volume, self.mp);
        if self.ro {
            s.push_str(",ro=1");
        }
        for (k, v) in [
            ("backup", self.backup),
            ("acl", self.acl),
            ("quota", self.quota),
            ("replicate", self.replicate),
            ("shared", self.shared),
        ] {
            if let Some(v) = v {
                s.push_str(&format!(",{k}={}", b(v)));
            }
        }
        if let Some(sz) = &self.size {
            prop_value(&p, sz)?;
            s.push_str(&format!(",size={sz}"));
        }
        if !self.mountoptions.is_empty() {
            const OK: [&str; 6] = [
                "noatime", "lazytime", "nodev", "noexec", "nosuid", "discard",
            ];
            for o in &self.mountoptions {
                if !OK.contains(&o.as_str()) {
                    return Err(invalid(&p, format!("mount option {o:?} not allowed")));
                }
            }
            s.push_str(&format!(",mountoptions={}", self.mountoptions.join(";")));
        }
        Ok(s)
    }
}

/// `--features`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Features {
    pub nesting: Option<bool>,
    pub keyctl: Option<bool>,
    pub fuse: Option<bool>,
    pub mknod: Option<bool>,
    pub force_rw_sys: Option<bool>,
    /// Allowed filesystem types for mount (`mount=nfs;cifs`).
    pub mount: Vec<String>,
}

impl Features {
    pub fn render(&self) -> Result<String, CmdError> {
        let mut parts = Vec::new();
        for (k, v) in [
            ("nesting", self.nesting),
            ("keyctl", self.keyctl),
            ("fuse", self.fuse),
            ("mknod", self.mknod),
            ("force_rw_sys", self.force_rw_sys),
        ] {
            if let Some(v) = v {
                parts.push(format!("{k}={}", b(v)));
            }
        }
        if !self.mount.is_empty() {
            for fs in &self.mount {
                if fs.is_empty() || !fs.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(invalid("features", format!("bad fs type {fs:?}")));
                }
            }
            parts.push(format!("mount={}", self.mount.join(";")));
        }
        if parts.is_empty() {
            return Err(invalid("features", "no feature set"));
        }
        Ok(parts.join(","))
    }
}
