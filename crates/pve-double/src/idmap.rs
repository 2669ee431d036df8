//! Unprivileged containers: root in the CT is uid/gid 100000 on the host.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::error::{Context, Result};

/// First host id of the default mapping.
pub const BASE: u32 = 100_000;
/// Number of ids mapped.
pub const COUNT: u32 = 65_536;

/// Ensure `/etc/subuid` and `/etc/subgid` delegate `root:100000:65536` (as on a PVE host).
pub fn ensure_subids() -> Result<()> {
    ensure_subid_file(Path::new("/etc/subuid"))?;
    ensure_subid_file(Path::new("/etc/subgid"))
}

fn ensure_subid_file(p: &Path) -> Result<()> {
    let want = format!("root:{BASE}:{COUNT}");
    let cur = fs::read_to_string(p).unwrap_or_default();
    if cur.lines().any(|l| l.trim() == want) {
        return Ok(());
    }
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .ctx(|| format!("unable to open '{}'", p.display()))?;
    let sep = if cur.is_empty() || cur.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    f.write_all(format!("{sep}{want}\n").as_bytes())
        .ctx(|| format!("unable to write '{}'", p.display()))
}

/// The lxc.idmap lines for the default mapping.
pub fn lxc_idmap_lines() -> [String; 2] {
    [format!("u 0 {BASE} {COUNT}"), format!("g 0 {BASE} {COUNT}")]
}

/// Map an id into the container range (ids already shifted or out of range stay as they are).
pub fn shift_id(id: u32) -> u32 {
    if id < COUNT {
        id + BASE
    } else {
        id
    }
}

/// Shift ownership of a tree by [`BASE`] (lchown walk, symlinks not followed); restores
/// setuid/setgid bits that chown clears.
pub fn shift_tree(root: &Path) -> Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = fs::symlink_metadata(&p).ctx(|| format!("unable to stat '{}'", p.display()))?;
        let (uid, gid) = (md.uid(), md.gid());
        let (nuid, ngid) = (shift_id(uid), shift_id(gid));
        if (nuid, ngid) != (uid, gid) {
            std::os::unix::fs::lchown(&p, Some(nuid), Some(ngid))
                .ctx(|| format!("unable to chown '{}'", p.display()))?;
            let mode = md.permissions().mode();
            if !md.file_type().is_symlink() && mode & 0o6000 != 0 {
                fs::set_permissions(&p, fs::Permissions::from_mode(mode & 0o7777))
                    .ctx(|| format!("unable to chmod '{}'", p.display()))?;
            }
        }
        if md.is_dir() {
            for e in fs::read_dir(&p).ctx(|| format!("unable to read '{}'", p.display()))? {
                let e = e.ctx(|| format!("unable to read '{}'", p.display()))?;
                stack.push(e.path());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert_eq!(shift_id(0), 100_000);
        assert_eq!(shift_id(65_535), 165_535);
        assert_eq!(shift_id(100_000), 100_000);
        assert_eq!(lxc_idmap_lines()[0], "u 0 100000 65536");
    }
}
