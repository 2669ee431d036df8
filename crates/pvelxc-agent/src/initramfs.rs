//! Builds the guest initramfs: `/init` (the static agent), `/lib/modules/*.ko`, and the few
//! directories and device nodes the kernel and the agent need before devtmpfs is mounted.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::cpio::CpioWriter;
use crate::modules::{GUEST_MODULE_DIR, MODULES};

/// Output compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain cpio: largest, but nothing for the guest to decompress (fastest under TCG).
    None,
    /// cpio.gz, compressed by the `gzip` program (argv, no shell).
    Gzip,
}

/// Finds `<name>.ko` anywhere below `dir` (a flat cache dir such as `/var/cache/pvelxc/vm/modules`,
/// or an unpacked `linux-image-*.deb` whose modules live in `lib/modules/<release>/kernel/...`).
pub fn find_module(dir: &Path, name: &str) -> io::Result<Option<PathBuf>> {
    let want = format!("{name}.ko");
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d)? {
            let entry = entry?;
            let ft = entry.file_type()?;
            if ft.is_dir() {
                stack.push(entry.path());
            } else if entry.file_name().to_str() == Some(want.as_str()) {
                return Ok(Some(entry.path()));
            }
        }
    }
    Ok(None)
}

/// Packs `agent_bin` as `/init` and every module of [`MODULES`] found below `kernel_pkg_dir` into `out`
/// (gzip-compressed: the conventional `initramfs.cpio.gz`). Fails if a module is missing.
pub fn build(kernel_pkg_dir: &Path, agent_bin: &Path, out: &Path) -> io::Result<()> {
    build_with(kernel_pkg_dir, agent_bin, out, Compression::Gzip)
}

/// [`build`] with a choice of compression. Writes to a temporary file and renames it into place.
pub fn build_with(
    kernel_pkg_dir: &Path,
    agent_bin: &Path,
    out: &Path,
    compression: Compression,
) -> io::Result<()> {
    let archive = archive(kernel_pkg_dir, agent_bin)?;
    let bytes = match compression {
        Compression::None => archive,
        Compression::Gzip => gzip(&archive)?,
    };
    let tmp = out.with_extension("tmp");
    fs::write(&tmp, bytes)?;
    fs::rename(&tmp, out)
}

/// The uncompressed cpio archive.
pub fn archive(kernel_pkg_dir: &Path, agent_bin: &Path) -> io::Result<Vec<u8>> {
    let agent = fs::read(agent_bin).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("agent binary {}: {e}", agent_bin.display()),
        )
    })?;
    let mut w = CpioWriter::new(Vec::with_capacity(agent.len() + (4 << 20)));
    for d in ["dev", "proc", "sys", "run", "tmp", "rootfs", "lib"] {
        w.dir(d, 0o755)?;
    }
    w.char_dev("dev/console", 0o600, 5, 1)?;
    w.char_dev("dev/null", 0o666, 1, 3)?;
    let moddir = GUEST_MODULE_DIR.trim_start_matches('/');
    w.dir(moddir, 0o755)?;
    for name in MODULES {
        let path = find_module(kernel_pkg_dir, name)?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "kernel module {name}.ko not found below {}",
                    kernel_pkg_dir.display()
                ),
            )
        })?;
        w.file(&format!("{moddir}/{name}.ko"), 0o644, &fs::read(&path)?)?;
    }
    w.file("init", 0o755, &agent)?;
    w.finish()
}

fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut child = Command::new("gzip")
        .args(["-n", "-6", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("running gzip: {e}")))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| io::Error::other("gzip stdin"))?;
    let input = data.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output()?;
    feeder
        .join()
        .map_err(|_| io::Error::other("gzip feeder panicked"))??;
    if !out.status.success() {
        return Err(io::Error::other(format!("gzip failed: {}", out.status)));
    }
    Ok(out.stdout)
}
