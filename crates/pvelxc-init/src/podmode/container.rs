//! `pvelxc-init container FILE`: the helper reads the [`ContainerSpec`], prepares the
//! process and the cgroups, and forks the container's process in a new pid namespace (unless
//! the pod shares one); the child takes a new mount namespace, joins its cgroups, builds
//! its root ([`super::mounts`]) and execs. The helper forwards signals and exits with the
//! child's status.

use super::{cgroup, helper, log, mounts, read_bounded, sys, MAX_SPEC};
use pvelxc_init::pod::{self, ContainerSpec};
use pvelxc_init::process::{self, Prepared};
use std::os::fd::OwnedFd;
use std::path::Path;

const MODE: &str = "container";

pub fn main(file: &Path) -> i32 {
    match run(file) {
        Ok(code) => code,
        Err(e) => {
            log(MODE, &e);
            126
        }
    }
}

fn run(file: &Path) -> Result<i32, String> {
    let spec = pod::parse_spec(&read_bounded(file, MAX_SPEC)?)?;
    let prepared = process::prepare(&spec.process)?;
    let cg = match &spec.cgroup {
        Some(c) => Some(cgroup::create(c)?),
        None => None,
    };
    // The write end of the alive pipe stays open in the helper until the child is gone.
    let started = start(&spec, &prepared, cg.as_ref());
    let code = started.map(|(pid, _alive)| helper::supervise(pid, MODE));
    if let Some(cg) = &cg {
        cg.remove();
    }
    code
}

/// Fork the container's process; the helper gets its pid and the alive pipe's write end.
fn start(
    spec: &ContainerSpec,
    prepared: &Prepared,
    cg: Option<&cgroup::Container>,
) -> Result<(libc::pid_t, OwnedFd), String> {
    helper::release_tty();
    let (alive_r, alive_w) = helper::alive_pipe()?;
    if spec.new_pid_ns {
        sys::unshare(libc::CLONE_NEWPID).map_err(|e| format!("unshare(CLONE_NEWPID): {e}"))?;
    }
    helper::block_signals();
    let pid = helper::fork()?;
    if pid == 0 {
        drop(alive_w);
        let code = child(spec, prepared, cg, &alive_r);
        // SAFETY: leave without running the helper's destructors or atexit handlers.
        unsafe { libc::_exit(code) };
    }
    drop(alive_r);
    Ok((pid, alive_w))
}

fn child(
    spec: &ContainerSpec,
    prepared: &Prepared,
    cg: Option<&cgroup::Container>,
    alive: &OwnedFd,
) -> i32 {
    let setup = || -> Result<(), String> {
        helper::child_start(alive)?;
        if let Some(cg) = cg {
            cg.procs.join()?;
        }
        sys::unshare(libc::CLONE_NEWNS).map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
        mounts::build_root(spec)
    };
    if let Err(e) = setup() {
        log(MODE, &e);
        return 126;
    }
    helper::child_exec(prepared, alive, MODE)
}
