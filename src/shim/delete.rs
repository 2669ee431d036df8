//! `delete`: containerd runs it after every shim's exit (and after a failed start). For a
//! container the service deleted, the bundle record says so and nothing is left: the answer
//! comes without starting an async runtime or calling any backend.

use std::io::Write;

use containerd_shim::Flags;
use containerd_shim_protos::protobuf::Message;

use std::path::Path;

use super::{bundle_of, socket_path};
use crate::backend::{registry, BundleRecord};
use crate::config::Config;
use crate::error::{Error, Result};

pub fn run(flags: &Flags) -> Result<()> {
    let bundle = bundle_of(flags);
    if let Some(record) = BundleRecord::load(&bundle)?.filter(|r| !r.deleted) {
        // The service did not finish a Delete: undo what the container left behind.
        if let Some(kind) = record.backend {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::io("start the async runtime", e))?;
            rt.block_on(async {
                crate::sys::reaper::start().map_err(|e| Error::io("watch SIGCHLD", e))?;
                let cfg = Config::load(record.config_path.as_deref())
                    .map(|l| l.config)
                    .unwrap_or_default();
                registry::get(kind).cleanup(&record, &cfg).await
            })?;
        }
    }
    remove_dead_socket(&bundle);
    let mut r = containerd_shim::DeleteResponse::new();
    r.exit_status = 128 + libc::SIGKILL as u32;
    r.exited_at = crate::service::timestamp_now();
    let bytes = r
        .write_to_bytes()
        .map_err(|e| Error::internal(format!("encode the delete response: {e}")))?;
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)
        .and_then(|_| out.flush())
        .map_err(|e| Error::io("write the delete response", e))
}

/// After a shim died its socket file is left behind: remove it unless a shim still answers on
/// it (another container of the pod started a new one). Only a socket named like
/// containerd's (64 hex digits) is touched.
fn remove_dead_socket(bundle: &std::path::Path) {
    let Ok(address) = std::fs::read_to_string(bundle.join("address")) else {
        return;
    };
    let path = socket_path(&address);
    if is_dead_socket(path) {
        let _ = std::fs::remove_file(path);
    }
}

/// A socket named like containerd's (64 hex digits) at `path` that nobody answers on.
fn is_dead_socket(path: &Path) -> bool {
    let named_like_ours = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()));
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_socket()
    });
    named_like_ours && is_socket && std::os::unix::net::UnixStream::connect(path).is_err()
}
