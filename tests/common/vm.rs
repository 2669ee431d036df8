//! The vm backend's test host: the kernel cache, a static guest agent, the shim config that
//! points at them, and one VM test at a time (TCG boots on 2 shared cores get slow when
//! stacked). Shared by tests/vm_ctr.rs and tests/hostile_vm.rs.

use super::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

pub fn cache_dir() -> PathBuf {
    std::env::var_os("PVELXC_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/pvelxc/vm"))
}

pub fn work_dir() -> PathBuf {
    target_dir().join("tmp").join("vm-shim")
}

/// The static agent: `PVELXC_AGENT_BIN`, else built (once) like crates/pvelxc-agent/tests/boot.rs.
pub fn static_agent() -> PathBuf {
    if let Some(p) = std::env::var_os("PVELXC_AGENT_BIN") {
        return PathBuf::from(p);
    }
    let target = target_dir().join("tmp").join("agent-static");
    let triple = "x86_64-unknown-linux-gnu";
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = run_cmd(
        {
            let mut c = Command::new(cargo);
            c.args([
                "build",
                "--release",
                "-p",
                "pvelxc-agent",
                "--bin",
                "pvelxc-agent",
                "--target",
                triple,
            ])
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(workspace_dir());
            c
        },
        None,
        Duration::from_secs(900),
    );
    assert!(
        out.status.success(),
        "building the static agent failed\n{}",
        describe(&out)
    );
    target.join(triple).join("release").join("pvelxc-agent")
}

/// The shim config for VM tests (written once per process); the initramfs path is shared and
/// built by the shim itself on first use (removed here when older than the agent).
pub fn vm_config() -> &'static PathBuf {
    static CFG: OnceLock<PathBuf> = OnceLock::new();
    CFG.get_or_init(|| {
        let agent = static_agent();
        let dir = work_dir();
        fs::create_dir_all(&dir).expect("mkdir vm work dir");
        let initramfs = dir.join("initramfs.cpio");
        let mtime = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
        if let (Some(i), Some(a)) = (mtime(&initramfs), mtime(&agent)) {
            if i < a {
                let _ = fs::remove_file(&initramfs);
            }
        }
        let cache = cache_dir();
        let text = format!(
            "[vm]\nkernel = {:?}\nmodules = {:?}\ninitramfs = {:?}\nagent = {:?}\nboot_timeout_secs = 60\n",
            cache.join("vmlinux").display().to_string(),
            cache.join("modules").display().to_string(),
            initramfs.display().to_string(),
            agent.display().to_string(),
        );
        // Same content from every test process: write atomically to one shared name.
        let cfg = dir.join("config.toml");
        let tmp = dir.join(format!(".config-{}.toml", std::process::id()));
        fs::write(&tmp, text).expect("write vm config");
        fs::rename(&tmp, &cfg).expect("rename vm config");
        cfg
    })
}

/// One VM test at a time: TCG boots on 2 shared cores get slow when stacked.
pub fn serial() -> MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    M.lock().unwrap_or_else(|p| p.into_inner())
}

/// None when the test must be skipped (see `common::skip`: another runtime under test, or no
/// guest kernel cache — a failure under CI or with PVELXC_VM_REQUIRED set).
pub fn vm_env() -> Option<(MutexGuard<'static, ()>, TestEnv)> {
    if skip_unless_our_runtime() {
        return None;
    }
    let cache = cache_dir();
    let missing: Vec<String> = [cache.join("vmlinux"), cache.join("modules")]
        .into_iter()
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if !missing.is_empty() {
        skip::unavailable(
            "vm",
            &["PVELXC_VM_REQUIRED"],
            &format!(
                "kernel cache incomplete (missing {}): run crates/pvelxc-agent/fetch-kernel.sh",
                missing.join(", ")
            ),
        );
        return None;
    }
    let cfg = vm_config().clone();
    let guard = serial();
    Some((guard, TestEnv::builder().env("PVELXC_CONFIG", cfg).start()))
}
