//! The user QEMU runs as (`vm.qemu_user`), and what it must be able to reach.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{Error, Result};

/// `"root"` → None (no drop); `"uid:gid"` → numeric; a name → its passwd entry (read from
/// /etc/passwd directly: the shim may be a static binary without NSS).
pub fn resolve(spec: &str) -> Result<Option<(u32, u32)>> {
    resolve_in(spec, "/etc/passwd")
}

fn resolve_in(spec: &str, passwd: &str) -> Result<Option<(u32, u32)>> {
    if spec == "root" {
        return Ok(None);
    }
    if let Some((u, g)) = spec.split_once(':') {
        let (Ok(uid), Ok(gid)) = (u.parse::<u32>(), g.parse::<u32>()) else {
            return Err(Error::invalid(format!(
                "vm.qemu_user {spec:?}: \"uid:gid\" must be two numbers"
            )));
        };
        return Ok((uid != 0).then_some((uid, gid)));
    }
    let text = std::fs::read_to_string(passwd).unwrap_or_default();
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 4 && f[0] == spec {
            let (Ok(uid), Ok(gid)) = (f[2].parse::<u32>(), f[3].parse::<u32>()) else {
                break;
            };
            return Ok((uid != 0).then_some((uid, gid)));
        }
    }
    Err(Error::precondition(format!(
        "vm.qemu_user {spec:?} does not exist in {passwd}: create it (`useradd --system \
         --no-create-home --shell /usr/sbin/nologin --user-group {spec}`, as \
         crates/pvelxc-agent/setup-host.sh does), or set vm.qemu_user = \"root\" to keep QEMU root"
    )))
}

/// Errors unless `dir` is writable (and searchable) by `owner` through its mode bits.
pub fn check_writable(dir: &Path, owner: (u32, u32)) -> Result<()> {
    let md = std::fs::metadata(dir).map_err(|e| Error::io(format!("stat {}", dir.display()), e))?;
    let m = md.mode();
    let ok = if md.uid() == owner.0 {
        m & 0o300 == 0o300
    } else if md.gid() == owner.1 {
        m & 0o030 == 0o030
    } else {
        m & 0o003 == 0o003
    };
    if ok {
        return Ok(());
    }
    Err(Error::precondition(format!(
        "read-write bind mount {} is not writable by vm.qemu_user (uid {}, gid {}), which serves it \
         to the VM: chown it to that user, make it group/world-writable, or mount it read-only",
        dir.display(),
        owner.0,
        owner.1
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users() {
        let p = std::env::temp_dir().join(format!("pvelxc-passwd-{}", std::process::id()));
        std::fs::write(
            &p,
            "root:x:0:0::/root:/bin/sh\npvelxc-qemu:x:995:994::/:/usr/sbin/nologin\n",
        )
        .unwrap();
        let f = p.to_str().unwrap();
        assert_eq!(resolve_in("pvelxc-qemu", f).unwrap(), Some((995, 994)));
        assert_eq!(resolve_in("root", f).unwrap(), None);
        assert_eq!(resolve_in("12:34", f).unwrap(), Some((12, 34)));
        assert!(resolve_in("a:b", f).is_err());
        let e = resolve_in("nobody-here", f).unwrap_err().to_string();
        assert!(e.contains("useradd") && e.contains("\"root\""), "{e}");
        std::fs::remove_file(&p).unwrap();
    }
}
