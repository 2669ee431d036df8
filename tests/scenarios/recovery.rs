//! Recovery: containerd restarts while tasks run (and one exits meanwhile); a shim dies of SIGKILL
//! and containerd's `delete` of it cleans up.

use super::{
    assert_task_pid, finish, kill_and_remove, run_image_detached, run_rootfs_detached, Backend,
    TaskPid,
};
use crate::common::*;

/// containerd stops; one task keeps running, another exits (9) while it is down. After the
/// restart both are reported correctly (RUNNING; STOPPED with its own exit code) and the running
/// one still takes execs.
pub fn containerd_restart_with_an_exit_while_down(b: &mut impl Backend) {
    let t = b.expect().timeout;
    assert_eq!(
        b.expect().task_pid,
        TaskPid::Process,
        "this scenario signals the task's host process"
    );
    let (_r1, pid1) = run_rootfs_detached(b, "keep1", &["/bin/sleep", "1000"]);
    let (_r2, pid2) = run_rootfs_detached(
        b,
        "exit9",
        &[
            "/bin/sh",
            "-c",
            "trap 'exit 9' TERM; while true; do sleep 0.05; done",
        ],
    );
    assert_task_pid(b, pid2, "sh");
    wait_until("exit9's TERM trap to be installed", t, || {
        catches_signal(pid2, libc::SIGTERM).then_some(())
    });
    let env = b.env_mut();
    env.stop_containerd();
    // exit9 exits while containerd is down
    send_signal(pid2, libc::SIGTERM);
    wait_until("exit9 to exit while containerd is down", t, || {
        (!pid_alive(pid2)).then_some(())
    });
    assert!(pid_alive(pid1), "keep1 must survive containerd stopping");
    env.start_containerd();

    env.wait_task_status("keep1", "RUNNING", t);
    env.wait_task_status("exit9", "STOPPED", t);
    let out = env.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "after",
        "keep1",
        "/bin/echo",
        "hi",
    ]);
    assert_eq!(exit_code(&out), 0, "exec after restart\n{}", describe(&out));
    assert_eq!(
        stdout(&out),
        "hi\n",
        "exec after restart\n{}",
        describe(&out)
    );
    assert_eq!(
        env.task_rm_exit_code("exit9"),
        9,
        "exit status recorded while containerd was down"
    );
    env.ctr_ok(&["containers", "rm", "exit9"]);
    kill_and_remove(b, "keep1");
    wait_until("keep1 process gone", t, || (!pid_alive(pid1)).then_some(()));
    b.assert_gone("keep1");
    b.assert_gone("exit9");
    finish(b);
}

/// The shim of a running image container dies of SIGKILL; `ctr task rm -f` and `containers rm`
/// (containerd runs the shim binary's `delete`) leave no process, mount or shim behind.
pub fn shim_sigkill_then_rm_cleans_up(b: &impl Backend) {
    let env = b.env();
    let t = b.expect().timeout;
    let pid = run_image_detached(b, "shimdie", &["/bin/sleep", "1000"]);
    b.check_running("shimdie");
    let shims = env.shim_pids();
    assert_eq!(shims.len(), 1, "one shim expected: {shims:?}");
    let argv0 = cmdline(shims[0]).first().cloned().unwrap_or_default();
    assert!(
        argv0.ends_with(&expected_shim_binary()),
        "the shim running must be {} (runtime {}), found {argv0}",
        expected_shim_binary(),
        runtime()
    );
    if b.expect().image_rootfs_mounted {
        assert!(
            !env.leftover_mounts().is_empty(),
            "the image rootfs should be mounted while running"
        );
    }
    kill_pid(shims[0]);
    wait_until("shim to die", t, || (!pid_alive(shims[0])).then_some(()));
    // containerd notices; task rm -f may find the task already gone
    let out = env.ctr(&["task", "rm", "-f", "shimdie"]);
    if !out.status.success() {
        assert!(
            stderr(&out).contains("not found"),
            "task rm -f after shim death\n{}",
            describe(&out)
        );
    }
    env.ctr_ok(&["containers", "rm", "shimdie"]);
    wait_until("the task process to be gone after shim death", t, || {
        (!pid_alive(pid)).then_some(())
    });
    wait_until("no mount left under containerd root/state", t, || {
        env.leftover_mounts().is_empty().then_some(())
    });
    // containerd may still be running the shim's `delete` action briefly
    wait_until("no shim process left for this containerd", t, || {
        env.shim_pids().is_empty().then_some(())
    });
    b.assert_gone("shimdie");
    finish(b);
}
