//! Options shared by `pct create` and `pct set`, and the `pct create` arguments.

use std::ffi::OsString;

use super::super::vmid::Vmid;
use super::{b, invalid, plain, push, CmdError};
use super::{Arch, Cmode, Features, Hostname, MountPoint, NetSpec, OsType, Rootfs, Tag};

/// Options shared by `pct create` and `pct set` (all optional).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CtOptions {
    pub hostname: Option<Hostname>,
    /// MiB, ≥ 16.
    pub memory_mb: Option<u64>,
    /// MiB.
    pub swap_mb: Option<u64>,
    /// 1..=8192.
    pub cores: Option<u32>,
    /// 0..=8192 (0 = unlimited); fractional allowed.
    pub cpulimit: Option<f64>,
    /// 0..=500000 (cgroup v1 default 1024, v2 100).
    pub cpuunits: Option<u32>,
    pub nets: Vec<NetSpec>,
    pub mps: Vec<MountPoint>,
    pub rootfs: Option<Rootfs>,
    /// Extra rootfs properties (`size`, `mountoptions`, ...).
    pub rootfs_extra: Vec<(String, String)>,
    pub features: Option<Features>,
    pub ostype: Option<OsType>,
    pub arch: Option<Arch>,
    /// One command line (`lxc.init.cmd`; LXC splits on spaces without quote handling:
    /// keep arguments out of it).
    pub entrypoint: Option<String>,
    /// One `KEY=VALUE` (pct stores env NUL-separated; the CLI can carry only one).
    pub env: Option<String>,
    /// May contain newlines.
    pub description: Option<String>,
    pub tags: Vec<Tag>,
    pub onboot: Option<bool>,
    pub protection: Option<bool>,
    pub cmode: Option<Cmode>,
    pub console: Option<bool>,
    pub tty: Option<u8>,
    pub timezone: Option<String>,
    pub nameserver: Option<String>,
    pub searchdomain: Option<String>,
    pub hookscript: Option<String>,
}
impl CtOptions {
    pub(super) fn render(&self, argv: &mut Vec<OsString>) -> Result<(), CmdError> {
        if let Some(r) = &self.rootfs {
            push(argv, "rootfs", r.render(&self.rootfs_extra)?);
        } else if !self.rootfs_extra.is_empty() {
            return Err(invalid("rootfs", "rootfs properties without a rootfs"));
        }
        if let Some(h) = &self.hostname {
            push(argv, "hostname", h.as_str());
        }
        if let Some(m) = self.memory_mb {
            if m < 16 {
                return Err(invalid("memory", "value must have a minimum value of 16"));
            }
            push(argv, "memory", m.to_string());
        }
        if let Some(s) = self.swap_mb {
            push(argv, "swap", s.to_string());
        }
        if let Some(c) = self.cores {
            if !(1..=8192).contains(&c) {
                return Err(invalid("cores", "must be 1..8192"));
            }
            push(argv, "cores", c.to_string());
        }
        if let Some(c) = self.cpulimit {
            if !(c.is_finite() && (0.0..=8192.0).contains(&c)) {
                return Err(invalid("cpulimit", "must be 0..8192"));
            }
            push(argv, "cpulimit", format_num(c));
        }
        if let Some(u) = self.cpuunits {
            if u > 500_000 {
                return Err(invalid("cpuunits", "must be 0..500000"));
            }
            push(argv, "cpuunits", u.to_string());
        }
        let mut seen = std::collections::BTreeSet::new();
        for n in &self.nets {
            if !seen.insert(n.index) {
                return Err(invalid(format!("net{}", n.index), "given twice"));
            }
            push(argv, &format!("net{}", n.index), n.render()?);
        }
        let mut seen = std::collections::BTreeSet::new();
        for m in &self.mps {
            if !seen.insert(m.index) {
                return Err(invalid(format!("mp{}", m.index), "given twice"));
            }
            push(argv, &format!("mp{}", m.index), m.render()?);
        }
        if let Some(f) = &self.features {
            push(argv, "features", f.render()?);
        }
        if let Some(o) = self.ostype {
            push(argv, "ostype", o.as_str());
        }
        if let Some(a) = self.arch {
            push(argv, "arch", a.as_str());
        }
        if let Some(e) = &self.entrypoint {
            plain("entrypoint", e)?;
            if e.trim().is_empty() || e.contains('\n') {
                return Err(invalid("entrypoint", "empty or multi-line"));
            }
            push(argv, "entrypoint", e.as_str());
        }
        if let Some(e) = &self.env {
            plain("env", e)?;
            match e.split_once('=') {
                Some((k, _)) if !k.is_empty() && !k.contains(char::is_whitespace) => {}
                _ => return Err(invalid("env", format!("{e:?} is not KEY=VALUE"))),
            }
            push(argv, "env", e.as_str());
        }
        if let Some(d) = &self.description {
            plain("description", d)?;
            push(argv, "description", d.as_str());
        }
        if !self.tags.is_empty() {
            let t: Vec<&str> = self.tags.iter().map(Tag::as_str).collect();
            push(argv, "tags", t.join(";"));
        }
        if let Some(v) = self.onboot {
            push(argv, "onboot", b(v));
        }
        if let Some(v) = self.protection {
            push(argv, "protection", b(v));
        }
        if let Some(c) = self.cmode {
            push(
                argv,
                "cmode",
                match c {
                    Cmode::Tty => "tty",
                    Cmode::Console => "console",
                    Cmode::Shell => "shell",
                },
            );
        }
        if let Some(v) = self.console {
            push(argv, "console", b(v));
        }
        if let Some(t) = self.tty {
            if t > 6 {
                return Err(invalid("tty", "must be 0..6"));
            }
            push(argv, "tty", t.to_string());
        }
        for (k, v) in [
            ("timezone", &self.timezone),
            ("nameserver", &self.nameserver),
            ("searchdomain", &self.searchdomain),
            ("hookscript", &self.hookscript),
        ] {
            if let Some(v) = v {
                plain(k, v)?;
                if v.is_empty() || v.contains(char::is_control) {
                    return Err(invalid(k, "empty or contains control characters"));
                }
                push(argv, k, v.as_str());
            }
        }
        Ok(())
    }
}

fn format_num(f: f64) -> String {
    if f.fract() == 0.0 {
        format!("{}", f as u64)
    } else {
        format!("{f}")
    }
}

/// `pct create` arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateArgs {
    pub vmid: Vmid,
    /// `STORAGE:vztmpl/NAME.tar[.gz|.xz|.zst|.bz2]` or an absolute path.
    pub ostemplate: String,
    /// Default storage for the rootfs when `--rootfs` is a bare size.
    pub storage: Option<String>,
    /// Default 1 on create; read-only afterwards.
    pub unprivileged: Option<bool>,
    pub pool: Option<String>,
    /// Overwrite an existing CT (dangerous; never used by the shim).
    pub force: bool,
    /// `--start 1` failures may not propagate: prefer a separate `pct start`.
    pub start: bool,
    pub options: CtOptions,
}

impl CreateArgs {
    pub fn new(vmid: Vmid, ostemplate: impl Into<String>) -> Self {
        CreateArgs {
            vmid,
            ostemplate: ostemplate.into(),
            storage: None,
            unprivileged: None,
            pool: None,
            force: false,
            start: false,
            options: CtOptions::default(),
        }
    }
}
