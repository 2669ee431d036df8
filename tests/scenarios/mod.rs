//! The ctr scenarios every backend runs, each written once. A scenario takes a [`Backend`]: the
//! backend's private containerd ([`TestEnv`]), what legitimately differs between backends as data
//! ([`Expect`]), and the checks only that backend can make (hooks with empty defaults).
//! `tests/crun_ctr.rs`, `tests/pct_ctr.rs` and `tests/vm_ctr.rs` each implement `Backend` and keep
//! one `#[test]` per scenario (plus their backend-specific tests).
//!
//! The harness rules hold here too (see `tests/common/mod.rs`): argv only, every wait bounded by
//! the backend's [`Expect::timeout`], and every scenario removes what it created and ends with
//! [`finish`]: no container left, then the backend's own [`Backend::assert_clean`].
//!
//! By theme: [`run`] (foreground runs: stdio, exit codes, `--null-io`, TERM traps, OOM),
//! [`task`] (a detached task: exec, ps, pause/resume, metrics, kill, `kill --all`, events),
//! [`tty`] (pty runs and execs, window size and resize), [`recovery`] (containerd restart, shim
//! SIGKILL then `delete`).
// Each backend's test crate uses a subset (e.g. no `TaskPid::Vmm` outside vm_ctr).
#![allow(dead_code)]

pub mod recovery;
pub mod run;
pub mod task;
pub mod tty;

use crate::common::*;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

/// What the pid `ctr task ls` shows for a detached container is on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskPid {
    /// The container's own process (crun, pct): its `comm` is the command's, and `ctr task ps`
    /// lists host pids.
    Process,
    /// The VM's QEMU (vm): stopped (`T`) while paused; `ctr task ps` lists it and guest pids.
    Vmm,
}

/// Where backends legitimately differ, as data.
#[derive(Debug, Clone)]
pub struct Expect {
    /// ctr flags every run of this backend needs (vm: the backend annotation).
    pub run_flags: &'static [&'static str],
    /// Bound of every wait.
    pub timeout: Duration,
    /// What the task pid is.
    pub task_pid: TaskPid,
    /// `kill --all` signal and the exit code it gives a `sleep`: SIGKILL/137 where the
    /// container's process is its pid 1 (crun: pid 1 ignores an unhandled SIGTERM), SIGTERM/143
    /// where an init of ours is pid 1 and signals every process (pct).
    pub kill_all: (&'static str, i32),
    /// An image container's rootfs stays mounted under containerd's root/state while it runs.
    pub image_rootfs_mounted: bool,
    /// An `exec -t` process starts on a terminal of the caller's size already (pct); otherwise
    /// ctr's resize after the start sets it (the stock shim: `stty` may fail or read 0x0 first).
    pub exec_tty_sized_at_start: bool,
    /// How many levels above the task process's cgroup the container's CPU and memory limits
    /// are set: 0 (crun: the container's own cgroup), 1 (pct: the CT's `lxc/<vmid>`, its
    /// processes in `lxc/<vmid>/ns`).
    pub limits_up: usize,
}

/// crun (and the stock shim, under the self-check): the container's process is its pid 1 and
/// a host process; the image rootfs is mounted in the bundle.
pub const CRUN: Expect = Expect {
    run_flags: &[],
    timeout: Duration::from_secs(30),
    task_pid: TaskPid::Process,
    kill_all: ("SIGKILL", 137),
    image_rootfs_mounted: true,
    exec_tty_sized_at_start: false,
    limits_up: 0,
};

/// pct: the container's process runs under our init (pid 1 of the CT), which signals every
/// process on `kill --all`; the image's rootfs is packed into a template, not kept mounted.
pub const PCT: Expect = Expect {
    run_flags: &[],
    timeout: Duration::from_secs(60),
    task_pid: TaskPid::Process,
    kill_all: ("SIGTERM", 143),
    image_rootfs_mounted: false,
    exec_tty_sized_at_start: true,
    limits_up: 1,
};

/// vm: every run carries the backend annotation; the task pid is QEMU; the image rootfs is
/// mounted on the host and shared into the guest.
pub const VM: Expect = Expect {
    run_flags: &["--annotation", "io.pvelxc.backend=vm"],
    timeout: Duration::from_secs(60),
    task_pid: TaskPid::Vmm,
    kill_all: ("SIGKILL", 137),
    image_rootfs_mounted: true,
    exec_tty_sized_at_start: false,
    limits_up: 0,
};

/// A backend under test: its private containerd, its expectations, its own checks.
pub trait Backend {
    fn env(&self) -> &TestEnv;
    fn env_mut(&mut self) -> &mut TestEnv;
    fn expect(&self) -> &Expect;
    /// Checks on the running container `id` only this backend can make (pct: VMID, CT config,
    /// `pct list`; vm: the state dir).
    fn check_running(&self, _id: &str) {}
    /// Nothing of the removed container `id` is left (pct: no CT of that name; vm: no QEMU, no
    /// state dir). Others may still run.
    fn assert_gone(&self, _id: &str) {}
    /// Nothing at all is left of what the scenario created (pct: no CT, per-container dir, VMID
    /// reservation or volume, foreign guests untouched).
    fn assert_clean(&self) {}
}

/// The backend's run flags followed by `extra`.
pub fn flags<'a>(b: &'a impl Backend, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = b.expect().run_flags.to_vec();
    v.extend_from_slice(extra);
    v
}

/// `ctr run --rm` of a fresh rootfs copy with the backend's flags.
pub fn run_rootfs(b: &impl Backend, id: &str, extra: &[&str], cmd: &[&str]) -> Output {
    b.env().run_rootfs(id, &flags(b, extra), cmd)
}

/// `ctr run --rm` of the busybox image with the backend's flags.
pub fn run_image(b: &impl Backend, id: &str, extra: &[&str], cmd: &[&str]) -> Output {
    b.env().run_image(id, &flags(b, extra), cmd)
}

/// `ctr run -d` of a fresh rootfs copy; waits until RUNNING. Returns (rootfs, task pid).
pub fn run_rootfs_detached(b: &impl Backend, id: &str, cmd: &[&str]) -> (PathBuf, u32) {
    b.env().run_rootfs_detached(id, &flags(b, &[]), cmd)
}

/// `ctr run -d` of the image; waits until RUNNING. Returns the task pid.
pub fn run_image_detached(b: &impl Backend, id: &str, cmd: &[&str]) -> u32 {
    b.env().run_image_detached(id, &flags(b, &[]), cmd)
}

/// argv of `ctr run <head> --runtime R <backend flags> --env PATH --rootfs <fresh copy> id cmd`,
/// for runs a test drives itself (on a pty, in the background).
pub fn run_argv(b: &impl Backend, head: &[&str], id: &str, cmd: &[&str]) -> Vec<String> {
    let rootfs = b.env().rootfs().display().to_string();
    let mut v: Vec<String> = vec!["run".into()];
    v.extend(head.iter().map(|s| s.to_string()));
    v.extend(["--runtime".into(), runtime()]);
    v.extend(b.expect().run_flags.iter().map(|s| s.to_string()));
    v.extend([
        "--env".into(),
        CONTAINER_PATH.into(),
        "--rootfs".into(),
        rootfs,
    ]);
    v.push(id.into());
    v.extend(cmd.iter().map(|s| s.to_string()));
    v
}

/// `&[String]` as `Vec<&str>`.
pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// SIGKILL the task `id`, wait until STOPPED, check its exit code (137), delete task and
/// container.
pub fn kill_and_remove(b: &impl Backend, id: &str) {
    let env = b.env();
    env.ctr_ok(&["task", "kill", "-s", "SIGKILL", id]);
    env.wait_task_status(id, "STOPPED", b.expect().timeout);
    assert_eq!(env.task_rm_exit_code(id), 137, "{id}: SIGKILL exit code");
    env.ctr_ok(&["containers", "rm", id]);
}

/// The end of every scenario: no container left, nothing of the backend left.
pub fn finish(b: &impl Backend) {
    let ls = b.env().ctr_ok(&["containers", "ls", "-q"]);
    assert!(
        stdout(&ls).trim().is_empty(),
        "containers left: {}",
        stdout(&ls)
    );
    b.assert_clean();
}

/// The task pid is what the backend says: the container's `comm` process, or QEMU.
pub fn assert_task_pid(b: &impl Backend, pid: u32, comm: &str) {
    assert!(pid > 0 && pid_alive(pid), "task pid {pid} must be alive");
    match b.expect().task_pid {
        TaskPid::Process => {
            let c = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            assert_eq!(c.trim(), comm, "task pid {pid} is the container's process");
        }
        TaskPid::Vmm => {
            let argv = cmdline(pid);
            assert!(
                argv.first().is_some_and(|a| a.contains("qemu-system")),
                "task pid {pid} must be QEMU: {argv:?}"
            );
        }
    }
}
