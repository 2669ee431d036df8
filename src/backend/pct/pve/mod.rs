//! What a Proxmox VE host tells the shim through its own files and tools (never the HTTP API):
//! the pve-container version ([`version`]), storages ([`storage`]), the cluster's VMIDs
//! ([`cluster`]) and the CT config files edited under Proxmox's own config lock ([`ctconf`]).
//! Paths are the real ones; tests run the shim in a mount namespace shaped like a PVE node
//! (crates/pve-double's `pve-shape`), so nothing here knows about the double.

pub mod cluster;
pub mod ctconf;
pub mod storage;
pub mod version;

use std::io::Read;
use std::path::Path;

/// The cluster file system (pmxcfs).
pub const PVE_DIR: &str = "/etc/pve";
/// Where pct's per-CT config locks live.
pub const LOCK_DIR: &str = "/run/lock/lxc";

/// Read at most `cap` bytes of a host file; `Ok(None)` when it does not exist, an error
/// when it is larger than `cap` (a corrupt or hostile file must not exhaust memory).
pub fn read_capped(p: &Path, cap: u64) -> std::io::Result<Option<String>> {
    let f = match std::fs::File::open(p) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut buf = Vec::new();
    f.take(cap + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > cap {
        return Err(std::io::Error::other(format!(
            "{} is larger than {cap} bytes",
            p.display()
        )));
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}
