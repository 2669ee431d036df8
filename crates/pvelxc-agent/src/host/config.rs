//! Typed VM configuration and the QEMU argv built from it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bootparams::{BootParams, GuestMount, Share};
use crate::modules::{CONTROL_PORT_NAME, ROOTFS_TAG};

use super::VmError;

/// CPU accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    /// Software emulation (works everywhere; ~2–3 s boot).
    #[default]
    Tcg,
    /// Hardware virtualisation (`/dev/kvm`).
    Kvm,
}

/// How a writable 9p share stores what the guest sets (ownership, modes, device nodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShareSecurity {
    /// `security_model=mapped-xattr`: guest metadata lives in `user.virtfs.*` xattrs; host files
    /// stay QEMU's, 0600/0700, never setuid, never devices. The directory must be prepared
    /// ([`super::mapped::prepare`]; [`VmConfig::prepare_rootfs`] does it for the rootfs).
    #[default]
    MappedXattr,
    /// `security_model=passthrough`: guest root's chown/chmod/mknod hit the host directory
    /// as they are. Only for trusted guests.
    Passthrough,
}

impl ShareSecurity {
    fn model(self) -> &'static str {
        match self {
            ShareSecurity::MappedXattr => "mapped-xattr",
            ShareSecurity::Passthrough => "passthrough",
        }
    }
}

/// An extra host directory shared into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraMount {
    pub host_path: PathBuf,
    /// Absolute path inside the container rootfs (must exist there when the rootfs is read-only).
    pub guest_path: String,
    pub read_only: bool,
}

/// Everything needed to boot one micro-VM.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// `qemu-system-x86_64` (looked up on `PATH` when it has no `/`).
    pub qemu: PathBuf,
    /// Uncompressed `vmlinux` (or a bzImage, slower under TCG).
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub accel: Accel,
    pub rootfs_dir: PathBuf,
    pub read_only: bool,
    pub share: Share,
    pub mounts: Vec<ExtraMount>,
    pub hostname: String,
    /// Extra kernel command-line words.
    pub cmdline_extra: Vec<String>,
    /// Firmware; `None` uses QEMU's default. qboot is needed with an uncompressed kernel.
    pub bios: Option<PathBuf>,
    /// `virtiofsd` binary, for [`Share::VirtioFs`].
    pub virtiofsd: PathBuf,
    /// Parent of the per-VM directory holding the sockets and logs.
    pub state_dir: PathBuf,
    pub boot_timeout: Duration,
    /// `tsc_early_khz` for TCG guests; `None` reads the host's `cpu MHz` from /proc/cpuinfo.
    pub tsc_khz: Option<u64>,
    /// 9p model of the rootfs and of read-write extra mounts. Read-only extra mounts always use
    /// `passthrough,readonly=on` (nothing can be written through them; host symlinks keep working).
    pub security: ShareSecurity,
    /// With [`ShareSecurity::MappedXattr`]: run [`super::mapped::prepare`] on the rootfs before
    /// booting (default true).
    pub prepare_rootfs: bool,
    /// Numeric uid:gid QEMU switches to once the machine is set up (`-run-with user=`); None keeps
    /// it root.
    pub qemu_user: Option<(u32, u32)>,
    /// QEMU's seccomp filter (`-sandbox on,obsolete=deny,elevateprivileges=…,spawn=deny,
    /// resourcecontrol=deny`; elevateprivileges must be `allow` with `qemu_user`, because QEMU 10
    /// installs the filter before it drops to that user).
    pub sandbox: bool,
    /// Files (`cgroup.procs`) QEMU's pid is written to before it runs its first instruction.
    pub cgroup_procs: Vec<PathBuf>,
}

pub const DEFAULT_QBOOT: &str = "/usr/share/qemu/qboot.rom";

impl VmConfig {
    /// Defaults: TCG, 256 MiB, 1 vCPU, 9p, qboot when installed, 60 s boot timeout.
    pub fn new(
        kernel: impl Into<PathBuf>,
        initramfs: impl Into<PathBuf>,
        rootfs_dir: impl Into<PathBuf>,
    ) -> Self {
        VmConfig {
            qemu: PathBuf::from("qemu-system-x86_64"),
            kernel: kernel.into(),
            initramfs: initramfs.into(),
            memory_mib: 256,
            vcpus: 1,
            accel: Accel::Tcg,
            rootfs_dir: rootfs_dir.into(),
            read_only: false,
            share: Share::NineP,
            mounts: Vec::new(),
            hostname: String::new(),
            cmdline_extra: Vec::new(),
            bios: Some(PathBuf::from(DEFAULT_QBOOT)).filter(|p| p.exists()),
            virtiofsd: PathBuf::from("virtiofsd"),
            state_dir: std::env::temp_dir(),
            boot_timeout: Duration::from_secs(60),
            tsc_khz: None,
            security: ShareSecurity::MappedXattr,
            prepare_rootfs: true,
            qemu_user: None,
            sandbox: true,
            cgroup_procs: Vec::new(),
        }
    }

    pub(crate) fn boot_params(&self) -> BootParams {
        BootParams {
            share: self.share,
            read_only: self.read_only,
            hostname: self.hostname.clone(),
            mounts: self
                .mounts
                .iter()
                .enumerate()
                .map(|(i, m)| GuestMount {
                    tag: mount_tag(i),
                    path: m.guest_path.clone(),
                    read_only: m.read_only,
                })
                .collect(),
        }
    }

    /// The kernel command line.
    pub fn cmdline(&self) -> Result<String, VmError> {
        let mut words: Vec<String> = ["console=ttyS0", "quiet", "panic=-1", "pci=off"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if self.accel == Accel::Tcg {
            if let Some(khz) = self.tsc_khz.or_else(host_tsc_khz) {
                words.push(format!("tsc_early_khz={khz}"));
            }
        }
        words.extend(
            self.boot_params()
                .to_args()
                .map_err(|e| VmError::Config(e.to_string()))?,
        );
        words.extend(self.cmdline_extra.iter().cloned());
        Ok(words.join(" "))
    }

    /// QEMU's argv (without the program), for a VM whose sockets and logs live in `dir`.
    pub fn qemu_args(&self, dir: &Path) -> Result<Vec<OsString>, VmError> {
        if self.memory_mib < 64 || self.vcpus == 0 {
            return Err(VmError::Config(
                "memory_mib must be >= 64 and vcpus >= 1".into(),
            ));
        }
        let mut a = Args::default();
        match self.accel {
            Accel::Tcg => a.push(["-accel", "tcg"]),
            Accel::Kvm => a.push(["-accel", "kvm", "-cpu", "host"]),
        }
        let mut machine = String::from("microvm");
        if self.share == Share::VirtioFs {
            machine.push_str(",memory-backend=mem");
            a.push(["-object"]);
            a.one(format!(
                "memory-backend-memfd,id=mem,size={}M,share=on",
                self.memory_mib
            ));
        }
        a.push(["-M"]);
        a.one(machine);
        if let Some(bios) = &self.bios {
            a.push(["-bios"]);
            a.path(bios);
        }
        a.push(["-m"]);
        a.one(format!("{}M", self.memory_mib));
        a.push(["-smp"]);
        a.one(self.vcpus.to_string());
        a.push([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ]);
        if self.sandbox {
            a.push(["-sandbox"]);
            a.one(format!(
                "on,obsolete=deny,elevateprivileges={},spawn=deny,resourcecontrol=deny",
                if self.qemu_user.is_some() {
                    "allow"
                } else {
                    "deny"
                }
            ));
        }
        if let Some((uid, gid)) = self.qemu_user {
            a.push(["-run-with"]);
            a.one(format!("user={uid}:{gid}"));
        }
        // The serial console goes to a socket the host reads (and caps), not straight to a file.
        a.push(["-chardev"]);
        a.one(format!(
            "socket,id=ser,path={},server=off",
            esc(&serial_socket(dir))
        ));
        a.push(["-serial", "chardev:ser"]);
        a.push(["-kernel"]);
        a.path(&self.kernel);
        a.push(["-initrd"]);
        a.path(&self.initramfs);
        a.push(["-append"]);
        a.one(self.cmdline()?);
        let shares = std::iter::once((
            ROOTFS_TAG.to_string(),
            &self.rootfs_dir,
            self.read_only,
            self.security,
        ))
        .chain(self.mounts.iter().enumerate().map(|(i, m)| {
            let sec = if m.read_only {
                ShareSecurity::Passthrough
            } else {
                self.security
            };
            (mount_tag(i), &m.host_path, m.read_only, sec)
        }));
        for (i, (tag, path, ro, sec)) in shares.enumerate() {
            match self.share {
                Share::NineP => {
                    a.push(["-fsdev"]);
                    a.one(format!(
                        "local,id=fs{i},path={},security_model={}{}",
                        esc(path),
                        sec.model(),
                        if ro { ",readonly=on" } else { "" }
                    ));
                    a.push(["-device"]);
                    a.one(format!("virtio-9p-device,fsdev=fs{i},mount_tag={tag}"));
                }
                Share::VirtioFs => {
                    a.push(["-chardev"]);
                    a.one(format!(
                        "socket,id=vfs{i},path={}",
                        esc(&virtiofs_socket(dir, i))
                    ));
                    a.push(["-device"]);
                    a.one(format!("vhost-user-fs-device,chardev=vfs{i},tag={tag}"));
                }
            }
        }
        a.push(["-device", "virtio-serial-device", "-chardev"]);
        a.one(format!(
            "socket,id=ctl,path={},server=off",
            esc(&control_socket(dir))
        ));
        a.push(["-device"]);
        a.one(format!(
            "virtserialport,chardev=ctl,name={CONTROL_PORT_NAME}"
        ));
        Ok(a.0)
    }

    /// The directories shared with virtiofsd, with their socket paths (empty for 9p).
    pub(crate) fn virtiofs_shares(&self, dir: &Path) -> Vec<(PathBuf, PathBuf, bool)> {
        if self.share != Share::VirtioFs {
            return Vec::new();
        }
        std::iter::once((&self.rootfs_dir, self.read_only))
            .chain(self.mounts.iter().map(|m| (&m.host_path, m.read_only)))
            .enumerate()
            .map(|(i, (p, ro))| (p.clone(), virtiofs_socket(dir, i), ro))
            .collect()
    }
}

#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn push<const N: usize>(&mut self, v: [&str; N]) {
        self.0.extend(v.iter().map(OsString::from));
    }
    fn one(&mut self, s: String) {
        self.0.push(s.into());
    }
    fn path(&mut self, p: &Path) {
        self.0.push(p.as_os_str().to_owned());
    }
}

/// Escapes a value for QEMU's comma-separated option syntax.
fn esc(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

fn mount_tag(i: usize) -> String {
    format!("m{i}")
}

pub(crate) fn control_socket(dir: &Path) -> PathBuf {
    dir.join("ctl.sock")
}

pub(crate) fn serial_socket(dir: &Path) -> PathBuf {
    dir.join("serial.sock")
}

pub(crate) fn console_log(dir: &Path) -> PathBuf {
    dir.join("console.log")
}

pub(crate) fn qemu_log(dir: &Path) -> PathBuf {
    dir.join("qemu.log")
}

fn virtiofs_socket(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("vfs{i}.sock"))
}

/// The host CPU frequency in kHz from /proc/cpuinfo (TCG guests calibrate their TSC against it).
pub fn host_tsc_khz() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = info
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1000.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nine_p_argv() {
        let mut c = VmConfig::new("/k/vmlinux", "/k/initrd", "/r,oot");
        c.bios = Some("/q.rom".into());
        c.tsc_khz = Some(2_600_000);
        c.read_only = true;
        c.hostname = "ct".into();
        c.mounts.push(ExtraMount {
            host_path: "/data".into(),
            guest_path: "/mnt/data".into(),
            read_only: false,
        });
        let args: Vec<String> = c
            .qemu_args(Path::new("/run/x"))
            .unwrap()
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect();
        let joined = args.join(" ");
        assert!(joined.starts_with("-accel tcg -M microvm -bios /q.rom -m 256M -smp 1"));
        assert!(
            joined.contains("local,id=fs0,path=/r,,oot,security_model=mapped-xattr,readonly=on")
        );
        assert!(joined.contains("local,id=fs1,path=/data,security_model=mapped-xattr -device"));
        assert!(joined.contains("virtio-9p-device,fsdev=fs1,mount_tag=m0"));
        assert!(joined.contains(
            "-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
        ));
        assert!(!joined.contains("-run-with"));
        assert!(joined.contains(
            "-chardev socket,id=ser,path=/run/x/serial.sock,server=off -serial chardev:ser"
        ));
        c.qemu_user = Some((995, 994));
        c.mounts[0].read_only = true;
        c.security = ShareSecurity::Passthrough;
        let joined = c
            .qemu_args(Path::new("/run/x"))
            .unwrap()
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(joined.contains("elevateprivileges=allow"));
        assert!(joined.contains("-run-with user=995:994"));
        assert!(joined.contains("path=/r,,oot,security_model=passthrough,readonly=on"));
        assert!(joined.contains("path=/data,security_model=passthrough,readonly=on"));
        assert!(joined.contains("socket,id=ctl,path=/run/x/ctl.sock,server=off"));
        assert!(joined.contains("virtserialport,chardev=ctl,name=pvelxc.ctl"));
        let append = &args[args.iter().position(|a| a == "-append").unwrap() + 1];
        assert!(append.contains("tsc_early_khz=2600000"));
        assert!(append.contains("pvelxc.ro=1"));
        assert!(append.contains("pvelxc.mount=m0:/mnt/data:rw"));
    }

    #[test]
    fn virtiofs_argv() {
        let mut c = VmConfig::new("/k", "/i", "/r");
        c.share = Share::VirtioFs;
        c.accel = Accel::Kvm;
        let joined = c
            .qemu_args(Path::new("/d"))
            .unwrap()
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(joined.contains("-accel kvm -cpu host"));
        assert!(joined.contains(
            "memory-backend-memfd,id=mem,size=256M,share=on -M microvm,memory-backend=mem"
        ));
        assert!(joined.contains("vhost-user-fs-device,chardev=vfs0,tag=rootfs"));
        assert!(!joined.contains("tsc_early_khz"));
        assert_eq!(c.virtiofs_shares(Path::new("/d")).len(), 1);
    }
}
