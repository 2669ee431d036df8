//! Unprivileged containers: root in the CT is uid/gid 100000 on the host.

use std::fs;
use std::io::Write;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert_eq!(lxc_idmap_lines()[0], "u 0 100000 65536");
    }
}
