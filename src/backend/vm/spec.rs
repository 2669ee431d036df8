//! OCI spec → guest agent process and VM shape (RAM, vCPUs, shares, hostname).

use std::path::{Path, PathBuf};

use oci_spec::runtime::{Capabilities as CapSet, LinuxResources, Process, Spec};
use pvelxc_agent::host::ExtraMount;
use pvelxc_agent::proto;

use crate::config::VmConfig as VmSettings;
use crate::error::{Error, Result};

/// The OCI `process` as the agent runs it.
pub fn process(p: &Process, terminal: bool) -> Result<proto::Process> {
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err(Error::invalid("process.args must not be empty"));
    }
    let user = p.user();
    let rlimits = p
        .rlimits()
        .iter()
        .flatten()
        .map(|r| {
            let kind = serde_json::to_value(r.typ())
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .ok_or_else(|| Error::invalid(format!("rlimit {:?}", r.typ())))?;
            Ok(proto::Rlimit {
                kind,
                soft: r.soft(),
                hard: r.hard(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let console_size = p.console_size().as_ref().and_then(|b| {
        let rows = u16::try_from(b.height()).ok()?;
        let cols = u16::try_from(b.width()).ok()?;
        (rows > 0 && cols > 0).then_some((rows, cols))
    });
    let capabilities = match p.capabilities() {
        Some(c) => Some(proto::Capabilities {
            bounding: cap_names(c.bounding())?,
            effective: cap_names(c.effective())?,
            inheritable: cap_names(c.inheritable())?,
            permitted: cap_names(c.permitted())?,
            ambient: cap_names(c.ambient())?,
        }),
        None => None,
    };
    Ok(proto::Process {
        args,
        env: p.env().clone().unwrap_or_default(),
        cwd: p.cwd().display().to_string(),
        uid: user.uid(),
        gid: user.gid(),
        additional_gids: user.additional_gids().clone().unwrap_or_default(),
        terminal,
        console_size,
        rlimits,
        no_new_privileges: p.no_new_privileges().unwrap_or(false),
        umask: user.umask(),
        oom_score_adj: p.oom_score_adj(),
        capabilities,
    })
}

/// One capability set as its config.json names (`CAP_KILL`), sorted; absent is empty.
fn cap_names(set: &Option<CapSet>) -> Result<Vec<String>> {
    let mut v = set
        .iter()
        .flatten()
        .map(|c| {
            serde_json::to_value(c)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .ok_or_else(|| Error::invalid(format!("capability {c:?}")))
        })
        .collect::<Result<Vec<_>>>()?;
    v.sort();
    Ok(v)
}

/// VM RAM in MiB: the memory limit plus the overhead, at least `memory_mib`.
pub fn memory_mib(res: Option<&LinuxResources>, s: &VmSettings) -> u32 {
    let limit = res
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit())
        .filter(|l| *l > 0);
    match limit {
        Some(bytes) => {
            let mib = (bytes as u64).div_ceil(1 << 20);
            let want = mib.saturating_add(u64::from(s.memory_overhead_mib));
            u32::try_from(want).unwrap_or(u32::MAX).max(s.memory_mib)
        }
        None => s.memory_mib,
    }
}

/// vCPUs: ceil(quota / period), at least 1, at most the host's CPUs; `vcpus` without a quota.
pub fn vcpus(res: Option<&LinuxResources>, s: &VmSettings) -> u32 {
    let cpu = res.and_then(|r| r.cpu().as_ref());
    let quota = cpu.and_then(|c| c.quota()).filter(|q| *q > 0);
    let period = cpu.and_then(|c| c.period()).filter(|p| *p > 0);
    let host = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    match (quota, period) {
        (Some(q), Some(p)) => {
            let n = (q as u64).div_ceil(p);
            u32::try_from(n).unwrap_or(u32::MAX).clamp(1, host.max(1))
        }
        _ => s.vcpus.max(1),
    }
}

/// The CPU quota and period (µs) for QEMU's host cgroup, when the spec sets a quota.
pub fn cpu_quota(res: Option<&LinuxResources>) -> Option<(i64, u64)> {
    let cpu = res.and_then(|r| r.cpu().as_ref())?;
    let quota = cpu.quota().filter(|q| *q > 0)?;
    let period = cpu.period().filter(|p| *p > 0).unwrap_or(100_000);
    Some((quota, period))
}

/// The spec's bind mounts of directories, as extra 9p/virtio-fs shares. File binds (resolv.conf,
/// hosts) cannot be shared as such and are skipped with a log line.
pub fn extra_mounts(spec: &Spec, bundle: &Path) -> Vec<ExtraMount> {
    let mut out = Vec::new();
    for b in crate::backend::binds::binds(spec) {
        let src = if b.source.is_absolute() {
            b.source
        } else {
            bundle.join(&b.source)
        };
        let dest = b.destination;
        if !src.is_dir() {
            log::info!(
                "vm: bind mount {} -> {dest} skipped: only directories can be shared into the VM",
                src.display()
            );
            continue;
        }
        out.push(ExtraMount {
            host_path: src,
            guest_path: dest,
            read_only: b.read_only,
        });
    }
    out
}

/// The rootfs directory: the mounted `bundle/rootfs`, or the spec's root.path (`ctr --rootfs`).
pub fn rootfs_dir(spec: &Spec, bundle: &Path, mounted: bool) -> PathBuf {
    if mounted {
        return bundle.join("rootfs");
    }
    let p = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_else(|| PathBuf::from("rootfs"));
    if p.is_absolute() {
        p
    } else {
        bundle.join(p)
    }
}

pub fn read_only(spec: &Spec) -> bool {
    spec.root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
}

/// The fields of an update request this backend cannot apply to a running VM.
pub fn unappliable(res: &LinuxResources) -> Vec<&'static str> {
    let mut v = Vec::new();
    if res.memory().is_some() {
        v.push("memory");
    }
    if res.cpu().is_some() {
        v.push("cpu");
    }
    if res.pids().is_some() {
        v.push("pids");
    }
    if res.block_io().is_some() {
        v.push("blockIO");
    }
    if res
        .hugepage_limits()
        .as_ref()
        .is_some_and(|h| !h.is_empty())
    {
        v.push("hugepageLimits");
    }
    if res.network().is_some() {
        v.push("network");
    }
    if res.devices().as_ref().is_some_and(|d| !d.is_empty()) {
        v.push("devices");
    }
    if res.unified().as_ref().is_some_and(|u| !u.is_empty()) {
        v.push("unified");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).expect("spec")
    }

    #[test]
    fn process_mapping() {
        let s = spec(
            r#"{"ociVersion":"1.0.2","process":{"terminal":true,"consoleSize":{"height":33,"width":77},
            "user":{"uid":1000,"gid":100,"additionalGids":[5,6]},"args":["/bin/sh","-c","id"],
            "env":["PATH=/bin"],"cwd":"/tmp",
            "rlimits":[{"type":"RLIMIT_NOFILE","hard":1024,"soft":512}]},
            "root":{"path":"rootfs","readonly":true},"hostname":"h1"}"#,
        );
        let p = process(s.process().as_ref().expect("p"), true).expect("map");
        assert_eq!(p.args, vec!["/bin/sh", "-c", "id"]);
        assert_eq!(p.env, vec!["PATH=/bin"]);
        assert_eq!(p.cwd, "/tmp");
        assert_eq!((p.uid, p.gid), (1000, 100));
        assert_eq!(p.additional_gids, vec![5, 6]);
        assert!(p.terminal);
        assert_eq!(p.console_size, Some((33, 77)));
        assert_eq!(p.rlimits[0].kind, "RLIMIT_NOFILE");
        assert_eq!((p.rlimits[0].soft, p.rlimits[0].hard), (512, 1024));
        assert!(!p.no_new_privileges);
        assert_eq!(
            (p.umask, p.oom_score_adj, p.capabilities),
            (None, None, None)
        );
        assert!(read_only(&s));
        assert_eq!(
            rootfs_dir(&s, Path::new("/b"), false),
            PathBuf::from("/b/rootfs")
        );
    }

    #[test]
    fn process_mapping_carries_what_the_init_honours() {
        let s = spec(
            r#"{"ociVersion":"1.0.2","process":{"user":{"uid":1000,"gid":100,"umask":23},
            "args":["/bin/true"],"cwd":"/","noNewPrivileges":true,"oomScoreAdj":-300,
            "capabilities":{"bounding":["CAP_NET_BIND_SERVICE","CAP_KILL"],
            "effective":["CAP_KILL"],"permitted":["CAP_KILL"],"ambient":["CAP_KILL"]}},
            "root":{"path":"rootfs"}}"#,
        );
        let p = process(s.process().as_ref().expect("p"), false).expect("map");
        assert!(p.no_new_privileges);
        assert_eq!(p.umask, Some(23));
        assert_eq!(p.oom_score_adj, Some(-300));
        let c = p.capabilities.clone().expect("capabilities");
        assert_eq!(c.bounding, vec!["CAP_KILL", "CAP_NET_BIND_SERVICE"]);
        assert_eq!(c.effective, vec!["CAP_KILL"]);
        assert_eq!(c.permitted, vec!["CAP_KILL"]);
        assert_eq!(c.ambient, vec!["CAP_KILL"]);
        assert!(c.inheritable.is_empty());
        // The guest runs it through the init's own prepare: every name must be known.
        let prepared = pvelxc_init::process::prepare(&p.to_oci()).expect("prepare");
        assert_eq!(prepared.caps.map(|c| c.ambient), Some(1 << 5));
        assert_eq!(prepared.umask, Some(23));
    }

    #[test]
    fn sizing() {
        let s = VmSettings::default();
        let res: LinuxResources = serde_json::from_str(
            r#"{"memory":{"limit":536870912},"cpu":{"quota":150000,"period":100000}}"#,
        )
        .expect("res");
        assert_eq!(memory_mib(Some(&res), &s), 512 + 64);
        let small: LinuxResources =
            serde_json::from_str(r#"{"memory":{"limit":16777216}}"#).expect("res");
        assert_eq!(memory_mib(Some(&small), &s), 256);
        assert_eq!(memory_mib(None, &s), 256);
        let host = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
        assert_eq!(vcpus(Some(&res), &s), 2.min(host));
        assert_eq!(vcpus(None, &s), 1);
        assert_eq!(unappliable(&res), vec!["memory", "cpu"]);
        assert!(unappliable(&LinuxResources::default()).is_empty());
    }

    #[test]
    fn bind_mounts() {
        let dir = std::env::temp_dir();
        let s = spec(&format!(
            r#"{{"ociVersion":"1.0.2","root":{{"path":"/r"}},"mounts":[
            {{"destination":"/proc","type":"proc","source":"proc"}},
            {{"destination":"/data","type":"bind","source":"{}","options":["rbind","ro"]}},
            {{"destination":"/etc/hostname","type":"bind","source":"/etc/hostname","options":["rbind"]}}]}}"#,
            dir.display()
        ));
        let m = extra_mounts(&s, Path::new("/b"));
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].guest_path, "/data");
        assert!(m[0].read_only);
        assert_eq!(rootfs_dir(&s, Path::new("/b"), false), PathBuf::from("/r"));
    }
}
