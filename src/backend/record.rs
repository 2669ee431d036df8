//! What the shim persists in the bundle (`pvelxc.json`), so that every later call and the
//! `delete` action of a fresh shim process (after a crash) reach the same backend with the
//! same settings and find what the container left behind.
//!
//! One way: the service writes the record once, before the backend runs, and hands the
//! backend a [`Recorder`]; the backend only ever *sets* its own typed state through it (as
//! soon as it has made something a crash would leave behind), and only `cleanup` reads it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::config::BackendKind;
use crate::error::{Error, Result};

pub const RECORD_FILE: &str = "pvelxc.json";

/// crun / runc: which binary and which state root the container lives in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OciRecord {
    pub binary: String,
    pub root: String,
}

/// pct: the CT this container owns (VMID, ownership token) and its per-CT directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PctRecord {
    pub vmid: u32,
    pub token: String,
    pub dir: PathBuf,
    /// A linked clone's template token: until its `pct set` the clone carries the template's
    /// tags, and a crash cleanup may destroy such a non-template CT of our VMID.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub template_token: String,
}

/// vm: the state directory, the QEMU cgroup (relative to the hierarchy roots), QEMU's pid.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    pub state_dir: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qemu_pid: Option<u32>,
}

/// A backend's own part of the record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum BackendState {
    /// Nothing made yet (or everything undone).
    #[default]
    None,
    Oci(OciRecord),
    Pct(PctRecord),
    Vm(VmRecord),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BundleRecord {
    pub backend: Option<BackendKind>,
    pub namespace: String,
    pub id: String,
    pub config_path: Option<String>,
    #[serde(default)]
    pub state: BackendState,
    /// The string map of earlier versions, read only so that their containers are still
    /// cleaned up after an upgrade (see [`BundleRecord::backend_state`]).
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub data: HashMap<String, String>,
    /// Set once the task service deleted the container: nothing is left for the `delete`
    /// action, which then returns at once (containerd runs it after every shim's exit).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

impl BundleRecord {
    pub fn path(bundle: &Path) -> PathBuf {
        bundle.join(RECORD_FILE)
    }

    pub fn load(bundle: &Path) -> Result<Option<BundleRecord>> {
        let p = Self::path(bundle);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(serde_json::from_slice(&b).map_err(|e| {
                Error::internal(format!("corrupt {}: {e}", p.display()))
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("read {}", p.display()), e)),
        }
    }

    /// Write atomically (tmp + rename) so a crash never leaves half a record.
    pub fn save(&self, bundle: &Path) -> Result<()> {
        let p = Self::path(bundle);
        let tmp = bundle.join(format!(".{RECORD_FILE}.tmp"));
        let data = serde_json::to_vec_pretty(self)?;
        std::fs::write(&tmp, data)
            .and_then(|_| std::fs::rename(&tmp, &p))
            .map_err(|e| Error::io(format!("write {}", p.display()), e))
    }

    /// Mark the record of `bundle` deleted (see [`BundleRecord::deleted`]).
    pub fn mark_deleted(bundle: &Path) -> Result<()> {
        let Some(mut r) = Self::load(bundle)? else {
            return Ok(());
        };
        r.deleted = true;
        r.state = BackendState::None;
        r.data.clear();
        r.save(bundle)
    }

    /// The backend's state, from this version's typed field or an earlier version's map.
    pub fn backend_state(&self) -> BackendState {
        if self.state != BackendState::None || self.data.is_empty() {
            return self.state.clone();
        }
        let d = &self.data;
        let s = |k: &str| d.get(k).cloned();
        match self.backend {
            Some(BackendKind::Crun | BackendKind::Runc) => BackendState::Oci(OciRecord {
                binary: s("binary").unwrap_or_default(),
                root: s("root").unwrap_or_default(),
            }),
            Some(BackendKind::Pct) => match s("vmid").and_then(|v| v.parse().ok()) {
                Some(vmid) => BackendState::Pct(PctRecord {
                    vmid,
                    token: s("token").unwrap_or_default(),
                    dir: s("dir").map(PathBuf::from).unwrap_or_default(),
                    template_token: String::new(),
                }),
                None => BackendState::None,
            },
            Some(BackendKind::Vm) => match s("state_dir") {
                Some(dir) => BackendState::Vm(VmRecord {
                    state_dir: dir.into(),
                    cgroup: s("cgroup"),
                    qemu_pid: s("qemu_pid").and_then(|p| p.parse().ok()),
                }),
                None => BackendState::None,
            },
            None => BackendState::None,
        }
    }
}

/// The backend's handle on the record during create: it sets its state, nothing else.
pub struct Recorder {
    bundle: PathBuf,
    record: Mutex<BundleRecord>,
}

impl Recorder {
    /// Save `record` (the service's part) now and keep it for the backend's updates.
    pub fn start(bundle: &Path, record: BundleRecord) -> Result<Recorder> {
        record.save(bundle)?;
        Ok(Recorder {
            bundle: bundle.to_path_buf(),
            record: Mutex::new(record),
        })
    }

    /// Replace the backend's state and write the record (atomically).
    pub fn set(&self, state: BackendState) -> Result<()> {
        let mut r = self.record.lock().unwrap_or_else(|p| p.into_inner());
        r.state = state;
        r.save(&self.bundle)
    }

    /// A recorder that writes into `bundle` with an empty service part (tests).
    #[cfg(test)]
    pub fn scratch(bundle: &Path) -> Recorder {
        Recorder {
            bundle: bundle.to_path_buf(),
            record: Mutex::new(BundleRecord::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_one_way_updates() {
        let dir = tempfile::tempdir().expect("dir");
        assert_eq!(BundleRecord::load(dir.path()).expect("load"), None);
        let base = BundleRecord {
            backend: Some(BackendKind::Pct),
            namespace: "default".into(),
            id: "c1".into(),
            ..Default::default()
        };
        let rec = Recorder::start(dir.path(), base.clone()).expect("start");
        assert_eq!(BundleRecord::load(dir.path()).expect("load"), Some(base));
        let pct = BackendState::Pct(PctRecord {
            vmid: 700001,
            token: "pvelxc-0123456789ab".into(),
            dir: "/var/lib/pvelxc/ct/700001".into(),
            template_token: "pvelxc-ba9876543210".into(),
        });
        rec.set(pct.clone()).expect("set");
        let back = BundleRecord::load(dir.path()).expect("load").expect("some");
        assert_eq!(back.backend_state(), pct);
        assert_eq!(back.id, "c1");
        rec.set(BackendState::None).expect("clear");
        let back = BundleRecord::load(dir.path()).expect("load").expect("some");
        assert_eq!(back.backend_state(), BackendState::None);
        BundleRecord::mark_deleted(dir.path()).expect("mark");
        let back = BundleRecord::load(dir.path()).expect("load").expect("some");
        assert!(back.deleted);
        assert_eq!(back.backend_state(), BackendState::None);
        std::fs::write(BundleRecord::path(dir.path()), b"{").expect("corrupt");
        assert!(BundleRecord::load(dir.path()).is_err());
    }

    #[test]
    fn records_of_earlier_versions_still_clean_up() {
        let old = |backend: &str, data: &str| -> BundleRecord {
            serde_json::from_str(&format!(
                r#"{{"backend":"{backend}","namespace":"n","id":"c","config_path":null,"data":{data}}}"#
            ))
            .expect("old record")
        };
        assert_eq!(
            old(
                "crun",
                r#"{"binary":"/usr/bin/crun","root":"/run/pvelxc/crun/n"}"#
            )
            .backend_state(),
            BackendState::Oci(OciRecord {
                binary: "/usr/bin/crun".into(),
                root: "/run/pvelxc/crun/n".into()
            })
        );
        assert_eq!(
            old(
                "pct",
                r#"{"vmid":"700003","token":"pvelxc-aa","dir":"/d/700003"}"#
            )
            .backend_state(),
            BackendState::Pct(PctRecord {
                vmid: 700003,
                token: "pvelxc-aa".into(),
                dir: "/d/700003".into(),
                template_token: String::new(),
            })
        );
        assert_eq!(
            old("pct", r#"{"vmid":"x"}"#).backend_state(),
            BackendState::None
        );
        assert_eq!(
            old(
                "vm",
                r#"{"state_dir":"/s","qemu_pid":"42","cgroup":"pvelxc/n/c"}"#
            )
            .backend_state(),
            BackendState::Vm(VmRecord {
                state_dir: "/s".into(),
                cgroup: Some("pvelxc/n/c".into()),
                qemu_pid: Some(42)
            })
        );
        assert_eq!(old("vm", "{}").backend_state(), BackendState::None);
    }
}
