//! Foreground runs: stdout, stderr and exit codes reach `ctr run`, `--null-io`, a TERM trap's
//! exit code, an OOM kill.

use super::{finish, run_argv, run_image, run_rootfs, strs, Backend};
use crate::common::*;

/// `ctr run --rm --rootfs`: stdout, stderr and the exit code reach ctr; `--rm` leaves no task.
pub fn run_rootfs_stdio_exit_code(b: &impl Backend, id: &str) {
    let out = run_rootfs(b, id, &[], &["/bin/sh", "-c", SCRIPT]);
    assert_hello_err_3("ctr run --rootfs", &out);
    assert!(b.env().task(id).is_none(), "--rm left the task");
    b.assert_gone(id);
}

/// `ctr run --rm` of the image: the same, and no rootfs mount left.
pub fn run_image_stdio_exit_code(b: &impl Backend, id: &str) {
    let env = b.env();
    let out = run_image(b, id, &[], &["/bin/sh", "-c", SCRIPT]);
    assert_hello_err_3("ctr run image", &out);
    assert!(env.task(id).is_none(), "--rm left the task");
    b.assert_gone(id);
    assert!(
        env.leftover_mounts().is_empty(),
        "rootfs mounts left: {:?}",
        env.leftover_mounts()
    );
}

/// `--null-io` runs (image, rootfs): the exit code still reaches ctr, the output does not;
/// `--rm` leaves no container.
pub fn null_io(b: &impl Backend, image_id: &str, rootfs_id: &str) {
    let env = b.env();
    let out = run_image(b, image_id, &["--null-io"], &["/bin/sh", "-c", SCRIPT]);
    assert_eq!(exit_code(&out), 3, "--null-io image\n{}", describe(&out));
    assert!(
        !stdout(&out).contains("hello"),
        "--null-io must not print container output\n{}",
        describe(&out)
    );
    let out = run_rootfs(b, rootfs_id, &["--null-io"], &["/bin/sh", "-c", SCRIPT]);
    assert_eq!(exit_code(&out), 3, "--null-io rootfs\n{}", describe(&out));
    assert!(!stdout(&out).contains("hello"), "{}", describe(&out));
    let ls = env.ctr_ok(&["containers", "ls", "-q"]);
    assert!(
        stdout(&ls).trim().is_empty(),
        "--rm left containers: {}",
        stdout(&ls)
    );
    b.assert_gone(image_id);
    b.assert_gone(rootfs_id);
}

/// The image run, then the `--null-io` runs.
pub fn run_image_stdio_exit_code_and_null_io(b: &impl Backend) {
    run_image_stdio_exit_code(b, "img1");
    null_io(b, "img2", "nullio");
    finish(b);
}

/// `ctr run --rm` (in the background) of a shell that exits 7 on SIGTERM, once it is ready.
pub fn spawn_term_trap(b: &impl Backend, id: &str) -> BgProcess {
    let argv = run_argv(
        b,
        &["--rm"],
        id,
        &[
            "/bin/sh",
            "-c",
            "trap 'exit 7' TERM; echo ready; while true; do sleep 0.1; done",
        ],
    );
    let mut run = b.env().ctr_spawn(&strs(&argv));
    run.wait_stdout_contains("ready", b.expect().timeout);
    run
}

/// `ctr task kill -s SIGTERM`: the container's TERM trap runs and its exit code reaches ctr run.
pub fn term_trap_exit_code(b: &impl Backend) {
    let run = spawn_term_trap(b, "trap1");
    b.env().ctr_ok(&["task", "kill", "-s", "SIGTERM", "trap1"]);
    let out = run.finish(b.expect().timeout);
    assert_eq!(
        exit_code(&out),
        7,
        "TERM trap exit code must reach ctr run\n{}",
        describe(&out)
    );
    b.assert_gone("trap1");
    finish(b);
}

/// A process over its memory limit (32 MiB) is OOM-killed: exit 137 and a TaskOOM event.
pub fn oom_event_and_exit_137(b: &impl Backend) {
    let ev = b.env().events();
    let out = run_rootfs(
        b,
        "oom1",
        &["--memory-limit", "33554432"],
        &["/bin/sh", "-c", "exec tail /dev/zero"],
    );
    assert_eq!(exit_code(&out), 137, "OOM-killed task\n{}", describe(&out));
    ev.wait_for("/tasks/oom", "oom1", b.expect().timeout);
    b.assert_gone("oom1");
    finish(b);
}
