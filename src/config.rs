//! The shim's TOML configuration: where it is found, what it holds, and how it is checked.
//! `config/config.toml` in the repository documents every key.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const ENV_CONFIG: &str = "PVELXC_CONFIG";
pub const DEFAULT_CONFIG_PATH: &str = "/etc/pvelxc/config.toml";

/// A backend name as users write it (annotation `io.pvelxc.backend`, config `backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Crun,
    Runc,
    Pct,
    Vm,
}

impl BackendKind {
    pub const ALL: [BackendKind; 4] = [Self::Crun, Self::Runc, Self::Pct, Self::Vm];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Crun => "crun",
            Self::Runc => "runc",
            Self::Pct => "pct",
            Self::Vm => "vm",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown backend {s:?}: expected one of crun, runc, pct, vm"
                ))
            })
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do when the chosen backend cannot run on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unavailable {
    /// Fail the task with an error naming what is missing.
    #[default]
    Fail,
    /// Run the container with crun instead, with a logged warning.
    Fallback,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub backend: BackendKind,
    pub allow_annotation_override: bool,
    pub on_unavailable: Unavailable,
    pub rules: Vec<Rule>,
    pub crun: OciRuntimeConfig,
    pub runc: OciRuntimeConfig,
    pub pct: PctConfig,
    pub vm: VmConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            backend: BackendKind::Crun,
            allow_annotation_override: true,
            on_unavailable: Unavailable::Fail,
            rules: Vec::new(),
            crun: OciRuntimeConfig::named("crun"),
            runc: OciRuntimeConfig::named("runc"),
            pct: PctConfig::default(),
            vm: VmConfig::default(),
        }
    }
}

/// A routing rule: every pattern given must match (glob syntax, `*` matches everything).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub container: Option<String>,
    #[serde(default)]
    pub image: Option<String>,
    pub backend: BackendKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OciRuntimeConfig {
    /// Binary name (looked up on PATH) or absolute path.
    pub binary: String,
    /// State directory passed as `--root`; empty = per-namespace default under /run/pvelxc.
    pub root: String,
}

impl OciRuntimeConfig {
    fn named(binary: &str) -> Self {
        OciRuntimeConfig {
            binary: binary.into(),
            root: String::new(),
        }
    }
}

impl Default for OciRuntimeConfig {
    fn default() -> Self {
        Self::named("crun")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PctConfig {
    pub pct: String,
    pub pvesh: String,
    pub storage: String,
    pub rootfs_size_gib: u32,
    pub template_storage: String,
    pub vmid_min: u32,
    pub vmid_max: u32,
    pub unprivileged: bool,
    /// "none", or "bridge" (then `bridge` and `ip` apply).
    pub network: String,
    pub bridge: String,
    /// "dhcp" or a CIDR address like 10.0.0.5/24.
    pub ip: String,
    pub gateway: String,
    pub timeout_secs: u64,
    /// Path of the static `pvelxc-init`; empty = next to the shim binary.
    pub init_path: String,
    /// Host directory for per-container state shared into the CT (must allow exec).
    pub state_dir: String,
    /// `pveversion`, asked once for the pve-container version (cached in `state_dir`).
    pub pveversion: String,
    /// Override the detected pve-container version (e.g. "6.0.15"); empty = detect.
    pub pve_container_version: String,
    /// Refuse containers whose spec asks for settings a CT cannot honour (seccomp, sysctl...)
    /// instead of logging a warning per ignored setting.
    pub strict: bool,
    /// MiB a Kubernetes pod's CT gets beyond the sum of its containers' memory limits (the
    /// RuntimeClass overhead, which containerd does not pass to a shim).
    pub pod_overhead_mib: u64,
    /// Host directory where packed rootfs templates are cached; empty = the `template_storage`
    /// dir storage's `template/cache` (from /etc/pve/storage.cfg), else /var/lib/pvelxc/templates.
    pub template_dir: String,
    /// Upper bound in seconds for packing one template (tar is then killed: TERM, KILL).
    pub template_timeout_secs: u64,
    /// Cap in GiB on the shim's templates in `template_dir`; least recently used unleased
    /// templates are removed after each pack. 0 = no cap.
    pub template_max_gib: u64,
}

impl Default for PctConfig {
    fn default() -> Self {
        PctConfig {
            pct: "pct".into(),
            pvesh: "pvesh".into(),
            storage: "local-lvm".into(),
            rootfs_size_gib: 0,
            template_storage: "local".into(),
            vmid_min: 100_000,
            vmid_max: 199_999,
            unprivileged: true,
            network: "none".into(),
            bridge: "vmbr0".into(),
            ip: "dhcp".into(),
            gateway: String::new(),
            timeout_secs: 120,
            init_path: String::new(),
            state_dir: "/var/lib/pvelxc/ct".into(),
            pveversion: "pveversion".into(),
            pve_container_version: String::new(),
            strict: false,
            pod_overhead_mib: 64,
            template_dir: String::new(),
            template_timeout_secs: 600,
            template_max_gib: 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VmConfig {
    pub qemu: String,
    pub kernel: String,
    pub initramfs: String,
    pub memory_mib: u32,
    pub vcpus: u32,
    /// "auto" (KVM when it works, else TCG), "kvm" or "tcg".
    pub accel: String,
    /// "9p" or "virtiofs".
    pub share: String,
    pub boot_timeout_secs: u64,
    /// Static `pvelxc-agent` used to build a missing initramfs; empty = next to the shim binary.
    pub agent: String,
    /// Kernel modules for the initramfs; empty = `modules` next to the kernel.
    pub modules: String,
    /// Parent of the per-container VM state dirs (`<state_dir>/<namespace>/<id>`).
    pub state_dir: String,
    /// RAM added to the spec's memory limit for the guest kernel and agent.
    pub memory_overhead_mib: u32,
    /// 9p security model of the rootfs and read-write bind mounts: "mapped-xattr" or
    /// "passthrough" (guest root's chown/chmod/mknod reach the host: trusted guests only).
    pub share_security: String,
    /// User QEMU drops to after setup: a name from /etc/passwd, "uid:gid", or "root" (no drop).
    pub qemu_user: String,
    /// QEMU's seccomp sandbox (`-sandbox on,...`).
    pub sandbox: bool,
    /// MiB the host cgroup allows QEMU beyond the guest RAM (TCG code cache, QEMU heap, kernel
    /// image pages).
    pub qemu_overhead_mib: u32,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            qemu: "qemu-system-x86_64".into(),
            kernel: "/var/cache/pvelxc/vm/vmlinux".into(),
            initramfs: "/var/cache/pvelxc/vm/initramfs.cpio.gz".into(),
            memory_mib: 256,
            vcpus: 1,
            accel: "auto".into(),
            share: "9p".into(),
            boot_timeout_secs: 90,
            agent: String::new(),
            modules: String::new(),
            state_dir: "/run/pvelxc/vm".into(),
            memory_overhead_mib: 64,
            share_security: "mapped-xattr".into(),
            qemu_user: "pvelxc-qemu".into(),
            sandbox: true,
            qemu_overhead_mib: 192,
        }
    }
}

/// A loaded config and the file it came from (None = built-in defaults).
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub config: Config,
    pub path: Option<PathBuf>,
}

impl Config {
    /// Parse and check a config text; `origin` names the file in error messages.
    pub fn parse(text: &str, origin: &Path) -> Result<Config> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            Error::invalid(format!(
                "invalid config {}: {}",
                origin.display(),
                e.to_string().trim_end()
            ))
        })?;
        cfg.validate()
            .map_err(|m| Error::invalid(format!("invalid config {}: {m}", origin.display())))?;
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        for (i, r) in self.rules.iter().enumerate() {
            for (key, pat) in [
                ("namespace", &r.namespace),
                ("container", &r.container),
                ("image", &r.image),
            ] {
                if let Some(p) = pat {
                    glob::Pattern::new(p)
                        .map_err(|e| format!("rules[{i}].{key}: bad pattern {p:?}: {e}"))?;
                }
            }
        }
        let p = &self.pct;
        if p.vmid_min < 100 || p.vmid_max > 999_999_999 || p.vmid_min > p.vmid_max {
            return Err(format!(
                "pct.vmid_min/vmid_max: range [{}, {}] must lie within [100, 999999999]",
                p.vmid_min, p.vmid_max
            ));
        }
        if !matches!(p.network.as_str(), "none" | "bridge") {
            return Err(format!(
                "pct.network: {:?} must be \"none\" or \"bridge\"",
                p.network
            ));
        }
        if p.template_timeout_secs == 0 {
            return Err("pct.template_timeout_secs: must be at least 1".into());
        }
        if !p.pve_container_version.is_empty()
            && crate::backend::pct::pve::version::PkgVersion::parse(&p.pve_container_version)
                .is_none()
        {
            return Err(format!(
                "pct.pve_container_version: {:?} is not a version like 6.0.15",
                p.pve_container_version
            ));
        }
        if !matches!(self.vm.accel.as_str(), "auto" | "kvm" | "tcg") {
            return Err(format!(
                "vm.accel: {:?} must be auto, kvm or tcg",
                self.vm.accel
            ));
        }
        if !matches!(self.vm.share.as_str(), "9p" | "virtiofs") {
            return Err(format!(
                "vm.share: {:?} must be 9p or virtiofs",
                self.vm.share
            ));
        }
        if !matches!(
            self.vm.share_security.as_str(),
            "mapped-xattr" | "passthrough"
        ) {
            return Err(format!(
                "vm.share_security: {:?} must be \"mapped-xattr\" or \"passthrough\"",
                self.vm.share_security
            ));
        }
        if self.vm.qemu_user.is_empty() {
            return Err(
                "vm.qemu_user: must not be empty (a user name, \"uid:gid\", or \"root\")".into(),
            );
        }
        for (key, v) in [
            ("crun.binary", &self.crun.binary),
            ("runc.binary", &self.runc.binary),
        ] {
            if v.is_empty() {
                return Err(format!("{key}: must not be empty"));
            }
        }
        Ok(())
    }

    /// Load from an explicit path (runtime options' ConfigPath); otherwise env `PVELXC_CONFIG`;
    /// otherwise /etc/pvelxc/config.toml if it exists; otherwise built-in defaults.
    pub fn load(explicit: Option<&str>) -> Result<Loaded> {
        let env = std::env::var(ENV_CONFIG).ok().filter(|s| !s.is_empty());
        let chosen = explicit
            .map(PathBuf::from)
            .or_else(|| env.map(PathBuf::from));
        let path = match chosen {
            Some(p) => p,
            None => {
                let p = PathBuf::from(DEFAULT_CONFIG_PATH);
                if !p.exists() {
                    return Ok(Loaded::default());
                }
                p
            }
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::invalid(format!("cannot read config {}: {e}", path.display())))?;
        Ok(Loaded {
            config: Config::parse(&text, &path)?,
            path: Some(path),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Config> {
        Config::parse(t, Path::new("/etc/pvelxc/test.toml"))
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(parse("").expect("parse"), Config::default());
    }

    #[test]
    fn the_shipped_default_config_parses_and_matches_defaults() {
        let text = include_str!("../config/config.toml");
        assert_eq!(parse(text).expect("shipped config"), Config::default());
    }

    #[test]
    fn full_config() {
        let c = parse(
            r#"
backend = "pct"
allow_annotation_override = false
on_unavailable = "fallback"
[[rules]]
namespace = "k8s.io"
image = "docker.io/library/postgres:*"
backend = "vm"
[crun]
binary = "/usr/local/bin/crun"
[pct]
storage = "zfs"
vmid_min = 5000
vmid_max = 5999
network = "bridge"
bridge = "vmbr1"
ip = "10.0.0.5/24"
"#,
        )
        .expect("parse");
        assert_eq!(c.backend, BackendKind::Pct);
        assert!(!c.allow_annotation_override);
        assert_eq!(c.on_unavailable, Unavailable::Fallback);
        assert_eq!(c.rules[0].backend, BackendKind::Vm);
        assert_eq!(c.crun.binary, "/usr/local/bin/crun");
        assert_eq!(c.runc.binary, "runc");
        assert_eq!((c.pct.vmid_min, c.pct.vmid_max), (5000, 5999));
    }

    #[test]
    fn errors_name_file_key_and_problem() {
        let e = parse("backend = \"lxd\"").expect_err("bad backend");
        let m = e.to_string();
        assert!(m.contains("/etc/pvelxc/test.toml"), "{m}");
        assert!(m.contains("lxd"), "{m}");

        let m = parse("[pct]\nstorag = \"x\"")
            .expect_err("typo")
            .to_string();
        assert!(m.contains("storag"), "{m}");

        let m = parse("[pct]\nvmid_min = 50")
            .expect_err("range")
            .to_string();
        assert!(m.contains("pct.vmid_min"), "{m}");

        let m = parse("[[rules]]\ncontainer = \"[\"\nbackend = \"crun\"")
            .expect_err("glob")
            .to_string();
        assert!(m.contains("rules[0].container"), "{m}");

        let m = parse("backend = ").expect_err("syntax").to_string();
        assert!(m.contains("test.toml"), "{m}");
    }

    #[test]
    fn explicit_missing_file_is_an_error() {
        let e = Config::load(Some("/nonexistent/pvelxc.toml")).expect_err("missing");
        assert!(e.to_string().contains("/nonexistent/pvelxc.toml"));
    }

    #[test]
    fn backend_names() {
        for k in BackendKind::ALL {
            assert_eq!(BackendKind::parse(k.as_str()).expect("roundtrip"), k);
        }
        let e = BackendKind::parse("bogus").expect_err("unknown");
        assert!(e.to_string().contains("bogus"));
    }
}
