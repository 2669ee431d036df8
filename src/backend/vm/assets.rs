//! What a VM needs on the host: QEMU, the guest kernel, and the initramfs holding the static guest
//! agent (built on first use, once, under a file lock, when only the agent and modules exist).

use std::path::{Path, PathBuf};

use crate::config::VmConfig as VmSettings;
use crate::error::{Error, Result};
use crate::sys::command;

const FETCH_HINT: &str = "run crates/pvelxc-agent/fetch-kernel.sh (or setup-host.sh)";

/// Resolved host paths for one boot.
#[derive(Debug, Clone)]
pub struct Assets {
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

/// How the initramfs can be had.
enum Initramfs {
    Present,
    /// Missing, but buildable from this agent and module directory.
    Buildable {
        agent: PathBuf,
        modules: PathBuf,
    },
}

/// The static agent: `vm.agent`, or `pvelxc-agent` next to the shim binary.
pub fn agent_path(s: &VmSettings) -> PathBuf {
    if !s.agent.is_empty() {
        return PathBuf::from(&s.agent);
    }
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("pvelxc-agent")))
        .unwrap_or_else(|| PathBuf::from("/usr/local/bin/pvelxc-agent"))
}

/// The kernel modules directory: `vm.modules`, or `modules` next to the kernel.
pub fn modules_dir(s: &VmSettings) -> PathBuf {
    if !s.modules.is_empty() {
        return PathBuf::from(&s.modules);
    }
    Path::new(&s.kernel)
        .parent()
        .unwrap_or(Path::new("/"))
        .join("modules")
}

/// Checks everything a boot needs without changing anything; Err is a user-facing reason.
pub fn check(s: &VmSettings) -> std::result::Result<(), String> {
    resolve(s).map(|_| ()).map_err(|e| e.to_string())
}

fn resolve(s: &VmSettings) -> Result<(PathBuf, Initramfs)> {
    let qemu = command::which(&s.qemu).map_err(|m| {
        Error::precondition(format!("vm backend: QEMU ({m}); install qemu-system-x86"))
    })?;
    if !Path::new(&s.kernel).is_file() {
        return Err(Error::precondition(format!(
            "vm backend: guest kernel {} not found; {FETCH_HINT}",
            s.kernel
        )));
    }
    if Path::new(&s.initramfs).is_file() {
        return Ok((qemu, Initramfs::Present));
    }
    let agent = agent_path(s);
    let modules = modules_dir(s);
    let missing = |what: String| {
        Error::precondition(format!(
            "vm backend: initramfs {} not found and cannot be built: {what}",
            s.initramfs
        ))
    };
    if !modules.is_dir() {
        return Err(missing(format!(
            "kernel modules directory {} missing ({FETCH_HINT})",
            modules.display()
        )));
    }
    match is_static_elf(&agent) {
        Ok(true) => {}
        Ok(false) => {
            return Err(missing(format!(
            "{} is dynamically linked; build it with RUSTFLAGS=\"-C target-feature=+crt-static\" \
                 cargo build --release -p pvelxc-agent --target x86_64-unknown-linux-gnu",
            agent.display()
        )))
        }
        Err(e) => {
            return Err(missing(format!(
            "static guest agent {}: {e} (set vm.agent or install pvelxc-agent next to the shim)",
            agent.display()
        )))
        }
    }
    Ok((qemu, Initramfs::Buildable { agent, modules }))
}

/// Resolves the assets, building the initramfs first when needed.
pub async fn prepare(s: &VmSettings) -> Result<Assets> {
    let (qemu, initramfs) = resolve(s)?;
    let out = PathBuf::from(&s.initramfs);
    if let Initramfs::Buildable { agent, modules } = initramfs {
        let o = out.clone();
        tokio::task::spawn_blocking(move || build_locked(&modules, &agent, &o))
            .await
            .map_err(|e| Error::internal(format!("initramfs build task: {e}")))??;
    }
    Ok(Assets {
        qemu,
        kernel: PathBuf::from(&s.kernel),
        initramfs: out,
    })
}

/// Builds `out` unless another process did while we waited for the lock.
///
/// The archive is an uncompressed cpio (the kernel detects the format by its magic, whatever the
/// file name): no `gzip` child whose exit the shim's reaper could take, and faster to unpack
/// under TCG.
fn build_locked(modules: &Path, agent: &Path, out: &Path) -> Result<()> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    }
    let lock_path = out.with_extension("lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io(format!("open {}", lock_path.display()), e))?;
    // Another shim may be building it: wait for that, bounded.
    let deadline = std::time::Instant::now() + BUILD_WAIT;
    let mut f = f;
    let _lock = loop {
        match nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(l) => break l,
            Err((back, nix::errno::Errno::EWOULDBLOCK)) if std::time::Instant::now() < deadline => {
                f = back;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                return Err(Error::DeadlineExceeded(format!(
                    "another process has been building {} for over {} s ({} is locked)",
                    out.display(),
                    BUILD_WAIT.as_secs(),
                    lock_path.display()
                )))
            }
            Err((_, e)) => {
                return Err(Error::io(format!("lock {}", lock_path.display()), e.into()))
            }
        }
    };
    if out.is_file() {
        return Ok(());
    }
    let started = std::time::Instant::now();
    log::info!(
        "building initramfs {} from {} and {} (first VM on this host)",
        out.display(),
        agent.display(),
        modules.display()
    );
    pvelxc_agent::initramfs::build_with(
        modules,
        agent,
        out,
        pvelxc_agent::initramfs::Compression::None,
    )
    .map_err(|e| {
        Error::precondition(format!(
            "build initramfs {} from {} and {}: {e}",
            out.display(),
            agent.display(),
            modules.display()
        ))
    })?;
    let mib = std::fs::metadata(out).map(|m| m.len() >> 20).unwrap_or(0);
    log::info!(
        "built initramfs {} ({mib} MiB) in {:.1} s",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// How long a create waits for another process's initramfs build.
const BUILD_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// True for an ELF executable without a program interpreter (statically linked).
pub fn is_static_elf(path: &Path) -> std::io::Result<bool> {
    use std::io::{Error as IoError, ErrorKind};
    let data = std::fs::read(path)?;
    let bad = || IoError::new(ErrorKind::InvalidData, "not a 64-bit ELF executable");
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 || data[5] != 1 {
        return Err(bad());
    }
    let u16_at = |o: usize| -> Option<u16> {
        Some(u16::from_le_bytes(data.get(o..o + 2)?.try_into().ok()?))
    };
    let u64_at = |o: usize| -> Option<u64> {
        Some(u64::from_le_bytes(data.get(o..o + 8)?.try_into().ok()?))
    };
    let phoff = u64_at(0x20).ok_or_else(bad)? as usize;
    let phentsize = u16_at(0x36).ok_or_else(bad)? as usize;
    let phnum = u16_at(0x38).ok_or_else(bad)? as usize;
    const PT_INTERP: u32 = 3;
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        let ty = data
            .get(o..o + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(bad)?;
        if ty == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_detection() {
        // The test binary itself is dynamically linked.
        let me = std::env::current_exe().expect("exe");
        assert!(!is_static_elf(&me).expect("elf"));
        assert!(is_static_elf(Path::new("/etc/hostname")).is_err());
    }

    #[test]
    fn missing_kernel_names_path_and_script() {
        let s = VmSettings {
            qemu: "/bin/true".into(),
            kernel: "/nonexistent/vmlinux".into(),
            ..Default::default()
        };
        let e = check(&s).expect_err("no kernel");
        assert!(e.contains("/nonexistent/vmlinux"), "{e}");
        assert!(e.contains("fetch-kernel.sh"), "{e}");
    }

    #[test]
    fn missing_initramfs_names_agent() {
        let dir = std::env::temp_dir().join(format!("pvelxc-vm-assets-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("modules")).expect("dir");
        std::fs::write(dir.join("vmlinux"), b"x").expect("kernel");
        let s = VmSettings {
            qemu: "/bin/true".into(),
            kernel: dir.join("vmlinux").display().to_string(),
            initramfs: dir.join("initramfs.cpio").display().to_string(),
            agent: dir.join("no-agent").display().to_string(),
            ..Default::default()
        };
        let e = check(&s).expect_err("no agent");
        assert!(e.contains("no-agent"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
