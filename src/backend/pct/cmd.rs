//! Typed builders for `pct` and `pvesh` argv (docs/pct.md).
//!
//! Every command renders to a `Vec<OsString>` of arguments *after* the program name
//! (no shell, no quoting: each value is one argv element). Values are validated on
//! render; property strings (`--netN`, `--mpN`, `--features`, `--rootfs`) are built
//! from typed parts and refuse characters that would change their meaning (`,` `=`).

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use super::vmid::Vmid;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdError {
    #[error("invalid value for {param}: {msg}")]
    Invalid { param: String, msg: String },
}

fn invalid(param: impl Into<String>, msg: impl Into<String>) -> CmdError {
    CmdError::Invalid {
        param: param.into(),
        msg: msg.into(),
    }
}

fn b(v: bool) -> &'static str {
    if v {
        "1"
    } else {
        "0"
    }
}

/// No NUL (argv cannot carry it).
fn plain(param: &str, v: &str) -> Result<(), CmdError> {
    if v.contains('\0') {
        return Err(invalid(param, "contains a NUL byte"));
    }
    Ok(())
}

/// A value inside a property string (`k=v,k=v`): no `,`, no `=`, no control chars, not empty.
fn prop_value(param: &str, v: &str) -> Result<(), CmdError> {
    if v.is_empty() {
        return Err(invalid(param, "empty value"));
    }
    if v.chars().any(|c| c == ',' || c == '=' || c.is_control()) {
        return Err(invalid(
            param,
            format!("{v:?} contains ',', '=' or a control character"),
        ));
    }
    Ok(())
}

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
    fn render(&self, extra: &[(String, String)]) -> Result<String, CmdError> {
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

fn storage_id(param: &str, s: &str) -> Result<(), CmdError> {
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

fn prop_key(param: &str, k: &str) -> Result<(), CmdError> {
    if k.is_empty()
        || !k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(invalid(param, format!("bad property key {k:?}")));
    }
    Ok(())
}

/// `ip=` / `ip6=` of a network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpConfig {
    Dhcp,
    /// `auto` (SLAAC), ip6 only.
    Auto,
    Manual,
    /// An address in CIDR notation (`10.0.0.5/24`).
    Cidr(String),
}

impl IpConfig {
    fn render(&self, param: &str) -> Result<String, CmdError> {
        Ok(match self {
            IpConfig::Dhcp => "dhcp".into(),
            IpConfig::Auto => "auto".into(),
            IpConfig::Manual => "manual".into(),
            IpConfig::Cidr(c) => {
                prop_value(param, c)?;
                if !c.contains('/') {
                    return Err(invalid(param, format!("{c:?} is not in CIDR notation")));
                }
                c.clone()
            }
        })
    }
}

/// `--netN name=eth0[,bridge=..][,ip=..]...`.
#[derive(Debug, Clone, PartialEq)]
pub struct NetSpec {
    pub index: u8,
    pub name: String,
    pub bridge: Option<String>,
    pub ip: Option<IpConfig>,
    pub gw: Option<String>,
    pub ip6: Option<IpConfig>,
    pub gw6: Option<String>,
    pub hwaddr: Option<String>,
    pub mtu: Option<u16>,
    pub tag: Option<u16>,
    pub firewall: Option<bool>,
    pub rate: Option<f64>,
    pub link_down: Option<bool>,
    pub host_managed: Option<bool>,
}

impl NetSpec {
    pub fn new(index: u8, name: &str) -> Self {
        NetSpec {
            index,
            name: name.to_string(),
            bridge: None,
            ip: None,
            gw: None,
            ip6: None,
            gw6: None,
            hwaddr: None,
            mtu: None,
            tag: None,
            firewall: None,
            rate: None,
            link_down: None,
            host_managed: None,
        }
    }

    pub fn option(&self) -> String {
        format!("--net{}", self.index)
    }

    /// The property string, e.g. `name=eth0,bridge=vmbr0,ip=dhcp,type=veth`.
    pub fn render(&self) -> Result<String, CmdError> {
        let p = format!("net{}", self.index);
        if self.name.is_empty()
            || self.name.len() > 15
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(invalid(&p, format!("bad interface name {:?}", self.name)));
        }
        let mut parts = vec![format!("name={}", self.name)];
        if let Some(br) = &self.bridge {
            prop_value(&p, br)?;
            parts.push(format!("bridge={br}"));
        }
        if let Some(ip) = &self.ip {
            if *ip == IpConfig::Auto {
                return Err(invalid(&p, "ip=auto is only valid for ip6"));
            }
            parts.push(format!("ip={}", ip.render(&p)?));
        }
        if let Some(gw) = &self.gw {
            prop_value(&p, gw)?;
            parts.push(format!("gw={gw}"));
        }
        if let Some(ip6) = &self.ip6 {
            parts.push(format!("ip6={}", ip6.render(&p)?));
        }
        if let Some(gw6) = &self.gw6 {
            prop_value(&p, gw6)?;
            parts.push(format!("gw6={gw6}"));
        }
        if let Some(hw) = &self.hwaddr {
            let ok = hw.len() == 17
                && hw.split(':').count() == 6
                && hw
                    .split(':')
                    .all(|o| o.len() == 2 && o.chars().all(|c| c.is_ascii_hexdigit()));
            if !ok {
                return Err(invalid(&p, format!("bad hwaddr {hw:?}")));
            }
            parts.push(format!("hwaddr={hw}"));
        }
        if let Some(m) = self.mtu {
            if m < 64 {
                return Err(invalid(&p, "mtu must be at least 64"));
            }
            parts.push(format!("mtu={m}"));
        }
        if let Some(t) = self.tag {
            if !(1..=4094).contains(&t) {
                return Err(invalid(&p, "VLAN tag must be 1..4094"));
            }
            parts.push(format!("tag={t}"));
        }
        if let Some(f) = self.firewall {
            parts.push(format!("firewall={}", b(f)));
        }
        if let Some(r) = self.rate {
            if !(r.is_finite() && r >= 0.0) {
                return Err(invalid(&p, "rate must be a non-negative number (MB/s)"));
            }
            parts.push(format!("rate={r}"));
        }
        if let Some(l) = self.link_down {
            parts.push(format!("link_down={}", b(l)));
        }
        if let Some(h) = self.host_managed {
            parts.push(format!("host-managed={}", b(h)));
        }
        parts.push("type=veth".into());
        Ok(parts.join(","))
    }
}

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

fn push(argv: &mut Vec<OsString>, k: &str, v: impl Into<OsString>) {
    argv.push(OsString::from(format!("--{k}")));
    argv.push(v.into());
}

impl CtOptions {
    fn render(&self, argv: &mut Vec<OsString>) -> Result<(), CmdError> {
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

fn check_template(t: &str) -> Result<(), CmdError> {
    plain("ostemplate", t)?;
    const EXT: [&str; 5] = [".tar", ".tar.gz", ".tar.xz", ".tar.zst", ".tar.bz2"];
    let has_ext = EXT.iter().any(|e| t.ends_with(e)) || t.ends_with(".tgz");
    let ok = if t.starts_with('/') {
        has_ext
    } else {
        match t.split_once(':') {
            Some((st, rest)) => {
                storage_id("ostemplate", st).is_ok() && rest.starts_with("vztmpl/") && has_ext
            }
            None => false,
        }
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "ostemplate",
            format!(
                "{t:?} is neither STORAGE:vztmpl/NAME.tar[.gz|.xz|.zst|.bz2] nor an absolute path"
            ),
        ))
    }
}

/// Keys `pct set --delete` may name.
fn check_delete_key(k: &str) -> Result<(), CmdError> {
    if matches!(k, "memory" | "rootfs" | "ostype") {
        return Err(invalid(
            "delete",
            format!("unable to delete required option '{k}'"),
        ));
    }
    if k == "unprivileged" {
        return Err(invalid(
            "delete",
            "unable to modify read-only option: 'unprivileged'",
        ));
    }
    let ok = !k.is_empty()
        && k.starts_with(|c: char| c.is_ascii_lowercase())
        && k.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(invalid("delete", format!("bad option name {k:?}")))
    }
}

/// A pct invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum PctCommand {
    Create(Box<CreateArgs>),
    Start {
        vmid: Vmid,
        skiplock: bool,
    },
    /// Immediate stop (`lxc-stop --kill`).
    Stop {
        vmid: Vmid,
        skiplock: bool,
        overrule_shutdown: bool,
    },
    /// Clean shutdown (`lxc.signal.halt`, then wait `timeout` s, then kill if `force_stop`).
    Shutdown {
        vmid: Vmid,
        timeout: Option<u32>,
        force_stop: bool,
    },
    Destroy {
        vmid: Vmid,
        purge: bool,
        force: bool,
    },
    Status {
        vmid: Vmid,
        verbose: bool,
    },
    List,
    Config {
        vmid: Vmid,
        current: bool,
    },
    Set {
        vmid: Vmid,
        options: Box<CtOptions>,
        delete: Vec<String>,
    },
    /// `pct exec VMID [--keep-env 0|1] -- args...`.
    Exec {
        vmid: Vmid,
        keep_env: Option<bool>,
        args: Vec<OsString>,
    },
    Unlock {
        vmid: Vmid,
    },
}

impl PctCommand {
    pub fn subcommand(&self) -> &'static str {
        match self {
            PctCommand::Create(_) => "create",
            PctCommand::Start { .. } => "start",
            PctCommand::Stop { .. } => "stop",
            PctCommand::Shutdown { .. } => "shutdown",
            PctCommand::Destroy { .. } => "destroy",
            PctCommand::Status { .. } => "status",
            PctCommand::List => "list",
            PctCommand::Config { .. } => "config",
            PctCommand::Set { .. } => "set",
            PctCommand::Exec { .. } => "exec",
            PctCommand::Unlock { .. } => "unlock",
        }
    }

    pub fn vmid(&self) -> Option<Vmid> {
        match self {
            PctCommand::Create(c) => Some(c.vmid),
            PctCommand::List => None,
            PctCommand::Start { vmid, .. }
            | PctCommand::Stop { vmid, .. }
            | PctCommand::Shutdown { vmid, .. }
            | PctCommand::Destroy { vmid, .. }
            | PctCommand::Status { vmid, .. }
            | PctCommand::Config { vmid, .. }
            | PctCommand::Set { vmid, .. }
            | PctCommand::Exec { vmid, .. }
            | PctCommand::Unlock { vmid } => Some(*vmid),
        }
    }

    /// Whether pct takes the per-CT config flock (so it can fail with a lock timeout).
    pub fn takes_lock(&self) -> bool {
        matches!(
            self,
            PctCommand::Create(_)
                | PctCommand::Start { .. }
                | PctCommand::Stop { .. }
                | PctCommand::Shutdown { .. }
                | PctCommand::Destroy { .. }
                | PctCommand::Set { .. }
        )
    }

    /// Whether pct runs it as a worker task (progress on stdout, `TASK ERROR`, warnings).
    pub fn is_worker_task(&self) -> bool {
        matches!(
            self,
            PctCommand::Create(_)
                | PctCommand::Start { .. }
                | PctCommand::Stop { .. }
                | PctCommand::Shutdown { .. }
                | PctCommand::Destroy { .. }
        )
    }

    /// Arguments after the program name.
    pub fn argv(&self) -> Result<Vec<OsString>, CmdError> {
        let mut a: Vec<OsString> = vec![self.subcommand().into()];
        if let Some(v) = self.vmid() {
            a.push(v.to_string().into());
        }
        match self {
            PctCommand::Create(c) => {
                check_template(&c.ostemplate)?;
                a.push(c.ostemplate.clone().into());
                if let Some(s) = &c.storage {
                    storage_id("storage", s)?;
                    push(&mut a, "storage", s.as_str());
                }
                if let Some(u) = c.unprivileged {
                    push(&mut a, "unprivileged", b(u));
                }
                if let Some(p) = &c.pool {
                    prop_value("pool", p)?;
                    push(&mut a, "pool", p.as_str());
                }
                if c.force {
                    push(&mut a, "force", "1");
                }
                if c.start {
                    push(&mut a, "start", "1");
                }
                if !c.options.mps.is_empty() && c.options.rootfs.is_none() {
                    return Err(invalid(
                        "rootfs",
                        "mount points configured, but 'rootfs' not set - aborting",
                    ));
                }
                c.options.render(&mut a)?;
            }
            PctCommand::Start { skiplock, .. } => {
                if *skiplock {
                    push(&mut a, "skiplock", "1");
                }
            }
            PctCommand::Stop {
                skiplock,
                overrule_shutdown,
                ..
            } => {
                if *skiplock {
                    push(&mut a, "skiplock", "1");
                }
                if *overrule_shutdown {
                    push(&mut a, "overrule-shutdown", "1");
                }
            }
            PctCommand::Shutdown {
                timeout,
                force_stop,
                ..
            } => {
                if let Some(t) = timeout {
                    push(&mut a, "timeout", t.to_string());
                }
                if *force_stop {
                    push(&mut a, "forceStop", "1");
                }
            }
            PctCommand::Destroy { purge, force, .. } => {
                if *force {
                    push(&mut a, "force", "1");
                }
                if *purge {
                    push(&mut a, "purge", "1");
                }
            }
            PctCommand::Status { verbose, .. } => {
                if *verbose {
                    push(&mut a, "verbose", "1");
                }
            }
            PctCommand::List | PctCommand::Unlock { .. } => {}
            PctCommand::Config { current, .. } => {
                if *current {
                    push(&mut a, "current", "1");
                }
            }
            PctCommand::Set {
                options, delete, ..
            } => {
                let before = a.len();
                options.render(&mut a)?;
                if !delete.is_empty() {
                    for k in delete {
                        check_delete_key(k)?;
                    }
                    push(&mut a, "delete", delete.join(","));
                }
                if a.len() == before {
                    return Err(invalid("set", "no options specified"));
                }
            }
            PctCommand::Exec { keep_env, args, .. } => {
                if args.is_empty() {
                    return Err(invalid("exec", "missing command"));
                }
                if args.iter().any(|x| x.as_encoded_bytes().contains(&0)) {
                    return Err(invalid("exec", "argument contains a NUL byte"));
                }
                if let Some(k) = keep_env {
                    push(&mut a, "keep-env", b(*k));
                }
                a.push("--".into());
                a.extend(args.iter().cloned());
            }
        }
        Ok(a)
    }
}

/// A pvesh invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PveshCommand {
    /// `pvesh get /cluster/nextid [--vmid N]` (with a vmid: is it free?). Reserves nothing.
    NextId { vmid: Option<Vmid> },
}

impl PveshCommand {
    pub fn argv(&self) -> Result<Vec<OsString>, CmdError> {
        match self {
            PveshCommand::NextId { vmid } => {
                let mut a: Vec<OsString> = vec!["get".into(), "/cluster/nextid".into()];
                if let Some(v) = vmid {
                    push(&mut a, "vmid", v.to_string());
                }
                Ok(a)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u32) -> Vmid {
        Vmid::new(n).unwrap()
    }

    fn s(a: Vec<OsString>) -> Vec<String> {
        a.into_iter().map(|x| x.into_string().unwrap()).collect()
    }

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

    #[test]
    fn create_full() {
        let mut c = CreateArgs::new(v(1001), "local:vztmpl/pvelxc-abc.tar.zst");
        c.unprivileged = Some(true);
        let o = &mut c.options;
        o.rootfs = Some(Rootfs::Alloc {
            storage: "local-lvm".into(),
            size_gib: 4,
        });
        o.hostname = Some(Hostname::sanitize("default_web"));
        o.memory_mb = Some(512);
        o.swap_mb = Some(0);
        o.cores = Some(2);
        o.cpulimit = Some(1.5);
        o.cpuunits = Some(1024);
        let mut n = NetSpec::new(0, "eth0");
        n.bridge = Some("vmbr0".into());
        n.ip = Some(IpConfig::Dhcp);
        o.nets.push(n);
        o.features = Some(Features {
            nesting: Some(true),
            keyctl: Some(true),
            mount: vec!["nfs".into(), "cifs".into()],
            ..Default::default()
        });
        o.ostype = Some(OsType::Unmanaged);
        o.arch = Some(Arch::Amd64);
        let mut mp = MountPoint::bind(0, "/run/pvelxc/default/web", "/.pvelxc");
        mp.ro = true;
        o.mps.push(mp);
        o.entrypoint = Some("/.pvelxc/init".into());
        o.env = Some("PVELXC=1".into());
        o.description = Some("namespace: default\nid: web\n".into());
        o.tags = vec![Tag::new("pvelxc").unwrap(), Tag::sanitize("default")];
        let a = s(PctCommand::Create(Box::new(c)).argv().unwrap());
        assert_eq!(
            a,
            [
                "create",
                "1001",
                "local:vztmpl/pvelxc-abc.tar.zst",
                "--unprivileged",
                "1",
                "--rootfs",
                "local-lvm:4",
                "--hostname",
                "default-web",
                "--memory",
                "512",
                "--swap",
                "0",
                "--cores",
                "2",
                "--cpulimit",
                "1.5",
                "--cpuunits",
                "1024",
                "--net0",
                "name=eth0,bridge=vmbr0,ip=dhcp,type=veth",
                "--mp0",
                "/run/pvelxc/default/web,mp=/.pvelxc,ro=1",
                "--features",
                "nesting=1,keyctl=1,mount=nfs;cifs",
                "--ostype",
                "unmanaged",
                "--arch",
                "amd64",
                "--entrypoint",
                "/.pvelxc/init",
                "--env",
                "PVELXC=1",
                "--description",
                "namespace: default\nid: web\n",
                "--tags",
                "pvelxc;default",
            ]
        );
    }

    #[test]
    fn create_validation() {
        let base = || CreateArgs::new(v(101), "local:vztmpl/x.tar");
        let bad = |c: CreateArgs| PctCommand::Create(Box::new(c)).argv().unwrap_err();
        let mut c = base();
        c.ostemplate = "x.tar".into();
        bad(c);
        let mut c = base();
        c.ostemplate = "local:iso/x.iso".into();
        bad(c);
        assert!(
            PctCommand::Create(Box::new(CreateArgs::new(v(101), "/tmp/t.tar.gz")))
                .argv()
                .is_ok()
        );
        let mut c = base();
        c.options.mps.push(MountPoint::bind(0, "/a", "/b"));
        assert!(bad(c).to_string().contains("'rootfs' not set"));
        let mut c = base();
        c.options.memory_mb = Some(8);
        bad(c);
        let mut c = base();
        c.options.cores = Some(0);
        bad(c);
        let mut c = base();
        c.options.env = Some("NOEQUALS".into());
        bad(c);
        let mut c = base();
        c.options.description = Some("nul\0".into());
        bad(c);
        let mut c = base();
        c.options.nets = vec![NetSpec::new(0, "eth0"), NetSpec::new(0, "eth1")];
        bad(c);
        let mut c = base();
        c.options.rootfs = Some(Rootfs::Alloc {
            storage: "Local".into(),
            size_gib: 1,
        });
        bad(c);
    }

    #[test]
    fn net_and_mp_renderers() {
        let mut n = NetSpec::new(1, "eth1");
        n.bridge = Some("vmbr1".into());
        n.ip = Some(IpConfig::Cidr("10.0.0.5/24".into()));
        n.gw = Some("10.0.0.1".into());
        n.ip6 = Some(IpConfig::Auto);
        n.hwaddr = Some("BC:24:11:AA:BB:CC".into());
        n.mtu = Some(1450);
        n.tag = Some(100);
        n.firewall = Some(false);
        n.rate = Some(12.5);
        n.link_down = Some(true);
        n.host_managed = Some(true);
        assert_eq!(n.option(), "--net1");
        assert_eq!(
            n.render().unwrap(),
            "name=eth1,bridge=vmbr1,ip=10.0.0.5/24,gw=10.0.0.1,ip6=auto,hwaddr=BC:24:11:AA:BB:CC,\
             mtu=1450,tag=100,firewall=0,rate=12.5,link_down=1,host-managed=1,type=veth"
        );
        let mut bad = NetSpec::new(0, "eth0");
        bad.bridge = Some("vmbr0,ip=dhcp".into());
        assert!(bad.render().is_err());
        let mut bad = NetSpec::new(0, "eth0");
        bad.ip = Some(IpConfig::Cidr("10.0.0.5".into()));
        assert!(bad.render().is_err());
        assert!(NetSpec::new(0, "averyveryverylongname").render().is_err());
        assert_eq!(
            NetSpec::new(0, "eth0").render().unwrap(),
            "name=eth0,type=veth"
        );

        let mut m = MountPoint::bind(2, "/host/dir", "/x");
        assert_eq!(m.render().unwrap(), "/host/dir,mp=/x");
        m.ro = true;
        m.backup = Some(false);
        m.mountoptions = vec!["noatime".into(), "nosuid".into()];
        assert_eq!(
            m.render().unwrap(),
            "/host/dir,mp=/x,ro=1,backup=0,mountoptions=noatime;nosuid"
        );
        assert_eq!(m.option(), "--mp2");
        assert!(MountPoint::bind(0, "/a,b", "/x").render().is_err());
        assert!(MountPoint::bind(0, "/a", "x").render().is_err());
        assert!(MountPoint::bind(0, "/a", "/x/../y").render().is_err());
        let mut m = MountPoint::bind(0, "/a", "/x");
        m.mountoptions = vec!["exec".into()];
        assert!(m.render().is_err());
        assert!(Features::default().render().is_err());
    }

    #[test]
    fn lifecycle_commands() {
        let cases: Vec<(PctCommand, Vec<&str>)> = vec![
            (
                PctCommand::Start {
                    vmid: v(101),
                    skiplock: false,
                },
                vec!["start", "101"],
            ),
            (
                PctCommand::Stop {
                    vmid: v(101),
                    skiplock: true,
                    overrule_shutdown: true,
                },
                vec!["stop", "101", "--skiplock", "1", "--overrule-shutdown", "1"],
            ),
            (
                PctCommand::Shutdown {
                    vmid: v(101),
                    timeout: Some(10),
                    force_stop: true,
                },
                vec!["shutdown", "101", "--timeout", "10", "--forceStop", "1"],
            ),
            (
                PctCommand::Destroy {
                    vmid: v(101),
                    purge: true,
                    force: true,
                },
                vec!["destroy", "101", "--force", "1", "--purge", "1"],
            ),
            (
                PctCommand::Status {
                    vmid: v(101),
                    verbose: true,
                },
                vec!["status", "101", "--verbose", "1"],
            ),
            (PctCommand::List, vec!["list"]),
            (
                PctCommand::Config {
                    vmid: v(101),
                    current: false,
                },
                vec!["config", "101"],
            ),
            (PctCommand::Unlock { vmid: v(101) }, vec!["unlock", "101"]),
            (
                PctCommand::Exec {
                    vmid: v(101),
                    keep_env: Some(false),
                    args: vec![
                        "/.pvelxc/init".into(),
                        "exec".into(),
                        "/.pvelxc/exec-a b.json".into(),
                    ],
                },
                vec![
                    "exec",
                    "101",
                    "--keep-env",
                    "0",
                    "--",
                    "/.pvelxc/init",
                    "exec",
                    "/.pvelxc/exec-a b.json",
                ],
            ),
        ];
        for (c, want) in cases {
            assert_eq!(s(c.argv().unwrap()), want, "{c:?}");
        }
        assert!(PctCommand::Exec {
            vmid: v(101),
            keep_env: None,
            args: vec![]
        }
        .argv()
        .is_err());
        assert!(PctCommand::Start {
            vmid: v(101),
            skiplock: false
        }
        .takes_lock());
        assert!(!PctCommand::Exec {
            vmid: v(101),
            keep_env: None,
            args: vec![]
        }
        .takes_lock());
        assert!(!PctCommand::List.is_worker_task());
    }

    #[test]
    fn set_command() {
        let mut o = CtOptions {
            memory_mb: Some(1024),
            entrypoint: Some("/.pvelxc/init".into()),
            ..Default::default()
        };
        o.mps
            .push(MountPoint::bind(0, "/run/pvelxc/ns/id", "/.pvelxc"));
        let c = PctCommand::Set {
            vmid: v(150),
            options: Box::new(o),
            delete: vec!["net0".into(), "description".into()],
        };
        assert_eq!(
            s(c.argv().unwrap()),
            [
                "set",
                "150",
                "--memory",
                "1024",
                "--mp0",
                "/run/pvelxc/ns/id,mp=/.pvelxc",
                "--entrypoint",
                "/.pvelxc/init",
                "--delete",
                "net0,description"
            ]
        );
        let empty = PctCommand::Set {
            vmid: v(150),
            options: Box::default(),
            delete: vec![],
        };
        assert!(empty
            .argv()
            .unwrap_err()
            .to_string()
            .contains("no options specified"));
        for k in ["memory", "rootfs", "ostype", "unprivileged", "Bad", "a,b"] {
            let c = PctCommand::Set {
                vmid: v(150),
                options: Box::default(),
                delete: vec![k.into()],
            };
            assert!(c.argv().is_err(), "{k}");
        }
    }

    #[test]
    fn pvesh() {
        assert_eq!(
            s(PveshCommand::NextId { vmid: None }.argv().unwrap()),
            ["get", "/cluster/nextid"]
        );
        assert_eq!(
            s(PveshCommand::NextId { vmid: Some(v(123)) }.argv().unwrap()),
            ["get", "/cluster/nextid", "--vmid", "123"]
        );
    }
}
