//! A CT's config file (`/etc/pve/lxc/<vmid>.conf`, this node's CTs), read and edited the way
//! Proxmox's own tools do: under the config lock `/run/lock/lxc/pve-config-<vmid>.lock`
//! (the flock every locking pct command takes), written to a temp file and renamed.
//!
//! Used for what `pct` cannot set: raw `lxc.*` keys (e.g. `lxc.init.cmd` on pve-container
//! before 6.0.15), and mount points added after `pct create` so that create, which mounts
//! every mpN read-write before extracting the template, never writes into a host directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::super::lock::FileLock;
use super::super::vmid::Vmid;
use super::{LOCK_DIR, PVE_DIR};
use crate::error::{Error, Result};

/// pct waits 10 s for a CT's config lock.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_CONF: u64 = 1 << 20;

pub fn conf_path(vmid: Vmid) -> PathBuf {
    Path::new(PVE_DIR).join("lxc").join(format!("{vmid}.conf"))
}

pub fn lock_path(vmid: Vmid) -> PathBuf {
    Path::new(LOCK_DIR).join(format!("pve-config-{vmid}.lock"))
}

/// Take the CT's config lock (bounded wait).
pub async fn lock(vmid: Vmid) -> Result<FileLock> {
    let p = lock_path(vmid);
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).map_err(|e| Error::io(format!("create {}", d.display()), e))?;
    }
    FileLock::acquire(&p, LOCK_TIMEOUT).await.map_err(|e| {
        Error::Unavailable(format!("CT {vmid}: config lock {}: {e}", p.display()))
    })
}

/// This node's config of `vmid`, if the CT exists here.
pub fn read(vmid: Vmid) -> Result<Option<String>> {
    let p = conf_path(vmid);
    super::read_capped(&p, MAX_CONF).map_err(|e| Error::io(format!("read {}", p.display()), e))
}

/// Insert `lines` at the end of the main section (before `[pve:pending]` / snapshots).
pub fn with_lines(conf: &str, lines: &[String]) -> String {
    let mut out = String::with_capacity(conf.len() + 64 * lines.len());
    let mut inserted = false;
    for l in conf.lines() {
        if !inserted && l.starts_with('[') {
            for n in lines {
                out.push_str(n);
                out.push('\n');
            }
            out.push('\n');
            inserted = true;
        }
        out.push_str(l);
        out.push('\n');
    }
    if !inserted {
        while out.ends_with("\n\n") {
            out.pop();
        }
        for n in lines {
            out.push_str(n);
            out.push('\n');
        }
    }
    out
}

/// The main section's `key: value` for `key`.
pub fn get<'a>(conf: &'a str, key: &str) -> Option<&'a str> {
    conf.lines()
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
}

/// Whether the main section's `tags:` holds `tag` (Proxmox separates with `;`, `,` or space).
pub fn has_tag(conf: &str, tag: &str) -> bool {
    get(conf, "tags")
        .map(|t| t.split([';', ',', ' ']).any(|x| x == tag))
        .unwrap_or(false)
}

/// Append `lines` to the CT's config under its lock. `lines` are `key: value` lines the
/// caller built from typed values (no newlines inside).
pub async fn append(vmid: Vmid, lines: &[String]) -> Result<()> {
    if lines.iter().any(|l| l.contains('\n') || l.contains('\r')) {
        return Err(Error::internal("config line with a newline"));
    }
    let _lock = lock(vmid).await?;
    let p = conf_path(vmid);
    let conf = read(vmid)?.ok_or_else(|| {
        Error::NotFound(format!("CT {vmid}: {} does not exist", p.display()))
    })?;
    let new = with_lines(&conf, lines);
    let tmp = p.with_file_name(format!(".{vmid}.conf.tmp.{}", std::process::id()));
    let res = std::fs::write(&tmp, new.as_bytes()).and_then(|_| std::fs::rename(&tmp, &p));
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(format!("write {}", p.display()), e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = "#Created by pvelxc\narch: amd64\nhostname: web\n\
                        tags: ns-default;pvelxc;pvelxc-ab12\n\n[pve:pending]\nmemory: 64\n";

    #[test]
    fn lines_go_into_the_main_section() {
        let n = with_lines(CONF, &["lxc.init.cmd: /.pvelxc/init".into()]);
        let main: Vec<&str> = n.lines().take_while(|l| !l.starts_with('[')).collect();
        assert!(main.contains(&"lxc.init.cmd: /.pvelxc/init"), "{n}");
        assert!(n.contains("[pve:pending]\nmemory: 64\n"), "{n}");
        let plain = with_lines("arch: amd64\n\n", &["mp0: /x,mp=/y".into()]);
        assert_eq!(plain, "arch: amd64\nmp0: /x,mp=/y\n");
    }

    #[test]
    fn tags_and_keys() {
        assert!(has_tag(CONF, "pvelxc-ab12"));
        assert!(!has_tag(CONF, "pvelxc-ab"));
        assert_eq!(get(CONF, "hostname"), Some("web"));
        assert_eq!(get(CONF, "memory"), None, "pending values are not the config");
        assert!(!has_tag("tags: x\n", "pvelxc"));
    }
}
