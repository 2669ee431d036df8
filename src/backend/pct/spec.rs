//! OCI runtime spec → `pct create` options (the process itself goes to the init via
//! process.json; see [`ctdir`](super::ctdir)).

use std::collections::HashMap;
use std::path::Path;

use oci_spec::runtime::{LinuxResources, Spec};

use super::cmd::{CtOptions, Features, Hostname, IpConfig, MountPoint, NetSpec, OsType, Tag};
use super::ctdir::CtSettings;
use super::pve::version::PkgVersion;
use crate::config::PctConfig;
use crate::error::{Error, Result};
use pvelxc_init::ct::NetConfig;

pub use super::ctdir::CT_DIR;
pub use super::pod::CRI_CONTAINER_TYPE;
const CRI_SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
const CRI_SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
const CRI_SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
const MIB: u64 = 1024 * 1024;

/// Kubernetes pods: a sandbox becomes the pod's CT, a pod container runs inside it; an
/// unknown CRI container type is refused before anything is made.
pub fn admit_pods(annotations: &HashMap<String, String>) -> Result<()> {
    super::pod::role(annotations).map(|_| ())
}

fn fnv(s: &str) -> u32 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h as u32
}

/// The CT hostname: the spec's hostname, else the container id, as a DNS label. When
/// sanitising lost information, a short hash of the original keeps two ids apart.
pub fn hostname(spec: &Spec, id: &str) -> Hostname {
    let src = spec
        .hostname()
        .as_deref()
        .filter(|h| !h.is_empty())
        .unwrap_or(id);
    let h = Hostname::sanitize(src);
    if h.as_str() == src || h.as_str().len() == Hostname::MAX {
        return h;
    }
    let suffix = format!("-{:06x}", fnv(src) & 0xff_ffff);
    let mut base = h.as_str().to_string();
    base.truncate(Hostname::MAX - suffix.len());
    let base = base.trim_end_matches('-').to_string();
    Hostname::sanitize(&(base + &suffix))
}

/// OCI `cpu.shares` → Proxmox `cpuunits`. On cgroup v2 hosts (PVE 8/9) cpuunits is
/// `cpu.weight` (1..10000, default 100): convert like runc/crun,
/// weight = 1 + ((shares − 2) × 9999) / 262142. On cgroup v1 it is `cpu.shares` (2..262144).
pub fn cpuunits(shares: u64, unified: bool) -> u32 {
    let s = shares.clamp(2, 262_144);
    if unified {
        (1 + ((s - 2) * 9999) / 262_142) as u32
    } else {
        s as u32
    }
}

/// A CFS quota/period → Proxmox `cpulimit` (CPUs, two decimals, rounded up) and `cores`;
/// `None` when there is no quota (0 or −1).
pub fn cpu_limit(quota: i64, period: u64) -> Option<(f64, u32)> {
    if quota <= 0 || period == 0 {
        return None;
    }
    let lim = quota as f64 / period as f64;
    let lim = ((lim * 100.0).ceil() / 100.0).min(8192.0);
    Some((lim, (lim.ceil() as u32).clamp(1, 8192)))
}

/// Memory/swap/cpu from OCI resources (also used by Update).
pub fn resources(r: &LinuxResources, o: &mut CtOptions) {
    if let Some(m) = r.memory() {
        let limit = m.limit().filter(|l| *l > 0).map(|l| l as u64);
        if let Some(l) = limit {
            o.memory_mb = Some(l.div_ceil(MIB).max(16));
        }
        match (limit, m.swap()) {
            // OCI swap is memory+swap.
            (Some(l), Some(s)) if s > 0 => {
                o.swap_mb = Some((s as u64).saturating_sub(l) / MIB);
            }
            (None, Some(s)) if s > 0 => o.swap_mb = Some(s as u64 / MIB),
            _ => {}
        }
    }
    if let Some(c) = r.cpu() {
        if let Some((limit, cores)) = cpu_limit(c.quota().unwrap_or(0), c.period().unwrap_or(0)) {
            o.cpulimit = Some(limit);
            o.cores = Some(cores);
        }
        if let Some(s) = c.shares() {
            if s > 0 {
                o.cpuunits = Some(cpuunits(s, crate::sys::cgroup::is_unified()));
            }
        }
    }
}

/// Bind mounts of host directories → mp2.. (mp0/mp1 are the shim's directory, see
/// [`CtDir::mount_points`](super::ctdir::CtDir::mount_points)). Added after `pct create`.
pub fn mount_points(spec: &Spec) -> Result<Vec<MountPoint>> {
    let mut out = Vec::new();
    let mut index = 2u8;
    for b in crate::backend::binds::binds(spec) {
        let (src, dst) = (&b.source, b.destination);
        if !src.is_absolute() || !src.is_dir() {
            log::warn!(
                "pct: bind mount {} -> {dst} skipped: only host directories can be CT mount points",
                src.display()
            );
            continue;
        }
        if dst == CT_DIR || dst.starts_with(&format!("{CT_DIR}/")) {
            return Err(Error::invalid(format!(
                "mount destination {dst} is reserved by the pct backend"
            )));
        }
        let mut mp = MountPoint::bind(index, src.display().to_string(), dst);
        mp.ro = b.read_only;
        mp.render()
            .map_err(|e| Error::invalid(format!("bind mount {}: {e}", src.display())))?;
        out.push(mp);
        index = index
            .checked_add(1)
            .filter(|i| *i < 255)
            .ok_or_else(|| Error::invalid("too many bind mounts for a CT (at most 253)"))?;
    }
    Ok(out)
}

/// `network = "bridge"`: a veth on the bridge. pve-container ≥ 6.0.15 configures the address
/// itself (`host-managed=1`); older versions leave an `unmanaged` CT's interface down, so the
/// init configures a static address (returned for `ct.json`); DHCP needs 6.0.15+.
pub fn network(cfg: &PctConfig, pve: PkgVersion) -> Result<(Vec<NetSpec>, Option<NetConfig>)> {
    match cfg.network.as_str() {
        "none" | "" => Ok((Vec::new(), None)),
        "bridge" => {
            let mut n = NetSpec::new(0, "eth0");
            n.bridge = Some(cfg.bridge.clone());
            n.ip = Some(match cfg.ip.as_str() {
                "dhcp" | "" => IpConfig::Dhcp,
                "manual" => IpConfig::Manual,
                cidr => IpConfig::Cidr(cidr.to_string()),
            });
            if !cfg.gateway.is_empty() {
                n.gw = Some(cfg.gateway.clone());
            }
            let mut inside = None;
            if pve.features().host_managed_net {
                n.host_managed = Some(true);
            } else {
                match n.ip.as_ref() {
                    Some(IpConfig::Dhcp) => {
                        return Err(Error::precondition(format!(
                            "[pct] network = \"bridge\" with ip = \"dhcp\" needs host-managed \
                             networking (pve-container 6.0.15+, Proxmox VE 9.1); this host has \
                             pve-container {pve}: set [pct] ip to a static address like \
                             10.0.0.5/24 (the CT's init configures it) or upgrade"
                        )))
                    }
                    Some(IpConfig::Cidr(c)) => {
                        pvelxc_init::ct::parse_cidr(c)
                            .map_err(|e| Error::invalid(format!("[pct] ip: {e}")))?;
                        inside = Some(NetConfig {
                            iface: n.name.clone(),
                            address: c.clone(),
                            gateway: n.gw.clone(),
                        });
                    }
                    _ => {}
                }
            }
            n.render()
                .map_err(|e| Error::invalid(format!("[pct] network: {e}")))?;
            Ok((vec![n], inside))
        }
        other => Err(Error::invalid(format!(
            "[pct] network = {other:?}: expected \"none\" or \"bridge\""
        ))),
    }
}

fn features(spec: &Spec) -> Option<Features> {
    let fuse = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().as_ref())
        .map(|d| d.iter().any(|d| d.path() == Path::new("/dev/fuse")))
        .unwrap_or(false);
    fuse.then(|| Features {
        fuse: Some(true),
        ..Default::default()
    })
}

/// The image reference containerd/CRI annotated the spec with, if any.
pub fn image(spec: &Spec) -> Option<String> {
    let ann = spec.annotations().as_ref()?;
    crate::router::IMAGE_ANNOTATIONS
        .iter()
        .find_map(|k| ann.get(*k))
        .cloned()
}

/// Tags and description that tell an admin where a CT came from.
fn provenance(namespace: &str, id: &str, spec: &Spec, o: &mut CtOptions) {
    let ann = spec.annotations().clone().unwrap_or_default();
    o.tags = vec![
        Tag::sanitize("pvelxc"),
        Tag::sanitize(&format!("ns-{namespace}")),
    ];
    let mut d = format!(
        "Created by containerd-shim-pvelxc-v2 (io.containerd.pvelxc.v2).\n\
         containerd namespace: {namespace}\ncontainer id: {id}\n"
    );
    if let (Some(ns), Some(name)) = (ann.get(CRI_SANDBOX_NAMESPACE), ann.get(CRI_SANDBOX_NAME)) {
        d.push_str(&format!("pod: {ns}/{name}\n"));
        if let Some(uid) = ann.get(CRI_SANDBOX_UID) {
            d.push_str(&format!("pod uid: {uid}\n"));
        }
        o.tags.push(Tag::sanitize(&format!("pod-{name}")));
    }
    if let Some(img) = crate::router::IMAGE_ANNOTATIONS
        .iter()
        .find_map(|k| ann.get(*k))
    {
        d.push_str(&format!("image: {img}\n"));
    }
    d.push_str("Destroyed when the container is deleted; do not edit.");
    o.description = Some(d.replace('\0', ""));
}

/// What `pct create` gets besides VMID and template, and what the init applies itself.
pub struct CtPlan {
    pub options: CtOptions,
    pub settings: CtSettings,
    /// Raw `lxc.*` lines for the CT config (written under the config lock after create).
    pub raw_lines: Vec<String>,
    /// A Kubernetes pod's CT (its sandbox): no Proxmox network (CNI's is moved in), a
    /// shared D for its containers' mounts.
    pub pod: bool,
}

/// Everything about the CT that follows from config, host and spec. `token` is this
/// create's ownership tag; `rootfs` comes from the host's storage.cfg.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    cfg: &PctConfig,
    pve: PkgVersion,
    namespace: &str,
    id: &str,
    spec: &Spec,
    rootfs: super::cmd::Rootfs,
    init: &str,
    token: &str,
) -> Result<CtPlan> {
    let ann = spec.annotations().clone().unwrap_or_default();
    let pod = super::pod::role(&ann)? == super::pod::Role::Sandbox;
    let (nets, net) = if pod {
        super::pod::admit_sandbox(spec)?;
        (Vec::new(), None)
    } else {
        network(cfg, pve)?
    };
    let mut raw_lines = Vec::new();
    let entrypoint = if pve.features().entrypoint {
        Some(init.to_string())
    } else {
        // Honoured by every pve-container version (appended to the generated LXC config).
        raw_lines.push(format!("lxc.init.cmd: {init}"));
        None
    };
    let mut o = CtOptions {
        hostname: Some(hostname(spec, id)),
        rootfs: Some(rootfs),
        ostype: Some(OsType::Unmanaged),
        entrypoint,
        nets,
        features: features(spec),
        ..Default::default()
    };
    if pod {
        // The whole pod's resources, not pause's own (cpu shares 2).
        let r = super::pod::sizing::PodResources::from_annotations(&ann)?;
        let host = super::pod::sizing::host_memory_mib()?;
        let unified = crate::sys::cgroup::is_unified();
        super::pod::sizing::apply(&r, cfg.pod_overhead_mib, host, unified, &mut o);
    } else if let Some(r) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
        resources(r, &mut o);
    }
    raw_lines.extend(super::limits::raw_lines(
        spec,
        crate::sys::cgroup::is_unified(),
    ));
    super::limits::check_dropped(spec, cfg.strict)?;
    provenance(namespace, id, spec, &mut o);
    o.tags.push(Tag::sanitize(token));
    let settings = CtSettings {
        // CRI asks for a read-only root for `pause`; a pod's CT root holds its containers'.
        readonly_root: !pod
            && spec
                .root()
                .as_ref()
                .and_then(|r| r.readonly())
                .unwrap_or(false),
        net,
    };
    Ok(CtPlan {
        options: o,
        settings,
        raw_lines,
        pod,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResourcesBuilder, MountBuilder,
        SpecBuilder,
    };

    fn spec_with(res: LinuxResources, mounts: Vec<oci_spec::runtime::Mount>) -> Spec {
        let mut s = SpecBuilder::default()
            .linux(LinuxBuilder::default().resources(res).build().unwrap())
            .mounts(mounts)
            .build()
            .unwrap();
        s.set_hostname(None);
        s
    }

    #[test]
    fn limits_and_mounts() {
        let res = LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(256 * 1024 * 1024i64)
                    .swap(384 * 1024 * 1024i64)
                    .build()
                    .unwrap(),
            )
            .cpu(
                LinuxCpuBuilder::default()
                    .quota(150_000i64)
                    .period(100_000u64)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let dir = std::env::temp_dir();
        let mounts = vec![
            MountBuilder::default()
                .destination("/data")
                .typ("bind")
                .source(&dir)
                .options(vec!["rbind".to_string(), "ro".to_string()])
                .build()
                .unwrap(),
            MountBuilder::default()
                .destination("/proc")
                .typ("proc")
                .source("proc")
                .build()
                .unwrap(),
        ];
        let spec = spec_with(res, mounts);
        let cfg = PctConfig::default();
        let rootfs = super::super::cmd::Rootfs::Alloc {
            storage: "local-zfs".into(),
            size_gib: 0,
        };
        let plan = |v| {
            super::plan(
                &cfg,
                v,
                "default",
                "web_1",
                &spec,
                rootfs.clone(),
                "/.pvelxc/init",
                "pvelxc-0123456789ab",
            )
            .unwrap()
        };
        let new = plan(PkgVersion(6, 0, 18));
        let o = &new.options;
        assert_eq!(o.memory_mb, Some(256));
        assert_eq!(o.swap_mb, Some(128));
        assert_eq!(o.cpulimit, Some(1.5));
        assert_eq!(o.cores, Some(2));
        assert!(o.mps.is_empty(), "mount points are added after create");
        assert_eq!(o.entrypoint.as_deref(), Some("/.pvelxc/init"));
        assert!(new.raw_lines.is_empty(), "{:?}", new.raw_lines);
        assert_eq!(o.ostype, Some(OsType::Unmanaged));
        assert!(o.nets.is_empty());
        let h = o.hostname.clone().unwrap();
        assert!(h.as_str().starts_with("web-1-"), "{h}");
        assert!(o
            .description
            .clone()
            .unwrap()
            .contains("container id: web_1"));
        let tags: Vec<&str> = o.tags.iter().map(Tag::as_str).collect();
        assert_eq!(tags, ["pvelxc", "ns-default", "pvelxc-0123456789ab"]);
        // pve-container before 6.0.15: no entrypoint option, the init as a raw LXC key.
        let old = plan(PkgVersion(5, 2, 7));
        assert_eq!(old.options.entrypoint, None);
        assert_eq!(old.raw_lines, ["lxc.init.cmd: /.pvelxc/init"]);

        let mps = mount_points(&spec).unwrap();
        assert_eq!(mps.len(), 1, "only the bind mount");
        assert_eq!(mps[0].index, 2, "mp0/mp1 are the shim's");
        assert!(mps[0].ro && mps[0].mp == "/data");
    }

    #[test]
    fn cpu_shares_to_cpuunits() {
        // cgroup v2 (PVE 8/9): cpu.weight, like runc/crun; never the raw 1024.
        assert_eq!(cpuunits(1024, true), 39);
        assert_eq!(cpuunits(2, true), 1);
        assert_eq!(cpuunits(262_144, true), 10_000);
        assert_eq!(cpuunits(1_000_000, true), 10_000);
        // cgroup v1: cpu.shares itself.
        assert_eq!(cpuunits(1024, false), 1024);
        assert_eq!(cpuunits(1, false), 2);
    }

    #[test]
    fn hostnames_are_distinct_and_valid() {
        let mut s = SpecBuilder::default().build().unwrap();
        s.set_hostname(None);
        assert_eq!(hostname(&s, "web").as_str(), "web");
        let a = hostname(&s, "a_b");
        let b = hostname(&s, "a.b");
        assert_ne!(a, b);
        assert!(Hostname::parse(a.as_str()).is_ok());
        let long = "x".repeat(80);
        assert!(hostname(&s, &long).as_str().len() <= 63);
    }

    #[test]
    fn pods_are_admitted_odd_types_refused() {
        let mut a = HashMap::new();
        assert!(admit_pods(&a).is_ok());
        a.insert(CRI_CONTAINER_TYPE.to_string(), "sandbox".to_string());
        assert!(admit_pods(&a).is_ok());
        a.insert(CRI_CONTAINER_TYPE.to_string(), "podvm".to_string());
        let e = admit_pods(&a).unwrap_err().to_string();
        assert!(e.contains("podvm"), "{e}");
    }

    #[test]
    fn bridge_network() {
        let cfg = PctConfig {
            network: "bridge".into(),
            ip: "10.0.0.5/24".into(),
            gateway: "10.0.0.1".into(),
            ..Default::default()
        };
        let (n, inside) = network(&cfg, PkgVersion(6, 0, 18)).unwrap();
        assert_eq!(
            n[0].render().unwrap(),
            "name=eth0,bridge=vmbr0,ip=10.0.0.5/24,gw=10.0.0.1,host-managed=1,type=veth"
        );
        assert!(inside.is_none(), "PVE 9.1 configures the address itself");
        // Older pve-container: the init configures the static address.
        let (n, inside) = network(&cfg, PkgVersion(5, 2, 7)).unwrap();
        assert!(n[0].host_managed.is_none());
        let inside = inside.unwrap();
        assert_eq!(
            (
                inside.iface.as_str(),
                inside.address.as_str(),
                inside.gateway.as_deref()
            ),
            ("eth0", "10.0.0.5/24", Some("10.0.0.1"))
        );
        let dhcp = PctConfig {
            network: "bridge".into(),
            ..Default::default()
        };
        assert!(network(&dhcp, PkgVersion(6, 0, 18)).is_ok());
        let e = network(&dhcp, PkgVersion(6, 0, 14))
            .unwrap_err()
            .to_string();
        assert!(e.contains("6.0.14") && e.contains("dhcp"), "{e}");
        let bad = PctConfig {
            network: "wifi".into(),
            ..Default::default()
        };
        assert!(network(&bad, PkgVersion(6, 0, 18)).is_err());
    }
}
