//! Rootfs → CT template: packed once per distinct rootfs content into the template directory
//! and reused; see [`key`] for what the key covers.
//!
//! Key: the sha256 content digest of the rootfs as the CT will see it (the mounted overlay,
//! or the `--rootfs` directory), bytes included, computed on every create. No cheaper
//! identity is used for containerd's overlay snapshots: the ordered lowerdir paths, inode
//! numbers and mtimes are not a content identity (a store reset recreates snapshot 1, 2, ...
//! with other files), and the task API carries no snapshot chain ID.
//!
//! Cost (measured on the 2-core build host, sha_ni, page cache warm, 98 MB in 1,011 files /
//! 53 MB in 2,883 files): the installed `dist` build (opt-level "z") hashes ~0.52 s / 0.26 s;
//! with sha2 at opt-level 3 (release, or `[profile.dist.package.sha2] opt-level = 3`) ~0.2 s /
//! 0.11 s, i.e. ~0.5 GB/s plus a stat per entry. Paid on every create; a first pack pays it
//! twice plus tar (~0.2 s for the same 98 MB). `pct create` then unpacks the same bytes.
//!
//! Trust: the template directory is created 0700 and must be owned by us and not writable
//! by others; a template must be a regular file owned by us (names are predictable). A
//! template is packed to a 0600 temp file and renamed; after packing the rootfs is hashed
//! again and the temp dropped if it changed meanwhile (not seen: a change made and reverted
//! while tar reads; only the rootfs's writers can do that). Packing holds a per-template
//! `flock`, is bounded by `template_timeout_secs` (tar: SIGTERM, grace, SIGKILL) and first
//! removes stale temp files of crashed packers. [`TemplateLease`] marks a template in use
//! (shared flock) for `pct create`; after a pack, least-recently-used unleased templates are
//! removed down to `template_max_gib` ([`gc`]).
//!
//! With `unprivileged = true` the walk refuses, before any pct call, a file whose uid or
//! gid the CT's id map (0:100000:65536) cannot hold.

pub mod gc;
pub mod key;
pub mod lease;
pub mod tar;

use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use lease::TemplateLease;

use super::lock::FileLock;
use crate::backend::RootfsMount;
use crate::config::PctConfig;
use crate::error::{Error, Result};
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

/// The rootfs digest a packed template's name carries (`pvelxc-<64 hex>.tar`).
pub fn digest_of(path: &Path) -> Option<&str> {
    let d = path
        .file_name()?
        .to_str()?
        .strip_prefix(PREFIX)?
        .strip_suffix(".tar")?;
    (d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit())).then_some(d)
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

/// The pack lock file of template `name`.
fn lock_name(name: &str) -> String {
    format!(".{name}.lock")
}

/// Create the template directory (0700) if missing; refuse one others could write to.
pub fn prepare_dir(dir: &Path) -> Result<()> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io(format!("create {}", parent.display()), e))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(Error::io(
                format!("create template dir {}", dir.display()),
                e,
            ))
        }
    }
    let md = std::fs::symlink_metadata(dir)
        .map_err(|e| Error::io(format!("stat template dir {}", dir.display()), e))?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if !md.is_dir() || md.uid() != me || md.mode() & 0o022 != 0 {
        return Err(Error::precondition(format!(
            "template dir {} must be a directory owned by uid {me} that others cannot write to",
            dir.display()
        )));
    }
    Ok(())
}

/// Remove least-recently-used unleased templates of `cfg`'s template directory down to
/// `template_max_gib` (0 = no cap). Blocking: call it from a blocking context.
pub fn collect_garbage(cfg: &PctConfig) -> Result<gc::GcReport> {
    let dir = template_dir(cfg);
    gc::sweep_temps(&dir, None, gc::STALE_AGE);
    gc::collect(&dir, cfg.template_max_gib.saturating_mul(1 << 30))
}

/// Remove every unleased template of `cfg`'s template directory (`gc --all`). Blocking.
pub fn collect_all(cfg: &PctConfig) -> Result<gc::GcReport> {
    let dir = template_dir(cfg);
    gc::sweep_temps(&dir, None, gc::STALE_AGE);
    // A cap of one byte: nothing unleased fits under it.
    gc::collect(&dir, 1)
}

async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("{what}: {e}")))?
}

/// Makes sure a template of the container's rootfs exists and leases it.
pub struct Packer<'a> {
    pub cfg: &'a PctConfig,
    pub mounts: &'a [RootfsMount],
    pub spec: &'a oci_spec::runtime::Spec,
    pub bundle: &'a Path,
    /// Checked to be executable in the rootfs before anything else (see `backend::executable`).
    pub process: Option<&'a oci_spec::runtime::Process>,
}

/// The leased template of a create request's rootfs, its process checked first (see
/// [`Packer`]).
pub async fn ensure_for(
    req: &crate::backend::CreateRequest,
    process: &oci_spec::runtime::Process,
) -> Result<TemplateLease> {
    Packer {
        cfg: &req.config.pct,
        mounts: &req.rootfs,
        spec: &req.spec,
        bundle: &req.bundle,
        process: Some(process),
    }
    .ensure()
    .await
}

impl Packer<'_> {
    /// The leased template; hold the lease until `pct create` has returned.
    pub async fn ensure(&self) -> Result<TemplateLease> {
        let mnt = self.bundle.join("rootfs");
        let mut mounted = false;
        let res = match self.source(&mnt, &mut mounted).await {
            Ok(src) => match self.check_process(&src).await {
                Ok(()) => self.ensure_inner(&src).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        if mounted {
            if let Err(e) = mount::unmount_all(&mnt) {
                log::warn!("unmount {}: {e}", mnt.display());
            }
        }
        res
    }

    async fn check_process(&self, root: &Path) -> Result<()> {
        let Some(process) = self.process else {
            return Ok(());
        };
        let (root, process) = (root.to_path_buf(), process.clone());
        blocking("check the executable", move || {
            crate::backend::executable::check(&root, &process)
        })
        .await
    }

    async fn source(&self, mnt: &Path, mounted: &mut bool) -> Result<PathBuf> {
        if self.mounts.is_empty() {
            return spec_root(self.spec, self.bundle);
        }
        mount::mount_rootfs(self.mounts, mnt).await?;
        *mounted = true;
        Ok(mnt.to_path_buf())
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(self.cfg.template_timeout_secs.max(1))
    }

    async fn digest(&self, src: &Path) -> Result<String> {
        let src = src.to_path_buf();
        let opts = key::WalkOpts {
            unprivileged: self.cfg.unprivileged,
        };
        blocking("hash the rootfs", move || key::content_digest(&src, opts)).await
    }

    async fn ensure_inner(&self, src: &Path) -> Result<TemplateLease> {
        let dir = template_dir(self.cfg);
        let d = dir.clone();
        blocking("template dir", move || prepare_dir(&d)).await?;
        let digest = self.digest(src).await?;
        let name = format!("{PREFIX}{digest}.tar");
        let path = dir.join(&name);
        for _ in 0..3 {
            if let Some(l) = lease::try_lease(&path).await? {
                log::debug!("template {} reused", path.display());
                return Ok(l);
            }
            let lock = FileLock::acquire(
                &dir.join(lock_name(&name)),
                self.timeout() + Duration::from_secs(30),
            )
            .await?;
            if let Some(l) = lease::try_lease(&path).await? {
                return Ok(l);
            }
            gc::sweep_temps(&dir, Some(&name), gc::STALE_AGE);
            self.pack(src, &dir, &name, &digest).await?;
            let leased = lease::try_lease(&path).await?;
            drop(lock);
            if let Some(l) = leased {
                let cfg = self.cfg.clone();
                match blocking("template GC", move || collect_garbage(&cfg)).await {
                    Ok(r) if !r.removed.is_empty() || r.in_use > 0 => log::info!(
                        "template GC: removed {}, {} in use kept, {} bytes left",
                        r.removed.len(),
                        r.in_use,
                        r.total
                    ),
                    Ok(_) => {}
                    Err(e) => log::warn!("template GC: {e}"),
                }
                return Ok(l);
            }
        }
        Err(Error::Unavailable(format!(
            "template {} was removed each time it was packed",
            path.display()
        )))
    }

    /// tar into a 0600 temp file, check the rootfs did not change meanwhile, rename.
    async fn pack(&self, src: &Path, dir: &Path, name: &str, digest: &str) -> Result<()> {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
        let started = std::time::Instant::now();
        log::info!(
            "packing the rootfs {} into template {} (timeout {} s)",
            src.display(),
            path.display(),
            self.timeout().as_secs()
        );
        let res = async {
            let out = tar::run(&tar::pack_argv(src, &tmp), self.timeout(), tar::GRACE).await?;
            if out.code != 0 {
                return Err(Error::internal(format!(
                    "packing the rootfs into {}: tar exited {}: {}",
                    path.display(),
                    out.code,
                    out.stderr.trim()
                )));
            }
            if self.digest(src).await? != digest {
                return Err(Error::Unavailable(format!(
                    "the rootfs {} changed while it was packed; try again",
                    src.display()
                )));
            }
            std::fs::rename(&tmp, &path)
                .map_err(|e| Error::io(format!("rename template {}", path.display()), e))
        }
        .await;
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        } else {
            let mib = std::fs::metadata(&path).map(|m| m.len() >> 20).unwrap_or(0);
            log::info!(
                "packed template {} ({mib} MiB) in {:.1} s",
                path.display(),
                started.elapsed().as_secs_f64()
            );
        }
        res
    }
}

#[cfg(test)]
mod tests;
