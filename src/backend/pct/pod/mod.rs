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
pub mod limits;
pub mod mounts;
pub mod net;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

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

    fn ann(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
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
