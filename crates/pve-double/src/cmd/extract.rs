//! Template extraction as pve-container's `restore_tar_archive` does it: the archive is opened by
//! root and fed on stdin to `tar xpf -`, run through `lxc-usernsexec` with the CT's id map for
//! unprivileged CTs (so an entry owned by an unmapped uid/gid fails the create). Mount points
//! are mounted into the rootfs (read-write) while the archive is extracted.

use std::fs::{self, File};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::conf::PctConfig;
use crate::error::{die, Context, Result};
use crate::idmap;
use crate::lxc;
use crate::storage;

/// PVE::Storage::Plugin::COMMON_TAR_FLAGS.
const COMMON_TAR_FLAGS: &[&str] = &[
    "--one-file-system",
    "-p",
    "--sparse",
    "--numeric-owner",
    "--acls",
    "--xattrs",
    "--xattrs-include=user.*",
    "--xattrs-include=security.capability",
    "--warning=no-file-ignored",
    "--warning=no-xattr-write",
];

/// String::ShellQuote as PVE::Tools::cmd2string uses it for messages.
pub fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'_' | b'!'
                        | b'%'
                        | b'+'
                        | b','
                        | b'-'
                        | b'.'
                        | b'/'
                        | b':'
                        | b'='
                        | b'@'
                        | b'^'
                )
        });
    if safe {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

pub fn cmd2string(argv: &[String]) -> String {
    argv.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The extraction argv (archive on stdin).
pub fn tar_argv(archive_name: &str, rootfs: &Path, userns: bool) -> Result<Vec<String>> {
    let Some(comp) = storage::compression_of(archive_name) else {
        return Err(die(format!(
            "file does not look like a template archive: {archive_name}"
        )));
    };
    let mut argv: Vec<String> = Vec::new();
    if userns {
        argv.push("lxc-usernsexec".into());
        for k in ["u", "g"] {
            argv.push("-m".into());
            argv.push(format!("{k}:0:{}:{}", idmap::BASE, idmap::COUNT));
        }
        argv.push("--".into());
    }
    argv.extend(["tar", "xpf", "-"].map(String::from));
    if !comp.is_empty() {
        argv.push(comp.into());
    }
    argv.push("--totals".into());
    argv.extend(COMMON_TAR_FLAGS.iter().map(|s| s.to_string()));
    argv.push("-C".into());
    argv.push(rootfs.display().to_string());
    argv.extend(["--skip-old-files", "--anchored", "--exclude", "./dev/*"].map(String::from));
    Ok(argv)
}

/// `tar -tf` over the whole archive, output discarded (pve-container >= 6.0.15 does this to
/// detect OCI images; it costs a full read/decompression of the template).
pub fn list_archive(archive: &Path) -> Result<()> {
    let name = archive.to_string_lossy();
    let mut c = Command::new("tar");
    c.arg("-tf").arg(archive);
    if let Some(comp) = storage::compression_of(&name).filter(|c| !c.is_empty()) {
        c.arg(comp);
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ctx(|| "unable to run 'tar -tf'".to_string())?;
    Ok(())
}

/// Unpack `archive` into `rootfs`; tar's output goes to our stdout like the task log.
pub fn extract(archive: &Path, rootfs: &Path, userns: bool) -> Result<()> {
    let argv = tar_argv(&archive.to_string_lossy(), rootfs, userns)?;
    let input = File::open(archive).ctx(|| format!("failed to open '{}'", archive.display()))?;
    println!("extracting archive '{}'", archive.display());
    let out = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .ctx(|| "unable to dup stdout".to_string())?;
    let st = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::from(input))
        .stderr(Stdio::from(out))
        .status()
        .map_err(|e| die(format!("command '{}' failed: {e}", cmd2string(&argv))))?;
    if !st.success() {
        return Err(die(format!(
            "command '{}' failed: exit code {}",
            cmd2string(&argv),
            st.code().unwrap_or(-1)
        )));
    }
    Ok(())
}

/// Mount points bind-mounted into a rootfs; unmounted (reverse order) on drop.
pub struct MountedMps(Vec<PathBuf>);

impl Drop for MountedMps {
    fn drop(&mut self) {
        for p in self.0.iter().rev() {
            let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Refuse a mount target that goes through a symlink (the archive is not unpacked yet, but a
/// host-path rootfs may hold anything).
fn check_no_symlink(rootfs: &Path, rel: &str) -> Result<PathBuf> {
    let mut cur = rootfs.to_path_buf();
    for part in rel.split('/') {
        cur.push(part);
        let md = fs::symlink_metadata(&cur)
            .ctx(|| format!("unable to stat mount point '{}'", cur.display()))?;
        if md.file_type().is_symlink() || !md.is_dir() {
            return Err(die(format!(
                "mount point '/{rel}' is not a directory in the rootfs"
            )));
        }
    }
    Ok(cur)
}

/// Mount every mpN (bind mounts too, always read-write) into `rootfs`, parents first, as
/// PVE::LXC::mount_all does before the archive is extracted.
pub fn mount_mps(
    root: &crate::paths::Root,
    conf: &PctConfig,
    rootfs: &Path,
    unpriv: bool,
) -> Result<MountedMps> {
    let mut mounted = MountedMps(Vec::new());
    for (k, v) in &conf.main.keys {
        if super::create::is_disk_key(k) && k != "rootfs" {
            if let Some(vol) = crate::propstr::PropStr::parse(v, Some("volume"))
                .ok()
                .and_then(|p| p.default)
            {
                storage::activate(root, &vol)?;
            }
        }
    }
    for m in lxc::mount_entries(root, conf)? {
        if !m.source.exists() {
            return Err(die(format!(
                "mount point source '{}' does not exist",
                m.source.display()
            )));
        }
        lxc::create_mount_target(rootfs, &m.target, unpriv)?;
        let dst = check_no_symlink(rootfs, &m.target)?;
        nix::mount::mount(
            Some(&m.source),
            &dst,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_REC,
            None::<&str>,
        )
        .ctx(|| {
            format!(
                "unable to mount '{}' at '{}'",
                m.source.display(),
                dst.display()
            )
        })?;
        mounted.0.push(dst);
    }
    Ok(mounted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(
            shell_quote("--xattrs-include=user.*"),
            "'--xattrs-include=user.*'"
        );
        assert_eq!(shell_quote("./dev/*"), "'./dev/*'");
        assert_eq!(shell_quote("u:0:100000:65536"), "u:0:100000:65536");
        assert_eq!(shell_quote("a b'c"), "'a b'\\''c'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn argv_unprivileged() {
        let a = tar_argv("/t/x.tar.zst", Path::new("/r"), true).unwrap();
        assert_eq!(
            cmd2string(&a),
            "lxc-usernsexec -m u:0:100000:65536 -m g:0:100000:65536 -- tar xpf - --zstd --totals \
             --one-file-system -p --sparse --numeric-owner --acls --xattrs \
             '--xattrs-include=user.*' --xattrs-include=security.capability \
             --warning=no-file-ignored --warning=no-xattr-write -C /r --skip-old-files \
             --anchored --exclude './dev/*'"
        );
        let p = tar_argv("x.tar", Path::new("/r"), false).unwrap();
        assert_eq!(&p[..4], &["tar", "xpf", "-", "--totals"]);
        assert!(tar_argv("x.zip", Path::new("/r"), false).is_err());
    }
}
