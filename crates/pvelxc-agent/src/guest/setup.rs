//! Early boot: pseudo filesystems, kernel modules, the shared rootfs, hostname.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};
use pvelxc_agent::bootparams::{BootParams, Share};
use pvelxc_agent::modules::{GUEST_MODULE_DIR, MODULES, ROOTFS_TAG};

use super::log;

pub const ROOTFS: &str = "/rootfs";

fn err(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{what}: {e}"))
}

fn mnt(
    src: &str,
    target: &str,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> io::Result<()> {
    let _ = fs::create_dir_all(target);
    mount(Some(src), target, fstype, flags, data)
        .map_err(|e| err(&format!("mount {src} on {target}"), e))
}

/// Everything before the control port: returns the parsed boot parameters.
pub fn boot() -> io::Result<BootParams> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    mnt("proc", "/proc", Some("proc"), nosuid, None)?;
    mnt("sysfs", "/sys", Some("sysfs"), nosuid, None)?;
    mnt(
        "devtmpfs",
        "/dev",
        Some("devtmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )?;
    mnt(
        "devpts",
        "/dev/pts",
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("ptmxmode=0666,mode=0620,gid=5"),
    )?;
    mnt("tmpfs", "/run", Some("tmpfs"), nosuid, Some("mode=0755"))?;
    load_modules();
    let params = BootParams::parse(&fs::read_to_string("/proc/cmdline").unwrap_or_default());
    mount_rootfs(&params)?;
    if !params.hostname.is_empty() {
        nix::unistd::sethostname(&params.hostname).map_err(|e| err("sethostname", e))?;
    }
    Ok(params)
}

fn load_modules() {
    for name in MODULES {
        let path = format!("{GUEST_MODULE_DIR}/{name}.ko");
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                log!("{path}: {e} (skipped)");
                continue;
            }
        };
        // SAFETY: finit_module with a valid fd, an empty NUL-terminated parameter string and no flags.
        let rc =
            unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), c"".as_ptr(), 0) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                log!("insmod {name}: {e}");
            }
        }
    }
}

fn share_mount(tag: &str, target: &str, share: Share, read_only: bool) -> io::Result<()> {
    let (fstype, data) = match share {
        Share::NineP => ("9p", Some("trans=virtio,version=9p2000.L,msize=512000")),
        Share::VirtioFs => ("virtiofs", None),
    };
    let flags = if read_only {
        MsFlags::MS_RDONLY
    } else {
        MsFlags::empty()
    };
    // The virtio device may still be probing right after insmod: retry for a while.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match mnt(tag, target, Some(fstype), flags, data) {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn mount_rootfs(p: &BootParams) -> io::Result<()> {
    share_mount(ROOTFS_TAG, ROOTFS, p.share, p.read_only)?;
    for m in &p.mounts {
        let target = format!("{ROOTFS}{}", m.path);
        share_mount(&m.tag, &target, p.share, m.read_only)?;
    }
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    for (src, dir, fstype, flags) in [
        ("proc", "proc", Some("proc"), nosuid),
        ("sysfs", "sys", Some("sysfs"), nosuid | MsFlags::MS_RDONLY),
        ("/dev", "dev", None, MsFlags::MS_BIND | MsFlags::MS_REC),
    ] {
        let target = format!("{ROOTFS}/{dir}");
        if !Path::new(&target).is_dir() {
            log!("{target} missing in the rootfs: not mounting {src}");
            continue;
        }
        mnt(src, &target, fstype, flags, None)?;
    }
    Ok(())
}
