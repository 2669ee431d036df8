//! `Vm::start` names the cause when it cannot boot. The QEMU-exit case needs qemu-system-x86_64, the
//! boot-timeout case also the guest kernel: they skip loudly where those are missing (`skip`, suite
//! `vm`; a failure under `CI=true` or with `PVELXC_VM_REQUIRED` set). The others need nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::undocumented_unsafe_blocks
)] // a test crate: panics carry the context

/// The workspace's one skip helper (loud, counted, a failure under CI).
#[path = "../../../tests/common/skip.rs"]
mod skip;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pvelxc_agent::host::{Vm, VmConfig, VmError};

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("pvelxc-agent-errors")
        .join(name);
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(d.join("rootfs")).unwrap();
    d
}

fn have_qemu() -> bool {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|p| p.join("qemu-system-x86_64").is_file())
}

#[tokio::test]
async fn missing_kernel_is_named() {
    let d = scratch("kernel");
    fs::write(d.join("initrd"), b"x").unwrap();
    let mut cfg = VmConfig::new(d.join("no-vmlinux"), d.join("initrd"), d.join("rootfs"));
    cfg.qemu = "/bin/true".into();
    match Vm::start(cfg).await {
        Err(e @ VmError::KernelNotFound(_)) => {
            assert!(e.to_string().contains("fetch-kernel.sh"), "{e}")
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("started without a kernel"),
    }
}

#[tokio::test]
async fn missing_qemu_is_named() {
    let d = scratch("qemu");
    let mut cfg = VmConfig::new(d.join("k"), d.join("i"), d.join("rootfs"));
    cfg.qemu = d.join("no-such-qemu");
    match Vm::start(cfg).await {
        Err(VmError::QemuNotFound(p)) => assert!(p.ends_with("no-such-qemu")),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("started without QEMU"),
    }
}

#[tokio::test]
async fn qemu_exit_during_boot_reports_its_output_and_cleans_up() {
    if !skip::require(
        have_qemu(),
        "vm",
        &["PVELXC_VM_REQUIRED"],
        "qemu-system-x86_64 not installed (crates/pvelxc-agent/setup-host.sh)",
    ) {
        return;
    }
    let d = scratch("exit");
    fs::write(d.join("vmlinux"), b"not a kernel").unwrap();
    fs::write(d.join("initrd"), b"not an initrd").unwrap();
    let mut cfg = VmConfig::new(d.join("vmlinux"), d.join("initrd"), d.join("rootfs"));
    cfg.state_dir = d.join("state");
    cfg.boot_timeout = Duration::from_secs(30);
    match Vm::start(cfg).await {
        Err(e @ VmError::QemuExited { .. }) => {
            let text = e.to_string();
            assert!(text.contains("qemu output"), "{text}");
            println!("{text}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("booted a text file"),
    }
    let left: Vec<_> = fs::read_dir(d.join("state")).unwrap().collect();
    assert!(left.is_empty(), "state dir not cleaned: {left:?}");
}

#[tokio::test]
async fn boot_timeout_kills_qemu_and_cleans_up() {
    let kernel = std::env::var_os("PVELXC_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/pvelxc/vm"))
        .join("vmlinux");
    if !skip::require(
        kernel.exists() && have_qemu(),
        "vm",
        &["PVELXC_VM_REQUIRED"],
        &format!(
            "needs {} (crates/pvelxc-agent/fetch-kernel.sh) and qemu-system-x86_64",
            kernel.display()
        ),
    ) {
        return;
    }
    let d = scratch("timeout");
    fs::write(d.join("initrd"), b"not an initrd").unwrap();
    let mut cfg = VmConfig::new(&kernel, d.join("initrd"), d.join("rootfs"));
    cfg.state_dir = d.join("state");
    cfg.boot_timeout = Duration::from_millis(300);
    match Vm::start(cfg).await {
        Err(e @ VmError::BootTimeout { .. }) => {
            assert!(e.to_string().contains("boot timeout"), "{e}")
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("booted in 300 ms with a bogus initrd"),
    }
    let left: Vec<_> = fs::read_dir(d.join("state")).unwrap().collect();
    assert!(left.is_empty(), "state dir not cleaned: {left:?}");
}
