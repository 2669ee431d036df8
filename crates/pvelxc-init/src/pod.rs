//! A Kubernetes pod as one CT: the pod's sandbox is the CT (its `pause` the init's main
//! process) and every other container of the pod runs inside it, each with its own root
//! directory, mount namespace and (unless the pod shares one) pid namespace.
//!
//! The shim writes a [`ContainerSpec`] as `ctr-<name>.json` into D (host-owned, read-only in
//! the CT) and runs, through `pct exec`, one of the init binary's pod modes:
//!
//! * `pvelxc-init unpack DIR` — a tar stream on stdin (the image's cached template, GNU tar,
//!   numeric owners, sparse entries) becomes the new directory `DIR`, as CT root: ownership
//!   lands shifted into the CT's id range like any file the CT writes. Device nodes are
//!   skipped (an unprivileged CT cannot make them); no entry may leave `DIR`.
//! * `pvelxc-init container FILE` — runs the container described by FILE: a helper that
//!   stays the `pct exec` process, and the container's process below it in new namespaces.
//!   The helper forwards every signal it gets to the container's process and exits with its
//!   status (128+signal when killed); the container's process dies with the helper
//!   (`PR_SET_PDEATHSIG`).
//! * `pvelxc-init exec-in PID FILE` — an exec (FILE: a `Process`) inside the container whose
//!   process has the in-CT pid PID: its mount, pid, ipc and uts namespaces and cgroups.
//! * `pvelxc-init remove DIR` — removes a container's directory (no symlink followed).
//!
//! Mount sources are paths *inside the CT*: host paths (a pod's volumes, its hosts and
//! resolv.conf files) reach the CT through D's shared mount, under `/.pvelxc/mnt/<name>/`.

use serde::{Deserialize, Serialize};

use crate::process::Process;

/// Where the containers' root directories live in the CT.
pub const POD_DIR: &str = "/.pvelxc-pod";

/// What `pvelxc-init container` runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// The container's root directory (absolute, in the CT; made by `unpack`).
    pub root: String,
    /// OCI `root.readonly`.
    #[serde(default)]
    pub readonly_root: bool,
    /// A pid namespace of its own (Kubernetes' default); `false`: the pod's
    /// (`shareProcessNamespace`).
    #[serde(default = "yes")]
    pub new_pid_ns: bool,
    /// OCI mounts, in order, sources already translated to CT paths.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// OCI `linux.maskedPaths` / `linux.readonlyPaths`.
    #[serde(default)]
    pub masked_paths: Vec<String>,
    #[serde(default)]
    pub readonly_paths: Vec<String>,
    /// The container's own cgroup below the CT's, with its limits.
    #[serde(default)]
    pub cgroup: Option<CgroupSpec>,
    /// The process (config.json's `process`).
    pub process: Process,
}

fn yes() -> bool {
    true
}

/// One mount of the container, applied in order below its root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute path in the container.
    pub destination: String,
    #[serde(flatten)]
    pub kind: MountKind,
    /// OCI options (`ro`, `nosuid`, `nodev`, `noexec`, `mode=…`, `size=…`, `rbind`, …).
    #[serde(default)]
    pub options: Vec<String>,
}

/// The mount types a pod container gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MountKind {
    /// A fresh proc (the container's pid namespace).
    Proc,
    /// A fresh tmpfs; when the destination is `/dev`, the CT's null, zero, full, random,
    /// urandom and tty are bound into it, with the usual /dev/fd, stdin/out/err and ptmx links.
    Tmpfs,
    /// A fresh devpts instance (`newinstance`, `ptmxmode=0666`).
    Devpts,
    /// A fresh mqueue (the pod's ipc namespace).
    Mqueue,
    /// The CT's /sys, bound read-only.
    Sysfs,
    /// The container's own cgroup directories, bound read-only.
    Cgroup,
    /// A bind mount of a CT path (`rbind` in options: recursive).
    Bind { source: String },
}

/// The container's cgroup: `<the helper's cgroup>/<name>` in every hierarchy the CT may write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupSpec {
    /// One path component: `[A-Za-z0-9_.-]`, at most 64 bytes.
    pub name: String,
    #[serde(default)]
    pub memory_limit: Option<i64>,
    #[serde(default)]
    pub cpu_shares: Option<u64>,
    #[serde(default)]
    pub cpu_quota: Option<i64>,
    #[serde(default)]
    pub cpu_period: Option<u64>,
    #[serde(default)]
    pub pids_limit: Option<i64>,
}

/// A name the shim may use as one path component in the CT (`ctr-<name>.json`, cgroup names,
/// directories under [`POD_DIR`]).
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Parse and check a `ctr-<name>.json`: absolute paths without `..`, a valid cgroup name,
/// non-empty args.
pub fn parse_spec(b: &[u8]) -> Result<ContainerSpec, String> {
    let s: ContainerSpec = serde_json::from_slice(b).map_err(|e| format!("container json: {e}"))?;
    let abs = |what: &str, p: &str| -> Result<(), String> {
        if !p.starts_with('/') || p.split('/').any(|c| c == "..") || p.contains('\0') {
            return Err(format!(
                "container json: {what} {p:?} is not a clean absolute path"
            ));
        }
        Ok(())
    };
    abs("root", &s.root)?;
    for m in &s.mounts {
        abs("mount destination", &m.destination)?;
        if let MountKind::Bind { source } = &m.kind {
            abs("mount source", source)?;
        }
    }
    for p in s.masked_paths.iter().chain(&s.readonly_paths) {
        abs("path", p)?;
    }
    if let Some(cg) = &s.cgroup {
        if !valid_name(&cg.name) {
            return Err(format!("container json: bad cgroup name {:?}", cg.name));
        }
    }
    if s.process.args.is_empty() {
        return Err("container json: process args must not be empty".into());
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_roundtrip_and_checks() {
        let j = br#"{"root":"/.pvelxc-pod/c1/rootfs","mounts":[
            {"destination":"/proc","type":"proc"},
            {"destination":"/etc/hosts","type":"bind","source":"/.pvelxc/mnt/c1/0","options":["ro"]}],
            "process":{"args":["/bin/sh"]}}"#;
        let s = parse_spec(j).unwrap();
        assert!(s.new_pid_ns);
        assert_eq!(s.mounts.len(), 2);
        assert_eq!(
            s.mounts[1].kind,
            MountKind::Bind {
                source: "/.pvelxc/mnt/c1/0".into()
            }
        );
        let back = serde_json::to_vec(&s).unwrap();
        assert_eq!(parse_spec(&back).unwrap(), s);
        let bad = br#"{"root":"/a/../b","process":{"args":["x"]}}"#;
        assert!(parse_spec(bad).unwrap_err().contains("clean absolute"));
        let bad = br#"{"root":"/a","process":{"args":[]}}"#;
        assert!(parse_spec(bad).is_err());
        let bad = br#"{"root":"/a","cgroup":{"name":"../x"},"process":{"args":["x"]}}"#;
        assert!(parse_spec(bad).unwrap_err().contains("cgroup name"));
    }

    #[test]
    fn names() {
        assert!(valid_name("abc-1.2_3"));
        for b in ["", ".", "..", "a/b", "a b", &"x".repeat(65)] {
            assert!(!valid_name(b), "{b:?}");
        }
    }
}
