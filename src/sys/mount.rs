//! Mounting the rootfs containerd hands over (overlay, bind, ...) and tearing it down.

use std::path::Path;

use crate::backend::RootfsMount;
use crate::error::{Error, Result};

/// Mount `mounts` in order at `target` (containerd's CreateTask rootfs).
pub async fn mount_rootfs(mounts: &[RootfsMount], target: &Path) -> Result<()> {
    if mounts.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(target)
        .map_err(|e| Error::io(format!("create rootfs dir {}", target.display()), e))?;
    for (i, m) in mounts.iter().enumerate() {
        let mut pm = containerd_shim_protos::api::Mount::new();
        pm.type_ = m.kind.clone();
        pm.source = m.source.clone();
        pm.options = m.options.clone();
        if let Err(e) = containerd_shim::asynchronous::util::mount_rootfs(&pm, target).await {
            if i > 0 {
                let _ = unmount_all(target);
            }
            return Err(Error::internal(format!(
                "mount {} ({}) at {}: {e}",
                m.source,
                m.kind,
                target.display()
            )));
        }
    }
    Ok(())
}

/// Unmount everything at `target` (repeatedly, for stacked mounts). Missing target is fine.
pub fn unmount_all(target: &Path) -> Result<()> {
    if !target.exists() {
        return Ok(());
    }
    for _ in 0..16 {
        match nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => return Ok(()),
            Err(e) => {
                return Err(Error::io(
                    format!("unmount {}", target.display()),
                    std::io::Error::from(e),
                ))
            }
        }
    }
    Ok(())
}
