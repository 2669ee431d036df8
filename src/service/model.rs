//! The task service's own types: what the edge (`mod.rs`, `convert.rs`, `publish.rs`) turns
//! containerd's requests into, and what it turns back into responses and events. Nothing here
//! knows about protobuf.

use std::path::PathBuf;

use oci_spec::runtime::Process;

use super::state::ProcState;
use crate::backend::RootfsMount;
use crate::error::{Error, Result};
use crate::options::RuntimeOptions;
use crate::sys::reaper::Exit;
use crate::sys::stdio::StdioPaths;

/// CreateTask, decoded.
#[derive(Debug, Clone)]
pub struct CreateTask {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: Vec<RootfsMount>,
    pub stdio: StdioPaths,
    /// The runtime options carried by the request (None: the client sent none).
    pub options: Option<RuntimeOptions>,
    /// Whether the client asked to restore from a checkpoint.
    pub checkpoint: bool,
}

/// Exec, decoded: the process spec is already parsed.
#[derive(Debug, Clone)]
pub struct ExecTask {
    pub id: String,
    pub exec_id: String,
    pub process: Process,
    pub stdio: StdioPaths,
}

/// One process as State and Delete report it.
#[derive(Debug, Clone)]
pub struct ProcInfo {
    /// The container id for the init, else the exec id.
    pub id: String,
    pub exec_id: String,
    pub bundle: PathBuf,
    pub stdio: StdioPaths,
    pub state: ProcState,
}

/// What a task event says, in the order the service emits them. The edge gives each its
/// containerd topic and message.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskEvent {
    Create {
        id: String,
        bundle: PathBuf,
        rootfs: Vec<RootfsMount>,
        stdio: StdioPaths,
        pid: u32,
    },
    Start {
        id: String,
        pid: u32,
    },
    ExecAdded {
        id: String,
        exec_id: String,
    },
    ExecStarted {
        id: String,
        exec_id: String,
        pid: u32,
    },
    /// `exec_id` is "" for the init.
    Exit {
        id: String,
        exec_id: String,
        pid: u32,
        exit: Exit,
    },
    Paused {
        id: String,
    },
    Resumed {
        id: String,
    },
    Oom {
        id: String,
    },
    Delete {
        id: String,
        pid: u32,
        exit: Option<Exit>,
    },
}

/// Where the service's events go: containerd (`publish::Events`) or, in tests, a recorder.
/// `publish` must keep the order of calls.
pub trait EventSink: Send + Sync {
    fn publish(&self, ev: TaskEvent);
}

/// containerd's identifier rules: 1-76 chars, alphanumeric start, then [A-Za-z0-9_.-].
pub fn validate_id(what: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 76
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!("invalid {what} {id:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        validate_id("id", "abc-1.2_x").expect("ok");
        validate_id("id", &"x".repeat(76)).expect("76 is the limit");
        for bad in [
            "",
            "-x",
            ".x",
            "a/b",
            "../x",
            "a b",
            "a\nb",
            "é",
            &"x".repeat(77),
        ] {
            assert!(validate_id("id", bad).is_err(), "{bad}");
        }
    }
}
