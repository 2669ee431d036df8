//! Kubernetes pods as CTs: the pod's sandbox is one CT (its `pause` the init's main process,
//! its network the one CRI's CNI made, moved in: [`net`]) and every other container of the pod
//! runs inside that CT ([`container`]): its image unpacked into the CT by the init, its host
//! mounts propagated in through D ([`mounts`]), its process in its own mount and pid
//! namespaces and cgroup (crates/pvelxc-init/src/pod.rs is the init's half).
//!
//! One shim per pod (containerd groups a pod's containers by `io.kubernetes.cri.sandbox-id`),
//! so the pod's containers find their CT in this process: [`Pods`].

pub mod cgroup;
pub mod container;
pub mod inct;
pub mod limits;
pub mod mounts;
pub mod net;
pub mod sizing;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use oci_spec::runtime::{Capability, LinuxNamespaceType, Spec};

use super::ctdir::CtDir;
use super::runner::Pct;
use super::vmid::Vmid;
use crate::error::{Error, Result};

/// CRI marks sandboxes and pod containers with this annotation.
pub const CRI_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// The pod a CRI container belongs to (the sandbox's container id).
pub const CRI_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// What a container is to the pct backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Not a Kubernetes pod's: a CT of its own.
    Single,
    /// A pod's sandbox: the pod's CT.
    Sandbox,
    /// A container of the pod whose sandbox has this id.
    Member { sandbox: String },
}

/// The role from CRI's annotations; an unknown container type or a member without its pod's
/// id is refused.
pub fn role(annotations: &HashMap<String, String>) -> Result<Role> {
    match annotations.get(CRI_CONTAINER_TYPE).map(String::as_str) {
        None => Ok(Role::Single),
        Some("sandbox") => Ok(Role::Sandbox),
        Some("container") => match annotations.get(CRI_SANDBOX_ID) {
            Some(s) if !s.is_empty() => Ok(Role::Member { sandbox: s.clone() }),
            _ => Err(Error::invalid(format!(
                "a CRI container without {CRI_SANDBOX_ID}: the pct backend cannot tell its pod"
            ))),
        },
        Some(other) => Err(Error::invalid(format!(
            "{CRI_CONTAINER_TYPE} = {other:?}: expected \"sandbox\" or \"container\""
        ))),
    }
}

/// What a pod's sandbox spec asks that a CT cannot give, refused naming the pod's field: the
/// host's network, pid or IPC namespace (a CT always has its own).
pub fn admit_sandbox(spec: &Spec) -> Result<()> {
    net::cni_netns(spec)?;
    let nss = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    for (typ, field) in [
        (LinuxNamespaceType::Pid, "hostPID"),
        (LinuxNamespaceType::Ipc, "hostIPC"),
    ] {
        if !nss.iter().any(|n| n.typ() == typ) {
            return Err(Error::Unimplemented(format!(
                "{field}: a pod sharing the host's {typ:?} namespace cannot run as a Proxmox CT \
                 (a CT always has its own); run it with a runtime handler routed to crun or runc"
            )));
        }
    }
    Ok(())
}

/// `securityContext.privileged`: containerd gives such a container every capability and
/// neither masked nor read-only paths (besides all host devices), which an unprivileged CT
/// cannot honour. Refused before anything is made for it.
pub fn admit_member(spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();
    let empty = |v: Option<&Vec<String>>| v.is_none_or(|v| v.is_empty());
    let unmasked = empty(linux.and_then(|l| l.masked_paths().as_ref()))
        && empty(linux.and_then(|l| l.readonly_paths().as_ref()));
    let sys_admin = spec
        .process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
        .and_then(|c| c.bounding().as_ref())
        .is_some_and(|b| b.contains(&Capability::SysAdmin));
    if unmasked && sys_admin {
        return Err(Error::Unimplemented(
            "securityContext.privileged: a privileged container (every capability, host \
             devices, unmasked /proc and /sys) cannot run in an unprivileged Proxmox CT; run its \
             pod with a runtime handler routed to crun or runc"
                .into(),
        ));
    }
    Ok(())
}

/// A running pod CT: what its containers need.
pub struct PodCt {
    /// The sandbox's id (the pod's key here).
    pub sandbox: String,
    pub vmid: Vmid,
    pub dir: Arc<CtDir>,
    pub pct: Pct,
    /// Host pid of the CT's init (PID 1 inside).
    pub init_host_pid: u32,
}

/// The pods of this shim, by sandbox id. Weak: a pod is gone with its sandbox's instance.
#[derive(Default)]
pub struct Pods {
    map: Mutex<HashMap<String, Weak<PodCt>>>,
}

impl Pods {
    pub fn insert(&self, pod: &Arc<PodCt>) {
        if let Ok(mut m) = self.map.lock() {
            m.retain(|_, w| w.strong_count() > 0);
            m.insert(pod.sandbox.clone(), Arc::downgrade(pod));
        }
    }

    pub fn get(&self, sandbox: &str) -> Result<Arc<PodCt>> {
        self.map
            .lock()
            .ok()
            .and_then(|m| m.get(sandbox).and_then(Weak::upgrade))
            .ok_or_else(|| {
                Error::precondition(format!(
                    "pod sandbox {sandbox} does not run in this shim: the pct backend runs a \
                     pod's containers inside its sandbox's CT, so the sandbox must be created \
                     by the same runtime handler first"
                ))
            })
    }
}

/// A name for a pod container that is one safe path component (`pvelxc_init::pod::valid_name`):
/// the id itself when it is one (CRI's ids are 64 hex digits), else a cleaned prefix plus a
/// hash of the whole id.
pub fn ctr_name(id: &str) -> String {
    if pvelxc_init::pod::valid_name(id) {
        return id.to_string();
    }
    let clean: String = super::exec::safe_name(id).chars().take(40).collect();
    let mut h: u64 = 0xcbf29ce484222325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{clean}-{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testutil::ann;

    fn sandbox(kinds: &[LinuxNamespaceType]) -> Spec {
        use oci_spec::runtime::{LinuxBuilder, LinuxNamespaceBuilder, SpecBuilder};
        let nss: Vec<_> = kinds
            .iter()
            .map(|k| LinuxNamespaceBuilder::default().typ(*k).build().unwrap())
            .collect();
        SpecBuilder::default()
            .linux(LinuxBuilder::default().namespaces(nss).build().unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn host_namespaces_of_a_pod_are_refused_by_field() {
        use LinuxNamespaceType::*;
        assert!(admit_sandbox(&sandbox(&[Network, Pid, Ipc, Uts, Mount])).is_ok());
        for (nss, field) in [
            (vec![Pid, Ipc, Mount], "hostNetwork"),
            (vec![Network, Ipc, Mount], "hostPID"),
            (vec![Network, Pid, Mount], "hostIPC"),
        ] {
            let e = admit_sandbox(&sandbox(&nss)).unwrap_err();
            assert!(matches!(e, Error::Unimplemented(_)), "{e:?}");
            assert!(e.to_string().contains(field), "{e}");
        }
    }

    #[test]
    fn privileged_members_are_refused_by_field() {
        // The default spec: runc's default capabilities and masked paths (not privileged).
        let mut s = Spec::default();
        assert!(admit_member(&s).is_ok());
        // What containerd's WithPrivileged makes: every capability, nothing masked.
        let all: std::collections::HashSet<Capability> = [
            Capability::SysAdmin,
            Capability::NetAdmin,
            Capability::Chown,
        ]
        .into();
        let mut p = s.process().clone().unwrap();
        let mut caps = p.capabilities().clone().unwrap();
        caps.set_bounding(Some(all.clone()));
        p.set_capabilities(Some(caps));
        s.set_process(Some(p));
        // Capabilities alone (securityContext.capabilities.add) are not privileged.
        assert!(admit_member(&s).is_ok());
        let mut l = s.linux().clone().unwrap();
        l.set_masked_paths(None);
        l.set_readonly_paths(Some(Vec::new()));
        s.set_linux(Some(l));
        let e = admit_member(&s).unwrap_err();
        assert!(e.to_string().contains("securityContext.privileged"), "{e}");
    }

    #[test]
    fn roles() {
        assert_eq!(role(&ann(&[])).unwrap(), Role::Single);
        assert_eq!(
            role(&ann(&[(CRI_CONTAINER_TYPE, "sandbox")])).unwrap(),
            Role::Sandbox
        );
        assert_eq!(
            role(&ann(&[
                (CRI_CONTAINER_TYPE, "container"),
                (CRI_SANDBOX_ID, "p1")
            ]))
            .unwrap(),
            Role::Member {
                sandbox: "p1".into()
            }
        );
        assert!(role(&ann(&[(CRI_CONTAINER_TYPE, "container")])).is_err());
        assert!(role(&ann(&[(CRI_CONTAINER_TYPE, "vm")])).is_err());
    }

    #[test]
    fn names_are_safe_and_distinct() {
        let id = "a".repeat(64);
        assert_eq!(ctr_name(&id), id);
        for odd in ["a/b", "a b", "..", &"x".repeat(200)] {
            let n = ctr_name(odd);
            assert!(pvelxc_init::pod::valid_name(&n), "{odd:?} -> {n:?}");
        }
        assert_ne!(ctr_name("a/b"), ctr_name("a_b"));
    }

    #[test]
    fn a_missing_pod_says_why() {
        let p = Pods::default();
        let e = p.get("nope").err().unwrap().to_string();
        assert!(e.contains("nope") && e.contains("sandbox"), "{e}");
    }
}
