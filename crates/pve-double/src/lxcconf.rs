//! The LXC config pct generates for a CT (`$ROOT/lxc/<vmid>/config`), as PVE::LXC does:
//! includes, id map, Proxmox cgroup layout and limits, rootfs, networks, mount entries, init
//! and environment, then the raw `lxc.*` lines of the CT config. Pure functions.

use std::path::{Component, Path, PathBuf};

use crate::conf::PctConfig;
use crate::error::{die, Result};
use crate::idmap;
use crate::paths::Root;
use crate::profile::Profile;
use crate::propstr::PropStr;
use crate::storage::{self, Volume};

const LXC_CONFIG_DIR: &str = "/usr/share/lxc/config";
/// Is the host a pure cgroup v2 host?
pub fn host_is_cgroup2() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Directory of a CT's cgroup for `controller` (the `lxc/<vmid>` level; processes live in `ns`).
pub fn cgroup_dir(vmid: u32, controller: &str) -> PathBuf {
    if host_is_cgroup2() {
        PathBuf::from(format!("/sys/fs/cgroup/lxc/{vmid}"))
    } else if controller.is_empty() {
        PathBuf::from(format!("/sys/fs/cgroup/unified/lxc/{vmid}"))
    } else {
        PathBuf::from(format!("/sys/fs/cgroup/{controller}/lxc/{vmid}"))
    }
}

fn mib(v: &str) -> Option<u64> {
    v.parse::<u64>().ok().map(|m| m * 1024 * 1024)
}

fn host_cpus() -> u64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(1)
}

/// cgroup limit settings (key without the `lxc.cgroup[2].` prefix, value).
pub fn cgroup_limits(conf: &PctConfig, v2: bool) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mem = conf.get("memory").unwrap_or("512");
    let swap = conf.get("swap").unwrap_or("512");
    if let (Some(m), Some(s)) = (mib(mem), mib(swap)) {
        if v2 {
            out.push(("memory.max".into(), m.to_string()));
            out.push(("memory.swap.max".into(), s.to_string()));
        } else {
            out.push(("memory.limit_in_bytes".into(), m.to_string()));
            if Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists() {
                out.push(("memory.memsw.limit_in_bytes".into(), (m + s).to_string()));
            }
        }
    }
    if let Some(l) = conf.get("cpulimit").and_then(|l| l.parse::<f64>().ok()) {
        if l > 0.0 {
            let quota = (l * 100_000.0).round() as u64;
            if v2 {
                out.push(("cpu.max".into(), format!("{quota} 100000")));
            } else {
                out.push(("cpu.cfs_period_us".into(), "100000".into()));
                out.push(("cpu.cfs_quota_us".into(), quota.to_string()));
            }
        }
    }
    if let Some(u) = conf.get("cpuunits").and_then(|u| u.parse::<u64>().ok()) {
        if v2 {
            out.push(("cpu.weight".into(), u.clamp(1, 10000).to_string()));
        } else {
            // the kernel's cpu.shares range (PVE's schema allows 0..500000)
            out.push(("cpu.shares".into(), u.clamp(2, 262_144).to_string()));
        }
    }
    if let Some(c) = conf.get("cores").and_then(|c| c.parse::<u64>().ok()) {
        let n = c.min(host_cpus()).max(1);
        let cpus = if n == 1 {
            "0".to_string()
        } else {
            format!("0-{}", n - 1)
        };
        out.push(("cpuset.cpus".into(), cpus));
    }
    out
}

/// A bind mount to set up in the CT.
#[derive(Debug, Clone, PartialEq)]
pub struct MountEntry {
    pub source: PathBuf,
    /// Path inside the CT, relative (no leading '/').
    pub target: String,
    pub ro: bool,
}

/// Validate a mount point path inside the CT; returns it relative to the rootfs.
pub fn ct_relative(mp: &str) -> std::result::Result<String, String> {
    let p = Path::new(mp);
    if !p.is_absolute() {
        return Err(format!("mount point path must be absolute: '{mp}'"));
    }
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            _ => return Err(format!("invalid path in mount point: '{mp}'")),
        }
    }
    if parts.is_empty() {
        return Err(format!("mount point path must not be '/': '{mp}'"));
    }
    Ok(parts.join("/"))
}

/// Host path of the rootfs (or an mp) volume string.
pub fn resolve_volume_path(root: &Root, volume: &str) -> Result<PathBuf> {
    match storage::parse_volume(volume).map_err(die)? {
        Volume::Path(p) => Ok(p),
        Volume::Existing { sid, volname } => storage::volume_path(root, &sid, &volname),
        Volume::Alloc { .. } => Err(die(format!("volume '{volume}' is not allocated"))),
    }
}

/// Host path of the CT's rootfs.
pub fn rootfs_path(root: &Root, conf: &PctConfig) -> Result<PathBuf> {
    let rootfs = conf
        .get("rootfs")
        .ok_or_else(|| die("CT has no rootfs configured"))?;
    let p = PropStr::parse(rootfs, Some("volume")).map_err(|e| die(format!("rootfs: {e}")))?;
    let vol = p.default.ok_or_else(|| die("rootfs: missing volume"))?;
    resolve_volume_path(root, &vol)
}

/// Volume strings of rootfs and every mpN (storage volumes and host paths alike).
pub fn volume_ids(conf: &PctConfig) -> Vec<String> {
    conf.main
        .keys
        .iter()
        .filter(|(k, _)| {
            k.as_str() == "rootfs"
                || (k.starts_with("mp")
                    && k.len() > 2
                    && k[2..].bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|(_, v)| PropStr::parse(v, Some("volume")).ok()?.default)
        .collect()
}

/// The CT's mount points (mpN), sorted by target path so parents come first.
pub fn mount_entries(root: &Root, conf: &PctConfig) -> Result<Vec<MountEntry>> {
    let mut out = Vec::new();
    for (k, v) in &conf.main.keys {
        if !k.starts_with("mp") || !k[2..].bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let p = PropStr::parse(v, Some("volume")).map_err(|e| die(format!("{k}: {e}")))?;
        let vol = p
            .default
            .clone()
            .ok_or_else(|| die(format!("{k}: missing volume")))?;
        let mp = p
            .get("mp")
            .ok_or_else(|| die(format!("{k}: missing mount point path (mp=)")))?;
        out.push(MountEntry {
            source: resolve_volume_path(root, &vol)?,
            target: ct_relative(mp).map_err(die)?,
            ro: p.flag("ro"),
        });
    }
    out.sort_by(|a, b| a.target.cmp(&b.target));
    Ok(out)
}

/// Parsed netN entries (index, properties).
pub fn nets(conf: &PctConfig) -> Result<Vec<(u32, PropStr)>> {
    let mut out = Vec::new();
    for (k, v) in &conf.main.keys {
        if let Some(i) = k.strip_prefix("net").and_then(|i| i.parse::<u32>().ok()) {
            let p = PropStr::parse(v, None).map_err(|e| die(format!("{k}: {e}")))?;
            out.push((i, p));
        }
    }
    out.sort_by_key(|(i, _)| *i);
    Ok(out)
}

fn env_entries(conf: &PctConfig) -> Vec<String> {
    conf.get("env")
        .map(|e| {
            e.split('\0')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Does netN ask PVE to configure the interface itself (`host-managed=1`, 6.0.15+ only)?
pub fn is_host_managed(profile: Profile, net: &PropStr) -> bool {
    profile.has_host_managed() && net.flag("host-managed")
}

/// Why a host-managed netN cannot be started by the double (DHCP: there is no DHCP client
/// or server for CTs here).
pub fn host_managed_unsupported(i: u32, net: &PropStr) -> Option<String> {
    for k in ["ip", "ip6"] {
        if let Some(v @ ("dhcp" | "auto")) = net.get(k) {
            return Some(format!(
                "net{i}: host-managed {k}={v} is not supported by pve-double (no DHCP/SLAAC for CTs); use a static {k}=CIDR"
            ));
        }
    }
    None
}

/// Render the LXC config for a CT (pure; see [`prepare`] for side effects).
pub fn render_config(
    root: &Root,
    vmid: u32,
    conf: &PctConfig,
    v2: bool,
    profile: Profile,
) -> Result<String> {
    let mut l: Vec<(String, String)> = Vec::new();
    let mut push = |k: &str, v: String| {
        l.push((k.to_string(), v));
    };
    let ostype = conf.get("ostype").unwrap_or("unmanaged");
    let unpriv = conf.is_unprivileged();
    let os_common = format!("{LXC_CONFIG_DIR}/{ostype}.common.conf");
    if ostype != "unmanaged" && Path::new(&os_common).exists() {
        push("lxc.include", os_common);
    } else {
        push("lxc.include", format!("{LXC_CONFIG_DIR}/common.conf"));
    }
    if unpriv {
        let os_userns = format!("{LXC_CONFIG_DIR}/{ostype}.userns.conf");
        if ostype != "unmanaged" && Path::new(&os_userns).exists() {
            push("lxc.include", os_userns);
        } else {
            push("lxc.include", format!("{LXC_CONFIG_DIR}/userns.conf"));
        }
    }
    let features = conf
        .get("features")
        .map(|f| PropStr::parse(f, None).unwrap_or_default())
        .unwrap_or_default();
    if features.flag("nesting") {
        push("lxc.include", format!("{LXC_CONFIG_DIR}/nesting.conf"));
    }
    push("lxc.arch", conf.get("arch").unwrap_or("amd64").to_string());
    push("lxc.apparmor.profile", "unconfined".into());
    push("lxc.autodev", "1".into());
    push("lxc.mount.auto", "proc:mixed sys:mixed cgroup:mixed".into());
    push("lxc.monitor.unshare", "1".into());
    push("lxc.tty.max", conf.get("tty").unwrap_or("2").to_string());
    push("lxc.uts.name", conf.hostname(vmid));
    if unpriv && !conf.main.lxc.iter().any(|(k, _)| k == "lxc.idmap") {
        for m in idmap::lxc_idmap_lines() {
            push("lxc.idmap", m);
        }
    }
    push("lxc.cgroup.dir.monitor", format!("lxc.monitor/{vmid}"));
    push("lxc.cgroup.dir.container", format!("lxc/{vmid}"));
    push("lxc.cgroup.dir.container.inner", "ns".into());
    let prefix = if v2 { "lxc.cgroup2" } else { "lxc.cgroup" };
    for (k, v) in cgroup_limits(conf, v2) {
        push(&format!("{prefix}.{k}"), v);
    }
    push(
        "lxc.rootfs.path",
        format!("dir:{}", rootfs_path(root, conf)?.display()),
    );
    let nets = nets(conf)?;
    if nets.is_empty() {
        push("lxc.net.0.type", "empty".into());
    }
    for (n, (i, p)) in nets.iter().enumerate() {
        let pre = format!("lxc.net.{n}");
        push(&format!("{pre}.type"), "veth".into());
        push(&format!("{pre}.veth.pair"), format!("veth{vmid}i{i}"));
        if let Some(h) = p.get("hwaddr") {
            push(&format!("{pre}.hwaddr"), h.to_string());
        }
        push(
            &format!("{pre}.name"),
            p.get("name").unwrap_or("eth0").to_string(),
        );
        if let Some(b) = p.get("bridge") {
            push(&format!("{pre}.link"), b.to_string());
        }
        if let Some(m) = p.get("mtu") {
            push(&format!("{pre}.mtu"), m.to_string());
        }
        // Without host-managed, PVE leaves the interface inside unconfigured and down (an
        // unmanaged guest has to bring it up itself).
        if is_host_managed(profile, p) {
            if !p.flag("link_down") {
                push(&format!("{pre}.flags"), "up".into());
            }
            if let Some(ip) = p.get("ip").filter(|v| v.contains('/')) {
                push(&format!("{pre}.ipv4.address"), ip.to_string());
                if let Some(gw) = p.get("gw") {
                    push(&format!("{pre}.ipv4.gateway"), gw.to_string());
                }
            }
            if let Some(ip) = p.get("ip6").filter(|v| v.contains('/')) {
                push(&format!("{pre}.ipv6.address"), ip.to_string());
                if let Some(gw) = p.get("gw6") {
                    push(&format!("{pre}.ipv6.gateway"), gw.to_string());
                }
            }
        }
    }
    if conf.get("console") == Some("0") {
        push("lxc.console.path", "none".into());
    } else {
        push(
            "lxc.console.logfile",
            root.console_log_path(vmid).display().to_string(),
        );
    }
    if features.flag("fuse") {
        push(
            "lxc.mount.entry",
            "/dev/fuse dev/fuse none bind,create=file 0 0".into(),
        );
    }
    for m in mount_entries(root, conf)? {
        let mut opts = "rbind,create=dir".to_string();
        if m.ro {
            opts.push_str(",ro");
        }
        push(
            "lxc.mount.entry",
            format!("{} {} none {opts} 0 0", m.source.display(), m.target),
        );
    }
    push(
        "lxc.init.cmd",
        conf.get("entrypoint").unwrap_or("/sbin/init").to_string(),
    );
    for e in env_entries(conf) {
        push("lxc.environment", e);
    }
    for (k, v) in &conf.main.lxc {
        push(k, v.clone());
    }
    let mut out = String::new();
    for (k, v) in l {
        if v.contains('\n') || v.contains('\0') {
            return Err(die(format!(
                "invalid value for {k}: contains a newline or NUL"
            )));
        }
        out.push_str(&format!("{k} = {v}\n"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> Root {
        Root {
            root: PathBuf::from("/R"),
            node: "pve".into(),
        }
    }

    #[test]
    fn relative_paths() {
        assert_eq!(ct_relative("/data/x/").unwrap(), "data/x");
        assert!(ct_relative("data").is_err());
        assert!(ct_relative("/a/../b").is_err());
        assert!(ct_relative("/").is_err());
    }

    #[test]
    fn config_rendering() {
        let (conf, _) = PctConfig::parse(
            "cores: 1\ncpulimit: 1.5\nentrypoint: /.pvelxc/init run\nenv: A=1\0B=x y\nhostname: web\nmemory: 256\nmp0: /srv/h,mp=/mnt/h,ro=1\nostype: unmanaged\nrootfs: /R/storage/ct101\nswap: 0\nunprivileged: 1\nlxc.init.cwd: /tmp\n",
            101,
        );
        let t = render_config(&root(), 101, &conf, false, Profile::Pve91).unwrap();
        for want in [
            "lxc.include = /usr/share/lxc/config/common.conf\n",
            "lxc.include = /usr/share/lxc/config/userns.conf\n",
            "lxc.idmap = u 0 100000 65536\nlxc.idmap = g 0 100000 65536\n",
            "lxc.cgroup.dir.container = lxc/101\nlxc.cgroup.dir.container.inner = ns\n",
            "lxc.cgroup.dir.monitor = lxc.monitor/101\n",
            "lxc.cgroup.memory.limit_in_bytes = 268435456\n",
            "lxc.cgroup.cpu.cfs_quota_us = 150000\n",
            "lxc.cgroup.cpuset.cpus = 0\n",
            "lxc.rootfs.path = dir:/R/storage/ct101\n",
            "lxc.net.0.type = empty\n",
            "lxc.apparmor.profile = unconfined\n",
            "lxc.autodev = 1\n",
            "lxc.mount.auto = proc:mixed sys:mixed cgroup:mixed\n",
            "lxc.mount.entry = /srv/h mnt/h none rbind,create=dir,ro 0 0\n",
            "lxc.init.cmd = /.pvelxc/init run\n",
            "lxc.environment = A=1\nlxc.environment = B=x y\n",
            "lxc.uts.name = web\n",
        ] {
            assert!(t.contains(want), "missing {want:?} in\n{t}");
        }
        assert!(t.ends_with("lxc.init.cwd = /tmp\n"));
        let t2 = render_config(&root(), 101, &conf, true, Profile::Pve91).unwrap();
        assert!(t2.contains("lxc.cgroup2.memory.max = 268435456\n"));
        assert!(t2.contains("lxc.cgroup2.memory.swap.max = 0\n"));
        assert!(t2.contains("lxc.cgroup2.cpu.max = 150000 100000\n"));
    }

    #[test]
    fn default_entrypoint_and_net() {
        let (conf, _) = PctConfig::parse(
            "net0: name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,type=veth\nrootfs: /srv/ct\n",
            100,
        );
        let t = render_config(&root(), 100, &conf, false, Profile::Pve91).unwrap();
        assert!(t.contains("lxc.init.cmd = /sbin/init\n"));
        assert!(t.contains("lxc.net.0.type = veth\nlxc.net.0.veth.pair = veth100i0\n"));
        assert!(t.contains("lxc.net.0.link = vmbr0\n"));
        assert!(!t.contains("lxc.idmap"));
        assert!(t.contains("lxc.rootfs.path = dir:/srv/ct\n"));
    }

    #[test]
    fn networking_per_profile() {
        let (conf, _) = PctConfig::parse(
            "net0: name=eth0,bridge=vmbr0,gw=10.0.0.1,host-managed=1,hwaddr=BC:24:11:00:00:01,ip=10.0.0.2/24,type=veth\nnet1: name=eth1,bridge=vmbr0,ip=10.0.1.2/24,type=veth\nrootfs: /srv/ct\n",
            100,
        );
        let t = render_config(&root(), 100, &conf, false, Profile::Pve91).unwrap();
        assert!(t.contains("lxc.net.0.flags = up\n"), "{t}");
        assert!(t.contains("lxc.net.0.ipv4.address = 10.0.0.2/24\n"));
        assert!(t.contains("lxc.net.0.ipv4.gateway = 10.0.0.1\n"));
        assert!(!t.contains("lxc.net.1.flags"), "{t}");
        assert!(!t.contains("lxc.net.1.ipv4"), "{t}");
        for p in [Profile::Pve8, Profile::Pve90] {
            let t = render_config(&root(), 100, &conf, false, p).unwrap();
            assert!(!t.contains(".flags = up"), "{t}");
            assert!(!t.contains(".ipv4."), "{t}");
            assert!(t.contains("lxc.net.0.link = vmbr0\n"));
        }
        let (_, n) = &nets(&conf).unwrap()[0];
        assert!(host_managed_unsupported(0, n).is_none());
        let d = PropStr::parse("name=eth0,host-managed=1,ip=dhcp", None).unwrap();
        assert!(host_managed_unsupported(0, &d)
            .unwrap()
            .contains("ip=dhcp is not supported"));
    }

    #[test]
    fn raw_lxc_lines_override_on_every_profile() {
        let (conf, _) = PctConfig::parse("rootfs: /srv/ct\nlxc.init.cmd: /x\n", 100);
        for p in [Profile::Pve8, Profile::Pve90, Profile::Pve91] {
            let t = render_config(&root(), 100, &conf, false, p).unwrap();
            let last = t
                .lines()
                .rfind(|l| l.starts_with("lxc.init.cmd = "))
                .unwrap();
            assert_eq!(last, "lxc.init.cmd = /x");
            assert!(t.contains("lxc.init.cmd = /sbin/init\n"));
        }
    }

    #[test]
    fn cpu_units() {
        let (conf, _) = PctConfig::parse("cpuunits: 500000\n", 100);
        let v2 = cgroup_limits(&conf, true);
        assert!(v2.contains(&("cpu.weight".into(), "10000".into())));
        let v1 = cgroup_limits(&conf, false);
        assert!(v1.contains(&("cpu.shares".into(), "262144".into())));
        let (conf, _) = PctConfig::parse("cpuunits: 0\n", 100);
        assert!(cgroup_limits(&conf, true).contains(&("cpu.weight".into(), "1".into())));
        assert!(cgroup_limits(&conf, false).contains(&("cpu.shares".into(), "2".into())));
    }
}
