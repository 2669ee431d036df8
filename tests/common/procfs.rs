//! /proc lookups: live pids, command lines, the shims of a containerd, mounts under a directory;
//! and the one way to kill: SIGKILL to a process the test started (directly or through its
//! private containerd), by pid.

use std::fs;
use std::path::Path;

/// A process exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            // state is the field after the ")" closing the comm
            let state = s
                .rfind(')')
                .and_then(|i| s[i + 1..].split_whitespace().next())
                .unwrap_or("?");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

/// argv of a process, empty when gone.
pub fn cmdline(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn all_pids() -> Vec<u32> {
    let mut v = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(p) = e.file_name().to_str().and_then(|s| s.parse().ok()) {
                v.push(p);
            }
        }
    }
    v
}

pub(super) fn ppid(pid: u32) -> Option<u32> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let i = s.rfind(')')?;
    s[i + 1..].split_whitespace().nth(1)?.parse().ok()
}

/// Pids of shim processes (any `containerd-shim-*` binary) serving the containerd at `address`.
pub fn shim_pids_for(address: &Path) -> Vec<u32> {
    let addr = address.to_string_lossy();
    all_pids()
        .into_iter()
        .filter(|p| {
            let argv = cmdline(*p);
            let is_shim = argv
                .first()
                .map(|a0| {
                    Path::new(a0)
                        .file_name()
                        .map(|f| f.to_string_lossy().starts_with("containerd-shim"))
                        .unwrap_or(false)
                })
                .unwrap_or(false);
            is_shim && argv.windows(2).any(|w| w[0] == "-address" && w[1] == addr) && pid_alive(*p)
        })
        .collect()
}

/// VmRSS of a process in kB.
pub fn vm_rss_kb(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Mount points (as in /proc/self/mountinfo) at or under `dir`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().trim_end_matches('/').to_string();
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|m| m.replace("\\040", " "))
        .filter(|m| m == &prefix || m.starts_with(&format!("{prefix}/")))
        .collect()
}

/// Send `sig` to a process the caller started (directly or through its private containerd).
pub fn send_signal(pid: u32, sig: i32) {
    // SAFETY: plain kill(2) on a pid we own.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// SIGKILL a process (which the caller started, directly or through its private containerd).
pub fn kill_pid(pid: u32) {
    send_signal(pid, libc::SIGKILL);
}

/// True when `pid` has a handler installed for `sig` (`SigCgt` of /proc/<pid>/status).
pub fn catches_signal(pid: u32, sig: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let hex = s
                .lines()
                .find_map(|l| l.strip_prefix("SigCgt:"))?
                .trim()
                .to_string();
            u64::from_str_radix(&hex, 16).ok()
        })
        .is_some_and(|mask| mask & (1u64 << (sig - 1)) != 0)
}
