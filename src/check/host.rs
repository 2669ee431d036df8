//! Host facts every backend depends on: containerd and whether it can find this shim, the
//! cgroup layout, the kernel.

use std::path::PathBuf;
use std::time::Duration;

use super::Report;
use crate::sys::command::{which, Cmd};

/// First line of `prog --version` (or the error), bounded to 10 s.
pub async fn version_of(prog: &str, arg: &str) -> Result<String, String> {
    let out = Cmd::new([prog, arg])
        .timeout(Duration::from_secs(10))
        .output()
        .await
        .map_err(|e| e.to_string())?;
    let first = out
        .stdout
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    if out.success() && !first.is_empty() {
        Ok(first)
    } else {
        Err(format!(
            "`{prog} {arg}` exited {}: {}",
            out.code,
            out.stderr.trim()
        ))
    }
}

pub async fn report() -> Report {
    let mut r = Report::default();
    match which("containerd") {
        Ok(p) => {
            let v = version_of(&p.display().to_string(), "--version").await;
            r.fact(
                "containerd",
                format!("{} ({})", v.unwrap_or_else(|e| e), p.display()),
            );
            // containerd finds `containerd-shim-<name>-v2` on its PATH or beside its binary.
            let beside = p
                .parent()
                .map(|d| d.join("containerd-shim-pvelxc-v2"))
                .filter(|s| s.is_file());
            match which("containerd-shim-pvelxc-v2").ok().or(beside) {
                Some(s) => r.fact("shim found by containerd", s.display().to_string()),
                None => r.problem(
                    "containerd-shim-pvelxc-v2 is neither on PATH nor beside containerd: \
                     containerd cannot start io.containerd.pvelxc.v2",
                ),
            }
        }
        Err(e) => r.problem(format!("containerd: {e}")),
    }
    r.fact("cgroup", cgroup_mode());
    if let Ok(k) = std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        r.fact("kernel", k.trim());
    }
    if let Ok(exe) = std::env::current_exe() {
        r.fact("this binary", exe.display().to_string());
    }
    r.done()
}

fn cgroup_mode() -> String {
    let unified = PathBuf::from("/sys/fs/cgroup/cgroup.controllers");
    if unified.is_file() {
        "v2 (unified)".into()
    } else if PathBuf::from("/sys/fs/cgroup/unified/cgroup.controllers").is_file() {
        "hybrid (v1 controllers, v2 at /sys/fs/cgroup/unified)".into()
    } else {
        "v1".into()
    }
}
