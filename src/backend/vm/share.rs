//! What QEMU gets to serve over 9p: the rootfs prepared for `mapped-xattr`, and every share
//! bind-mounted `nodev,nosuid` (plus `ro` for read-only ones) under the container's state dir, so
//! even a device node or setuid file already present in a shared directory is inert through
//! QEMU's view of it.
//!
//! Layout: `<state_dir>/share/<n>` (0: the rootfs, 1..: the spec's directory bind mounts).
//! [`unmount_all`] must run before the state dir is removed (removal descends into mounts).

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use pvelxc_agent::host::mapped;

use crate::error::{Error, Result};

/// The parent of the share mount points.
pub fn share_root(state_dir: &Path) -> PathBuf {
    state_dir.join("share")
}

/// Bind-mounts `src` at `<state_dir>/share/<n>` with nodev,nosuid[,ro], private.
pub fn bind(state_dir: &Path, n: usize, src: &Path, read_only: bool) -> Result<PathBuf> {
    let dst = share_root(state_dir).join(n.to_string());
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dst)
        .map_err(|e| Error::io(format!("create {}", dst.display()), e))?;
    let err = |what: &str, e: nix::errno::Errno| {
        Error::io(
            format!("{what} {} on {}", src.display(), dst.display()),
            std::io::Error::from(e),
        )
    };
    mount(
        Some(src),
        &dst,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| err("bind-mount", e))?;
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    let set = mount(None::<&str>, &dst, None::<&str>, flags, None::<&str>).and_then(|_| {
        mount(
            None::<&str>,
            &dst,
            None::<&str>,
            MsFlags::MS_PRIVATE,
            None::<&str>,
        )
    });
    if let Err(e) = set {
        let _ = umount2(&dst, MntFlags::MNT_DETACH);
        return Err(err("remount nodev,nosuid", e));
    }
    Ok(dst)
}

/// Mount points in this mount namespace at or below `dir`.
pub fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(dir))
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Detaches every mount below `<state_dir>/share`; errors when one stays (so nothing removes
/// the files behind it).
pub fn unmount_all(state_dir: &Path) -> Result<()> {
    let root = share_root(state_dir);
    let mut left = mounts_below(&root);
    // Deepest first.
    left.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    for p in &left {
        let _ = umount2(p, MntFlags::MNT_DETACH);
    }
    let still = mounts_below(&root);
    if !still.is_empty() {
        return Err(Error::internal(format!(
            "shares still mounted under {}: {:?}",
            root.display(),
            still
        )));
    }
    Ok(())
}

/// Whether `root` was already prepared for mapped-xattr (its top directory carries the mode
/// xattr): then its host view (0600 files, symlinks as files) no longer says what the guest sees.
pub fn is_mapped(root: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(root.as_os_str().as_bytes()) else {
        return false;
    };
    let mut b = [0u8; 4];
    // SAFETY: lgetxattr(2) writes at most 4 bytes into b.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            c"user.virtfs.mode".as_ptr(),
            b.as_mut_ptr().cast(),
            b.len(),
        )
    };
    n > 0
}

/// Prepares the rootfs for mapped-xattr (blocking walk, off the async runtime).
pub async fn prepare_rootfs(root: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    let r = root.to_path_buf();
    let t = std::time::Instant::now();
    let stats = tokio::task::spawn_blocking(move || mapped::prepare(&r, owner))
        .await
        .map_err(|e| Error::internal(format!("rootfs preparation: {e}")))?
        .map_err(|e| Error::invalid(format!("prepare {} for the VM: {e}", root.display())))?;
    log::info!(
        "vm: prepared {} for mapped-xattr in {} ms: {:?}",
        root.display(),
        t.elapsed().as_millis(),
        stats
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }
}
