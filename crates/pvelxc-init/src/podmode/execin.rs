//! `pvelxc-init exec-in PID FILE`: a `Process` (FILE, as for `exec`) run inside the container
//! whose process has the in-CT pid PID: the helper opens PID's cgroup.procs files (as the CT
//! sees them) and namespaces first, joins its ipc, uts, cgroup, pid and (last) mount
//! namespaces, and forks; the child joins the cgroups and execs with the container's `/` as
//! root. The helper forwards signals and exits with the child's status.

use super::{cgroup, helper, log, read_bounded, sys, MAX_SPEC};
use pvelxc_init::process;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

const MODE: &str = "exec-in";

/// The namespaces joined, in order: mnt last (after it, /proc is the container's).
const NAMESPACES: [&str; 5] = ["ipc", "uts", "cgroup", "pid", "mnt"];

pub fn main(pid: &str, file: &Path) -> i32 {
    let Some(pid) = pid.parse::<i32>().ok().filter(|p| *p > 0) else {
        log(MODE, &format!("bad pid {pid:?}"));
        return 2;
    };
    match run(pid, file) {
        Ok(code) => code,
        Err(e) => {
            log(MODE, &e);
            126
        }
    }
}

fn run(pid: i32, file: &Path) -> Result<i32, String> {
    let p = process::from_json(&read_bounded(file, MAX_SPEC)?)?;
    let prepared = process::prepare(&p)?;
    let procs = cgroup::procs_of(pid)?;
    let mut nss: Vec<(&str, OwnedFd)> = Vec::new();
    for ns in NAMESPACES {
        let path = format!("/proc/{pid}/ns/{ns}");
        match sys::open(
            &sys::cstr(path.as_bytes()).map_err(|e| e.to_string())?,
            libc::O_RDONLY,
            0,
        ) {
            Ok(fd) => nss.push((ns, fd)),
            // A kernel without cgroup namespaces.
            Err(e) if ns == "cgroup" && e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(format!("open {path}: {e}")),
        }
    }
    for (ns, fd) in &nss {
        sys::setns(fd.as_fd()).map_err(|e| format!("setns {ns} of pid {pid}: {e}"))?;
    }
    drop(nss);
    helper::release_tty();
    let (alive_r, alive_w) = helper::alive_pipe()?;
    helper::block_signals();
    let child = helper::fork()?;
    if child == 0 {
        drop(alive_w);
        let setup = || -> Result<(), String> {
            helper::child_start(&alive_r)?;
            procs.join()
        };
        let code = match setup() {
            Ok(()) => helper::child_exec(&prepared, &alive_r, MODE),
            Err(e) => {
                log(MODE, &e);
                126
            }
        };
        // SAFETY: leave without running the helper's destructors or atexit handlers.
        unsafe { libc::_exit(code) };
    }
    drop(alive_r);
    let code = helper::supervise(child, MODE);
    drop(alive_w);
    Ok(code)
}
