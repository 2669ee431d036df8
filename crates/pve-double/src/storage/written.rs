//! Accounting of the rootfs data a storage writes: `pct create` (the extracted archive),
//! `pct clone` (a linked clone's private layer, a full clone's copy). One JSON line per
//! volume in `$ROOT/rootfs-writes.log`:
//! `{"op":"clone","vmid":101,"volume":"local-lvm:vm-101-disk-0","bytes":0,"time":T}`.
//! Bytes are the sizes of the regular files the operation put into the volume (file data,
//! not file system metadata).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::paths::Root;

pub fn log_path(root: &Root) -> PathBuf {
    root.root.join("rootfs-writes.log")
}

/// Sum of the sizes of the regular files below `dir` (symlinks not followed, one file system).
pub fn tree_bytes(dir: &Path) -> u64 {
    let Ok(top) = fs::symlink_metadata(dir) else {
        return 0;
    };
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() && m.dev() == top.dev() {
                stack.push(e.path());
            } else if m.is_file() {
                total += m.len();
            }
        }
    }
    total
}

/// Append one accounting line (single O_APPEND write).
pub fn record(root: &Root, op: &str, vmid: u32, volume: &str, bytes: u64) {
    let time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let v = serde_json::json!({
        "op": op, "vmid": vmid, "volume": volume, "bytes": bytes,
        "time": (time * 1000.0).round() / 1000.0,
    });
    if let Ok(mut f) = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(root))
    {
        let _ = f.write_all(format!("{v}\n").as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_file_bytes() {
        let d = std::env::temp_dir().join(format!("double-written-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("a/b")).unwrap();
        fs::write(d.join("a/x"), b"12345").unwrap();
        fs::write(d.join("a/b/y"), b"123").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.join("l")).unwrap();
        assert_eq!(tree_bytes(&d), 8);
        assert_eq!(tree_bytes(&d.join("none")), 0);
        fs::remove_dir_all(&d).unwrap();
    }
}
