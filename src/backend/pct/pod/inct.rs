//! What a pod container is inside its pod's CT: the spec its init reads, the `pct exec … init`
//! calls that unpack and remove its root, the in-CT view of its processes, and the rollback of
//! a Create that did not finish ([`Undo`]).

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use oci_spec::runtime::{Process, Spec};
use pvelxc_init::pod::{ContainerSpec, POD_DIR};

use super::{mounts, PodCt};
use crate::backend::pct::ctdir::CT_DIR;
use crate::backend::pct::exec;
use crate::error::{Error, Result};
use crate::sys::command::Cmd;

/// The in-CT spec of the container (`ctr-<name>.json`).
pub fn container_spec(
    spec: &Spec,
    process: &Process,
    name: &str,
    share_pid: bool,
) -> Result<(ContainerSpec, Vec<mounts::HostBind>)> {
    let (mounts, binds) = mounts::translate(spec, name, CT_DIR)?;
    let linux = spec.linux().as_ref();
    let process = serde_json::to_value(process)
        .and_then(serde_json::from_value)
        .map_err(|e| Error::invalid(format!("the spec's process: {e}")))?;
    Ok((
        ContainerSpec {
            root: format!("{}/rootfs", ct_dir_of(name)),
            readonly_root: spec
                .root()
                .as_ref()
                .and_then(|r| r.readonly())
                .unwrap_or(false),
            new_pid_ns: !share_pid,
            mounts,
            masked_paths: linux
                .and_then(|l| l.masked_paths().clone())
                .unwrap_or_default(),
            readonly_paths: linux
                .and_then(|l| l.readonly_paths().clone())
                .unwrap_or_default(),
            cgroup: None,
            process,
        },
        binds,
    ))
}

/// The container's directory inside the CT (its `rootfs` and nothing else of the shim's).
pub fn ct_dir_of(name: &str) -> String {
    format!("{POD_DIR}/{name}")
}

/// `shareProcessNamespace`: CRI then names the sandbox's pid namespace in the container's spec.
pub fn shares_pod_pid(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter().any(|n| {
                n.typ() == oci_spec::runtime::LinuxNamespaceType::Pid && n.path().is_some()
            })
        })
}

pub fn init_in_ct() -> String {
    format!("{CT_DIR}/init")
}

/// Run `pct exec VMID -- init ARGS` to completion (stdin: `stdin`), failing on a non-zero exit.
pub async fn pct_init(
    pod: &PodCt,
    args: &[&str],
    stdin: Option<OwnedFd>,
    t: Duration,
) -> Result<()> {
    let mut argv: Vec<String> = vec![
        pod.pct.program().to_string(),
        "exec".into(),
        pod.vmid.to_string(),
        "--".into(),
        init_in_ct(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    let mut c = Cmd::new(argv).timeout(t).grace(Duration::from_secs(2));
    if let Some(fd) = stdin {
        c = c.stdin(fd);
    }
    c.checked_stdout().await.map(|_| ())
}

/// The in-CT pid of host pid `pid` (the second NSpid field: the shim's view first, the CT's
/// next).
pub fn ct_pid(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let l = s.lines().find_map(|l| l.strip_prefix("NSpid:"))?;
    l.split_whitespace().nth(1)?.parse().ok()
}

/// `pid` and every descendant (bounded).
pub fn tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() && out.len() < 4096 {
        let c = exec::children(out[i]);
        out.extend(c);
        i += 1;
    }
    out
}

/// What a pod container's Create has made so far, undone newest first unless [`Undo::disarm`]
/// is called: [`Undo::rollback`] on an error, and, should the Create be dropped half-way (a
/// panic, a cancelled request), a background rollback from `Drop`. Nothing is left in the CT
/// or in D either way.
pub struct Undo {
    /// None once disarmed or undone.
    steps: Option<Steps>,
}

impl Undo {
    pub fn new(pod: Arc<PodCt>, name: &str, timeout: Duration) -> Self {
        Undo {
            steps: Some(Steps {
                pod,
                name: name.to_string(),
                timeout,
                root: None,
                mounts: false,
                spec: false,
            }),
        }
    }

    fn note(&mut self, f: impl FnOnce(&mut Steps)) {
        if let Some(s) = self.steps.as_mut() {
            f(s);
        }
    }

    pub fn made_root(&mut self, root: &str) {
        self.note(|s| s.root = Some(root.to_string()));
    }

    pub fn made_mounts(&mut self) {
        self.note(|s| s.mounts = true);
    }

    pub fn made_spec(&mut self) {
        self.note(|s| s.spec = true);
    }

    /// Create succeeded: keep everything.
    pub fn disarm(mut self) {
        self.steps = None;
    }

    /// Undo everything now (awaited).
    pub async fn rollback(mut self) {
        if let Some(s) = self.steps.take() {
            s.run().await;
        }
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        let Some(steps) = self.steps.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(steps.run());
            }
            Err(_) => log::warn!(
                "pod container {}: create abandoned outside the runtime, nothing undone",
                steps.name
            ),
        }
    }
}

/// What there is to undo.
struct Steps {
    pod: Arc<PodCt>,
    name: String,
    timeout: Duration,
    root: Option<String>,
    mounts: bool,
    spec: bool,
}

impl Steps {
    async fn run(self) {
        if self.spec {
            self.pod.dir.remove_ctr_spec(&self.name);
        }
        if self.mounts {
            let (d, n) = (self.pod.dir.path().to_path_buf(), self.name.clone());
            let _ = tokio::task::spawn_blocking(move || mounts::detach(&d, &n)).await;
        }
        if let Some(root) = self.root {
            if let Err(e) = pct_init(&self.pod, &["remove", &root], None, self.timeout).await {
                log::warn!(
                    "pod container {}: remove {root} in CT {}: {e}",
                    self.name,
                    self.pod.vmid
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, MountBuilder, ProcessBuilder,
        RootBuilder, SpecBuilder,
    };

    fn spec(pid_path: Option<&str>) -> Spec {
        let mut ns = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Pid);
        if let Some(p) = pid_path {
            ns = ns.path(p);
        }
        SpecBuilder::default()
            .root(
                RootBuilder::default()
                    .path("rootfs")
                    .readonly(true)
                    .build()
                    .unwrap(),
            )
            .mounts(vec![
                MountBuilder::default()
                    .destination("/proc")
                    .typ("proc")
                    .source("proc")
                    .build()
                    .unwrap(),
                MountBuilder::default()
                    .destination("/etc/hosts")
                    .typ("bind")
                    .source("/var/lib/k/hosts")
                    .options(vec!["rbind".to_string(), "ro".to_string()])
                    .build()
                    .unwrap(),
            ])
            .linux(
                LinuxBuilder::default()
                    .namespaces(vec![ns.build().unwrap()])
                    .masked_paths(vec!["/proc/kcore".to_string()])
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    }

    #[test]
    fn the_init_gets_ct_paths_and_the_process() {
        let s = spec(None);
        let p = ProcessBuilder::default()
            .args(vec![
                "sh".to_string(),
                "-c".to_string(),
                "exit 3".to_string(),
            ])
            .cwd("/")
            .build()
            .unwrap();
        let (c, binds) = container_spec(&s, &p, "c1", shares_pod_pid(&s)).unwrap();
        assert_eq!(c.root, format!("{POD_DIR}/c1/rootfs"));
        assert!(c.readonly_root && c.new_pid_ns);
        assert_eq!(c.masked_paths, vec!["/proc/kcore".to_string()]);
        assert_eq!(c.process.args, vec!["sh", "-c", "exit 3"]);
        assert_eq!(binds.len(), 1);
        // What the init parses is what the shim wrote.
        let json = serde_json::to_vec(&c).unwrap();
        assert_eq!(pvelxc_init::pod::parse_spec(&json).unwrap(), c);
    }

    #[test]
    fn a_pid_namespace_path_means_the_pods() {
        assert!(!shares_pod_pid(&spec(None)));
        assert!(shares_pod_pid(&spec(Some("/proc/42/ns/pid"))));
    }

    #[test]
    fn nspid_and_trees_come_from_proc() {
        let me = std::process::id();
        assert!(tree(me).contains(&me));
        // This process is in the shim's (host) view only: no second NSpid field unless the
        // test runs in a pid namespace of its own.
        let s = std::fs::read_to_string(format!("/proc/{me}/status")).unwrap();
        let fields = s
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .map(|l| l.split_whitespace().count())
            .unwrap_or(0);
        assert_eq!(ct_pid(me).is_some(), fields > 1);
    }
}
