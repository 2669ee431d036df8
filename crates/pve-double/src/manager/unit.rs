//! How the manager runs `pve-container@<vmid>.service`: `lxc-start -F` with a clean
//! environment, systemd's default rlimits, stdin/stdout /dev/null, stderr to
//! `run/pve/ct-<vmid>.stderr`, its own session and its own cgroup
//! `system.slice/pve-container@<vmid>.service` (best effort per hierarchy).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::paths::Root;

/// Environment systemd gives a system service (PVE's unit sets nothing more).
pub const UNIT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const INF: u64 = libc::RLIM_INFINITY;
/// capability number (linux/capability.h)
const CAP_SYS_RESOURCE: u32 = 24;

/// systemd's defaults for system services: the kernel's limits of PID 1 plus systemd's
/// `DefaultLimitNOFILE=1024:524288` (v240+) and `DefaultLimitMEMLOCK=8M` (v253+; also the
/// kernel's default since 5.16). NPROC and SIGPENDING are the kernel's boot-time value
/// `threads-max / 2`.
pub fn systemd_rlimits() -> Vec<(libc::__rlimit_resource_t, u64, u64)> {
    let threads = fs::read_to_string("/proc/sys/kernel/threads-max")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(63_000 * 2);
    let nproc = (threads / 2).max(1);
    vec![
        (libc::RLIMIT_CPU, INF, INF),
        (libc::RLIMIT_FSIZE, INF, INF),
        (libc::RLIMIT_DATA, INF, INF),
        (libc::RLIMIT_STACK, 8 << 20, INF),
        (libc::RLIMIT_CORE, 0, INF),
        (libc::RLIMIT_RSS, INF, INF),
        (libc::RLIMIT_NPROC, nproc, nproc),
        (libc::RLIMIT_NOFILE, 1024, 524_288),
        (libc::RLIMIT_MEMLOCK, 8 << 20, 8 << 20),
        (libc::RLIMIT_AS, INF, INF),
        (libc::RLIMIT_LOCKS, INF, INF),
        (libc::RLIMIT_SIGPENDING, nproc, nproc),
        (libc::RLIMIT_MSGQUEUE, 819_200, 819_200),
        (libc::RLIMIT_NICE, 0, 0),
        (libc::RLIMIT_RTPRIO, 0, 0),
        (libc::RLIMIT_RTTIME, INF, INF),
    ]
}

/// Limits the unit cannot get as systemd would give them (our hard limit is lower and
/// raising it needs CAP_SYS_RESOURCE), as log lines.
pub fn rlimit_shortfalls() -> Vec<String> {
    let mut out = Vec::new();
    for (res, _, max) in systemd_rlimits() {
        let mut old = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we pass.
        if unsafe { libc::getrlimit(res, &mut old) } == 0 && old.rlim_max < max {
            let cap_ok = nix::unistd::geteuid().is_root()
                && fs::read_to_string("/proc/self/status")
                    .map(|s| {
                        s.lines()
                            .find_map(|l| l.strip_prefix("CapEff:"))
                            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                            .map(|c| c & (1 << CAP_SYS_RESOURCE) != 0)
                            .unwrap_or(false)
                    })
                    .unwrap_or(false);
            if !cap_ok {
                out.push(format!(
                    "rlimit {res}: hard limit {} below systemd's {max} (no CAP_SYS_RESOURCE)",
                    old.rlim_max
                ));
            }
        }
    }
    out
}

/// Hierarchies and the manager's own cgroup in each: (mount dir, cgroup path).
fn own_cgroups() -> Vec<(PathBuf, String)> {
    let v2 = crate::lxc::host_is_cgroup2();
    let text = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut out = Vec::new();
    for l in text.lines() {
        let mut it = l.splitn(3, ':');
        let (Some(_), Some(ctrl), Some(path)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let dir = if ctrl.is_empty() {
            if v2 {
                PathBuf::from("/sys/fs/cgroup")
            } else {
                PathBuf::from("/sys/fs/cgroup/unified")
            }
        } else {
            PathBuf::from("/sys/fs/cgroup").join(ctrl.strip_prefix("name=").unwrap_or(ctrl))
        };
        if dir.join("cgroup.procs").exists() {
            out.push((dir, path.to_string()));
        }
    }
    out
}

/// The unit's cgroup directories, created below the manager's own cgroup of each hierarchy
/// (`/` on a host, so `/sys/fs/cgroup/<ctrl>/system.slice/pve-container@N.service`).
pub fn cgroup_dirs(vmid: u32) -> Vec<PathBuf> {
    own_cgroups()
        .into_iter()
        .map(|(dir, own)| {
            dir.join(own.trim_start_matches('/'))
                .join("system.slice")
                .join(format!("pve-container@{vmid}.service"))
        })
        .collect()
}

/// cpuset v1: a new cgroup has empty cpus/mems and refuses tasks; copy them from the parent.
fn init_cpuset(dir: &Path) {
    for f in ["cpuset.cpus", "cpuset.mems"] {
        let p = dir.join(f);
        if !p.exists() {
            return;
        }
        if fs::read_to_string(&p)
            .map(|t| t.trim().is_empty())
            .unwrap_or(false)
        {
            if let Some(parent) = dir.parent() {
                if let Ok(v) = fs::read_to_string(parent.join(f)) {
                    let _ = fs::write(&p, v.trim());
                }
            }
        }
    }
}

/// Create the unit's cgroups and open their `cgroup.procs` for the child to join; failures
/// are returned as log lines and that hierarchy is skipped.
pub fn prepare_cgroups(vmid: u32) -> (Vec<OwnedFd>, Vec<String>) {
    let mut fds = Vec::new();
    let mut log = Vec::new();
    for dir in cgroup_dirs(vmid) {
        let res = (|| -> io::Result<OwnedFd> {
            if let Some(slice) = dir.parent() {
                fs::create_dir_all(slice)?;
                init_cpuset(slice);
            }
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            init_cpuset(&dir);
            let f: File = OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))?;
            Ok(f.into())
        })();
        match res {
            Ok(fd) => fds.push(fd),
            Err(e) => log.push(format!("cgroup '{}' not used - {e}", dir.display())),
        }
    }
    (fds, log)
}

/// Remove the unit's (empty) cgroups after it ended.
pub fn remove_cgroups(vmid: u32) {
    for dir in cgroup_dirs(vmid) {
        let _ = fs::remove_dir(&dir);
    }
}

/// The unit's command: argv from lxc::start_argv, clean environment, stdio, session, rlimits,
/// cgroups (the fds in `cgroups` must stay open until spawn returned).
pub fn command(root: &Root, vmid: u32, stderr: File, cgroups: &[OwnedFd]) -> Command {
    let argv = crate::lxc::start_argv(root, vmid);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .env("PATH", UNIT_PATH)
        .env("LANG", "C")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr));
    let limits = systemd_rlimits();
    let fds: Vec<i32> = cgroups.iter().map(|f| f.as_raw_fd()).collect();
    // SAFETY: only async-signal-safe syscalls (write, setrlimit, setsid, sigprocmask,
    // close_range) on data prepared before fork; no allocation.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &fds {
                // "0" = the writing process; a refusal only loses that hierarchy
                libc::write(*fd, b"0".as_ptr().cast(), 1);
            }
            for (res, cur, max) in &limits {
                let rl = libc::rlimit {
                    rlim_cur: *cur,
                    rlim_max: *max,
                };
                if libc::setrlimit(*res, &rl) != 0 {
                    // no CAP_SYS_RESOURCE to raise a hard limit: the closest allowed values
                    let mut old: libc::rlimit = std::mem::zeroed();
                    if libc::getrlimit(*res, &mut old) == 0 {
                        let rl = libc::rlimit {
                            rlim_cur: (*cur).min(old.rlim_max),
                            rlim_max: (*max).min(old.rlim_max),
                        };
                        libc::setrlimit(*res, &rl);
                    }
                }
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            nix::unistd::setsid().map_err(io::Error::from)?;
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_systemds() {
        let l = systemd_rlimits();
        assert!(l.contains(&(libc::RLIMIT_NOFILE, 1024, 524_288)));
        assert!(l.contains(&(libc::RLIMIT_CORE, 0, INF)));
        assert_eq!(l.len(), 16);
    }

    #[test]
    fn unit_cgroup_names() {
        for d in cgroup_dirs(960_123) {
            assert!(
                d.ends_with("system.slice/pve-container@960123.service"),
                "{d:?}"
            );
            assert!(d.starts_with("/sys/fs/cgroup"));
        }
    }
}
