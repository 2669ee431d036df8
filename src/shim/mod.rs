//! The shim process's three lives, as containerd starts them (`-namespace … -id … ACTION`):
//! - `start` ([`start`]): bind the task socket (or find the pod's shim already serving), spawn
//!   the server on it and print its address; it does not wait for the server, whose socket
//!   already queues containerd's connection (as the Go shims do);
//! - no action ([`serve`]): the task service on that socket until Shutdown;
//! - `delete` ([`delete`]): after the server is gone, undo what a container left behind —
//!   nothing at all for a container the service deleted.

use std::path::{Path, PathBuf};

mod delete;
mod serve;
mod start;

/// Containers carrying this annotation with the same value share one shim (a pod).
pub const GROUP_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

/// Run the action containerd asked for; the process's exit code.
pub fn main(args: &[String]) -> i32 {
    let flags = match containerd_shim::parse(args) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{}: {e}", crate::RUNTIME_NAME);
            return 1;
        }
    };
    let result = match flags.action.as_str() {
        "start" => start::run(&flags),
        "delete" => delete::run(&flags),
        "" => serve::run(&flags),
        other => Err(crate::error::Error::invalid(format!(
            "unknown action {other:?}"
        ))),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{}: {e}", crate::RUNTIME_NAME);
            1
        }
    }
}

/// The bundle: `-bundle`, else the working directory containerd started us in.
fn bundle_of(flags: &containerd_shim::Flags) -> PathBuf {
    if flags.bundle.is_empty() {
        std::env::current_dir().unwrap_or_default()
    } else {
        PathBuf::from(&flags.bundle)
    }
}

/// The unix socket path of a `unix://` address.
fn socket_path(address: &str) -> &Path {
    Path::new(address.trim().trim_start_matches("unix://"))
}

/// The pod a container belongs to, from its config.json annotations.
fn group_of(bundle: &Path) -> Option<String> {
    let text = std::fs::read(bundle.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&text).ok()?;
    let g = v.get("annotations")?.get(GROUP_ANNOTATION)?.as_str()?;
    crate::service::valid_id(g).then(|| g.to_string())
}
