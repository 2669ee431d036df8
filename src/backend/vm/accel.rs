//! Choosing the accelerator: `auto` takes KVM only when /dev/kvm really works here.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

use pvelxc_agent::host::Accel;

use crate::error::{Error, Result};

const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
const KVM_CREATE_VM: libc::c_ulong = 0xAE01;
const KVM_CREATE_VCPU: libc::c_ulong = 0xAE41;
const KVM_GET_VCPU_MMAP_SIZE: libc::c_ulong = 0xAE04;
const KVM_SET_USER_MEMORY_REGION: libc::c_ulong = 0x4020_AE46;
const KVM_GET_SREGS: libc::c_ulong = 0x8138_AE83;
const KVM_SET_SREGS: libc::c_ulong = 0x4138_AE84;
const KVM_SET_REGS: libc::c_ulong = 0x4090_AE82;
const KVM_RUN: libc::c_ulong = 0xAE80;
const KVM_EXIT_HLT: u32 = 5;
const KVM_API_VERSION: libc::c_int = 12;
/// How long the probe guest may take to halt.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

pub fn choose(setting: &str) -> Result<Accel> {
    match setting {
        "tcg" => Ok(Accel::Tcg),
        "kvm" => match kvm_usable() {
            Ok(()) => Ok(Accel::Kvm),
            Err(why) => Err(Error::precondition(format!(
                "vm.accel = \"kvm\" but KVM is not usable: {why}"
            ))),
        },
        _ => Ok(if kvm_usable().is_ok() {
            Accel::Kvm
        } else {
            Accel::Tcg
        }),
    }
}

/// Cached probe: the CPU shows vmx/svm, /dev/kvm opens, API version 12, and a one-instruction
/// real-mode guest (`hlt`) actually runs and exits with KVM_EXIT_HLT within a few seconds.
pub fn kvm_usable() -> std::result::Result<(), String> {
    static PROBE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(probe());
            });
            let r = rx
                .recv_timeout(PROBE_TIMEOUT)
                .unwrap_or_else(|_| Err("the KVM probe guest did not halt in time".into()));
            if let Err(why) = &r {
                log::info!("vm: KVM not usable ({why}); using TCG");
            }
            r
        })
        .clone()
}

fn probe() -> std::result::Result<(), String> {
    // Some sandboxes expose a /dev/kvm that runs trivial guests but hangs a real kernel; they
    // also hide the virtualisation flag, so require it.
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let has_flag = info
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if !has_flag {
        return Err("the CPU exposes no vmx/svm flag".into());
    }
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("open /dev/kvm: {e}"))?;
    // SAFETY: KVM ioctls on fds we own; the integer arguments are plain values.
    unsafe {
        let v = libc::ioctl(kvm.as_raw_fd(), KVM_GET_API_VERSION, 0);
        if v != KVM_API_VERSION {
            return Err(format!("KVM API version {v}, expected {KVM_API_VERSION}"));
        }
        let vm = libc::ioctl(kvm.as_raw_fd(), KVM_CREATE_VM, 0);
        if vm < 0 {
            return Err(format!(
                "KVM_CREATE_VM: {}",
                std::io::Error::last_os_error()
            ));
        }
        let vm = OwnedFd::from_raw_fd(vm);
        let vcpu = libc::ioctl(vm.as_raw_fd(), KVM_CREATE_VCPU, 0);
        if vcpu < 0 {
            return Err(format!(
                "KVM_CREATE_VCPU: {}",
                std::io::Error::last_os_error()
            ));
        }
        let vcpu = OwnedFd::from_raw_fd(vcpu);
        run_hlt(kvm.as_raw_fd(), vm.as_raw_fd(), vcpu.as_raw_fd())
    }
}

/// Map one page holding `hlt` at guest 0x1000, run the vCPU there in real mode, expect a HLT exit.
///
/// SAFETY (caller): the three fds are a KVM system fd, a VM fd and one of its vCPU fds.
unsafe fn run_hlt(
    kvm: libc::c_int,
    vm: libc::c_int,
    vcpu: libc::c_int,
) -> std::result::Result<(), String> {
    let os_err = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    let page = libc::mmap(
        std::ptr::null_mut(),
        4096,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
        0,
    );
    if page == libc::MAP_FAILED {
        return Err(os_err("mmap guest page"));
    }
    *(page as *mut u8) = 0xf4; // hlt
    #[repr(C)]
    struct Region {
        slot: u32,
        flags: u32,
        guest_phys_addr: u64,
        memory_size: u64,
        userspace_addr: u64,
    }
    let region = Region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0x1000,
        memory_size: 4096,
        userspace_addr: page as u64,
    };
    let result = (|| {
        if libc::ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0 {
            return Err(os_err("KVM_SET_USER_MEMORY_REGION"));
        }
        // struct kvm_sregs (312 bytes): cs is the first kvm_segment {base u64, limit u32,
        // selector u16, ...}.
        let mut sregs = [0u8; 312];
        if libc::ioctl(vcpu, KVM_GET_SREGS, sregs.as_mut_ptr()) < 0 {
            return Err(os_err("KVM_GET_SREGS"));
        }
        sregs[0..8].copy_from_slice(&0u64.to_ne_bytes());
        sregs[12..14].copy_from_slice(&0u16.to_ne_bytes());
        if libc::ioctl(vcpu, KVM_SET_SREGS, sregs.as_ptr()) < 0 {
            return Err(os_err("KVM_SET_SREGS"));
        }
        // struct kvm_regs: 18 u64, rip is #16 and rflags #17.
        let mut regs = [0u64; 18];
        regs[16] = 0x1000;
        regs[17] = 0x2;
        if libc::ioctl(vcpu, KVM_SET_REGS, regs.as_ptr()) < 0 {
            return Err(os_err("KVM_SET_REGS"));
        }
        let size = libc::ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
        if size < 16 {
            return Err(os_err("KVM_GET_VCPU_MMAP_SIZE"));
        }
        let run = libc::mmap(
            std::ptr::null_mut(),
            size as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            vcpu,
            0,
        );
        if run == libc::MAP_FAILED {
            return Err(os_err("mmap kvm_run"));
        }
        let rc = libc::ioctl(vcpu, KVM_RUN, 0);
        // struct kvm_run: exit_reason is the u32 at offset 8.
        let reason = std::ptr::read_volatile((run as *const u8).add(8) as *const u32);
        libc::munmap(run, size as usize);
        if rc < 0 {
            return Err(os_err("KVM_RUN"));
        }
        if reason != KVM_EXIT_HLT {
            return Err(format!("probe guest exited with reason {reason}, not HLT"));
        }
        Ok(())
    })();
    libc::munmap(page, 4096);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_tcg_and_auto_never_fail() {
        assert_eq!(choose("tcg").expect("tcg"), Accel::Tcg);
        assert!(choose("auto").is_ok());
        if kvm_usable().is_err() {
            assert_eq!(choose("auto").expect("auto"), Accel::Tcg);
            assert!(choose("kvm").is_err());
        }
    }
}
