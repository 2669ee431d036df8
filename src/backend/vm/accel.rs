//! Choosing the accelerator: `auto` takes KVM only when /dev/kvm really works here.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

use pvelxc_agent::host::Accel;

use crate::error::{Error, Result};

const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
const KVM_CREATE_VM: libc::c_ulong = 0xAE01;
const KVM_CREATE_VCPU: libc::c_ulong = 0xAE41;
const KVM_API_VERSION: libc::c_int = 12;

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

/// Cached probe: CPU virtualisation flag, /dev/kvm opens, API version 12, a VM and a vCPU can be
/// created.
pub fn kvm_usable() -> std::result::Result<(), String> {
    static PROBE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    PROBE.get_or_init(probe).clone()
}

fn probe() -> std::result::Result<(), String> {
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
        drop(OwnedFd::from_raw_fd(vcpu));
    }
    Ok(())
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
