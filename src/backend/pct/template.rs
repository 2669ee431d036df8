//! Rootfs → CT template: packed once per image into the template directory and reused.
//!
//! Key: for an overlay rootfs whose upper layer is still empty (a fresh container of an
//! image), the image's layers — the ordered lowerdirs with their inode identity (device,
//! inode, mtime), so a recreated snapshot directory never matches an old template.
//! Otherwise (bind mounts, `--rootfs` dirs, a used upper layer), a content hash: sha256 of a
//! sorted walk of (path, type, mode, uid, gid, size, mtime, link target).
//! Packing holds a per-template flock; the archive is written to a temp name and renamed.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::lock::FileLock;
use crate::backend::RootfsMount;
use crate::error::{Error, Result};
use crate::sys::command::Cmd;
use crate::sys::mount;

const PREFIX: &str = "pvelxc-";

/// Where templates go: `template_dir`, else the dir storage `template_storage` from
/// /etc/pve/storage.cfg (`<path>/template/cache`), else /var/lib/pvelxc/templates.
pub fn template_dir(cfg: &crate::config::PctConfig) -> PathBuf {
    if !cfg.template_dir.is_empty() {
        return PathBuf::from(&cfg.template_dir);
    }
    std::fs::read_to_string("/etc/pve/storage.cfg")
        .ok()
        .and_then(|t| storage_path(&t, &cfg.template_storage))
        .map(|p| p.join("template").join("cache"))
        .unwrap_or_else(|| PathBuf::from("/var/lib/pvelxc/templates"))
}

/// `path` of a `dir:` storage in storage.cfg.
fn storage_path(cfg: &str, storage: &str) -> Option<PathBuf> {
    let mut inside = false;
    for line in cfg.lines() {
        if !line.starts_with(char::is_whitespace) {
            inside = line
                .split_once(':')
                .map(|(t, n)| t.trim() == "dir" && n.trim() == storage)
                .unwrap_or(false);
            continue;
        }
        if inside {
            if let Some(p) = line.trim().strip_prefix("path ") {
                return Some(PathBuf::from(p.trim()));
            }
        }
    }
    (storage == "local").then(|| PathBuf::from("/var/lib/vz"))
}

fn overlay_opts(m: &RootfsMount) -> Option<(Vec<String>, Option<String>)> {
    if m.kind != "overlay" {
        return None;
    }
    let mut lower = None;
    let mut upper = None;
    for o in &m.options {
        if let Some(l) = o.strip_prefix("lowerdir=") {
            lower = Some(l.split(':').map(str::to_string).collect::<Vec<_>>());
        } else if let Some(u) = o.strip_prefix("upperdir=") {
            upper = Some(u.to_string());
        }
    }
    lower.map(|l| (l, upper))
}

fn dir_is_empty(p: &Path) -> bool {
    std::fs::read_dir(p)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

/// The layer key of a fresh overlay rootfs, if that is what `mounts` is.
pub fn layer_key(mounts: &[RootfsMount]) -> Option<String> {
    let [m] = mounts else { return None };
    let (lower, upper) = overlay_opts(m)?;
    if let Some(u) = upper {
        if !dir_is_empty(Path::new(&u)) {
            return None;
        }
    }
    let mut h = Sha256::new();
    h.update(b"overlay-lowerdirs-v1\0");
    for l in &lower {
        let md = std::fs::metadata(l).ok()?;
        h.update(l.as_bytes());
        h.update(
            format!(
                "\0{}:{}:{}\0",
                md.dev(),
                md.ino(),
                md.mtime_nsec() + md.mtime() * 1_000_000_000
            )
            .as_bytes(),
        );
    }
    Some(hex(&h.finalize()[..16]))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Content hash of a directory tree (metadata walk, sorted, no symlinks followed).
pub fn content_key(root: &Path) -> Result<String> {
    let mut h = Sha256::new();
    h.update(b"content-v1\0");
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(&dir)
            .map_err(|e| Error::io(format!("read {}", dir.display()), e))?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort();
        // Reverse so the stack pops subdirectories in sorted order.
        let mut subdirs = Vec::new();
        for n in names {
            let r = rel.join(&n);
            let p = root.join(&r);
            let md = std::fs::symlink_metadata(&p)
                .map_err(|e| Error::io(format!("stat {}", p.display()), e))?;
            h.update(r.as_os_str().as_encoded_bytes());
            h.update(
                format!(
                    "\0{:o}:{}:{}:{}:{}.{}\0",
                    md.mode(),
                    md.uid(),
                    md.gid(),
                    md.size(),
                    md.mtime(),
                    md.mtime_nsec()
                )
                .as_bytes(),
            );
            if md.file_type().is_symlink() {
                if let Ok(t) = std::fs::read_link(&p) {
                    h.update(t.as_os_str().as_encoded_bytes());
                }
            } else if md.is_dir() {
                subdirs.push(r);
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(hex(&h.finalize()[..16]))
}

/// The rootfs directory of a `--rootfs` style spec (no rootfs mounts).
pub fn spec_root(spec: &oci_spec::runtime::Spec, bundle: &Path) -> Result<PathBuf> {
    let p = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .ok_or_else(|| Error::invalid("the spec has no root and containerd sent no rootfs"))?;
    let p = if p.is_absolute() { p } else { bundle.join(p) };
    if !p.is_dir() {
        return Err(Error::invalid(format!(
            "rootfs {} is not a directory",
            p.display()
        )));
    }
    Ok(p)
}

/// Makes sure a template of the container's rootfs exists; returns its absolute path.
pub struct Packer<'a> {
    pub dir: PathBuf,
    pub mounts: &'a [RootfsMount],
    pub spec: &'a oci_spec::runtime::Spec,
    pub bundle: &'a Path,
    pub timeout: Duration,
    /// Checked to be executable in the rootfs before anything else (see `backend::executable`).
    pub process: Option<&'a oci_spec::runtime::Process>,
}

impl Packer<'_> {
    pub async fn ensure(&self) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::io(format!("create template dir {}", self.dir.display()), e))?;
        let mnt = self.bundle.join("rootfs");
        let mut mounted = false;
        let res = match self.check_process(&mnt, &mut mounted).await {
            Ok(()) => self.ensure_inner(&mnt, &mut mounted).await,
            Err(e) => Err(e),
        };
        if mounted {
            if let Err(e) = mount::unmount_all(&mnt) {
                log::warn!("unmount {}: {e}", mnt.display());
            }
        }
        res
    }

    async fn check_process(&self, mnt: &Path, mounted: &mut bool) -> Result<()> {
        let Some(process) = self.process else {
            return Ok(());
        };
        let root = self.source(mnt, mounted).await?;
        let process = process.clone();
        tokio::task::spawn_blocking(move || crate::backend::executable::check(&root, &process))
            .await
            .map_err(|e| Error::internal(format!("check the executable: {e}")))?
    }

    async fn source(&self, mnt: &Path, mounted: &mut bool) -> Result<PathBuf> {
        if self.mounts.is_empty() {
            return spec_root(self.spec, self.bundle);
        }
        if !*mounted {
            mount::mount_rootfs(self.mounts, mnt).await?;
            *mounted = true;
        }
        Ok(mnt.to_path_buf())
    }

    async fn ensure_inner(&self, mnt: &Path, mounted: &mut bool) -> Result<PathBuf> {
        let key = match layer_key(self.mounts) {
            Some(k) => format!("l{k}"),
            None => {
                let src = self.source(mnt, mounted).await?;
                let k = tokio::task::spawn_blocking(move || content_key(&src))
                    .await
                    .map_err(|e| Error::internal(format!("hash rootfs: {e}")))??;
                format!("c{k}")
            }
        };
        let name = format!("{PREFIX}{key}.tar");
        let path = self.dir.join(&name);
        if path.is_file() {
            log::debug!("template {} reused", path.display());
            return Ok(path);
        }
        let _lock =
            FileLock::acquire(&self.dir.join(format!(".{name}.lock")), self.timeout).await?;
        if path.is_file() {
            return Ok(path);
        }
        let src = self.source(mnt, mounted).await?;
        let tmp = self.dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let out = Cmd::new([
            std::ffi::OsString::from("tar"),
            "--numeric-owner".into(),
            "-C".into(),
            src.into_os_string(),
            "-cf".into(),
            tmp.clone().into_os_string(),
            ".".into(),
        ])
        .timeout(self.timeout)
        .output()
        .await;
        match out {
            Ok(o) if o.success() => {}
            Ok(o) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(Error::internal(format!(
                    "packing the rootfs into {}: tar: {}",
                    path.display(),
                    o.stderr.trim()
                )));
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        }
        std::fs::rename(&tmp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(format!("rename template {}", path.display()), e)
        })?;
        log::info!("packed template {}", path.display());
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_cfg() {
        let cfg = "dir: local\n\tpath /var/lib/vz\n\tcontent iso,vztmpl,backup\n\n\
                   lvmthin: local-lvm\n\tthinpool data\n\ndir: tpl\n\tpath /srv/tpl\n";
        assert_eq!(storage_path(cfg, "tpl"), Some(PathBuf::from("/srv/tpl")));
        assert_eq!(
            storage_path(cfg, "local"),
            Some(PathBuf::from("/var/lib/vz"))
        );
        assert_eq!(storage_path(cfg, "nfs"), None);
    }

    #[test]
    fn keys() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/f"), "x").unwrap();
        let k1 = content_key(d.path()).unwrap();
        assert_eq!(k1, content_key(d.path()).unwrap());
        std::fs::write(d.path().join("a/g"), "y").unwrap();
        assert_ne!(k1, content_key(d.path()).unwrap());

        let l1 = d.path().join("a");
        let up = d.path().join("up");
        std::fs::create_dir(&up).unwrap();
        let m = |lower: &str| RootfsMount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                format!("lowerdir={lower}"),
                format!("upperdir={}", up.display()),
                "workdir=/w".into(),
            ],
        };
        let a = layer_key(&[m(&l1.display().to_string())]).unwrap();
        let b = layer_key(&[m(&format!(
            "{}:{}",
            l1.display(),
            d.path().join("a/b").display()
        ))])
        .unwrap();
        assert_ne!(a, b);
        std::fs::write(up.join("changed"), "").unwrap();
        assert!(layer_key(&[m(&l1.display().to_string())]).is_none());
    }
}
