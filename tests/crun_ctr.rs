//! "The shim on a real containerd": drive `ctr` against a private containerd with the runtime under
//! test (default backend: crun). Run against the stock shim with
//! `PVELXC_TEST_RUNTIME=io.containerd.runc.v2 cargo test --release --test crun_ctr`.

// An integration test crate: a failed step panics with its context. (The workspace denies
// unwrap/expect and unexplained unsafe in shipped code; tests are exempt.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::undocumented_unsafe_blocks
)]

mod common;

use common::*;
use std::fs;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
const SCRIPT: &str = "echo hello; echo err >&2; exit 3";

fn assert_hello_err_3(what: &str, out: &std::process::Output) {
    assert_eq!(exit_code(out), 3, "{what}: exit code\n{}", describe(out));
    assert_eq!(stdout(out), "hello\n", "{what}: stdout\n{}", describe(out));
    assert!(
        stderr(out).contains("err"),
        "{what}: stderr must carry 'err'\n{}",
        describe(out)
    );
}

// ------------------------------------------------------------------------------------------
// Foreground runs: stdio and exit codes
// ------------------------------------------------------------------------------------------

#[test]
fn run_rootfs_stdout_stderr_exit_code() {
    let env = TestEnv::new();
    let out = env.run_rootfs("rootfs1", &[], &["/bin/sh", "-c", SCRIPT]);
    assert_hello_err_3("ctr run --rootfs", &out);
    assert!(env.task("rootfs1").is_none(), "--rm left the task");
}

#[test]
fn run_image_stdout_stderr_exit_code_and_null_io() {
    let env = TestEnv::new();
    let out = env.run_image("img1", &[], &["/bin/sh", "-c", SCRIPT]);
    assert_hello_err_3("ctr run image", &out);

    let out = env.run_image("img2", &["--null-io"], &["/bin/sh", "-c", SCRIPT]);
    assert_eq!(
        exit_code(&out),
        3,
        "--null-io exit code\n{}",
        describe(&out)
    );
    assert!(
        !stdout(&out).contains("hello"),
        "--null-io must not print container output\n{}",
        describe(&out)
    );

    let out = env.run_rootfs("nullio", &["--null-io"], &["/bin/sh", "-c", SCRIPT]);
    assert_eq!(exit_code(&out), 3, "--null-io rootfs\n{}", describe(&out));
    let ls = env.ctr_ok(&["containers", "ls", "-q"]);
    assert!(
        stdout(&ls).trim().is_empty(),
        "--rm left containers: {}",
        stdout(&ls)
    );
}

#[test]
fn term_trap_exit_code_reaches_ctr_run() {
    let env = TestEnv::new();
    let rootfs = env.rootfs();
    let rt = runtime();
    let rootfs_s = rootfs.display().to_string();
    let mut run = env.ctr_spawn(&[
        "run",
        "--rm",
        "--runtime",
        &rt,
        "--env",
        CONTAINER_PATH,
        "--rootfs",
        &rootfs_s,
        "trap1",
        "/bin/sh",
        "-c",
        "trap 'exit 7' TERM; echo ready; while true; do sleep 0.1; done",
    ]);
    run.wait_stdout_contains("ready", T);
    env.ctr_ok(&["task", "kill", "-s", "SIGTERM", "trap1"]);
    let out = run.finish(T);
    assert_eq!(
        exit_code(&out),
        7,
        "TERM trap exit code must reach ctr run\n{}",
        describe(&out)
    );
}

// ------------------------------------------------------------------------------------------
// Detached task: exec, ps, pause/resume, metrics, kill
// ------------------------------------------------------------------------------------------

#[test]
fn detached_exec_ps_pause_resume_metrics_kill() {
    let env = TestEnv::new();
    let (_rootfs, pid) = env.run_rootfs_detached("det1", &[], &["/bin/sleep", "1000"]);
    assert!(pid > 0 && pid_alive(pid), "task pid {pid} must be alive");

    // exec with stdin piped
    let out = env.ctr_stdin(
        b"x\n",
        &[
            "task",
            "exec",
            "--exec-id",
            "e1",
            "det1",
            "/bin/sh",
            "-c",
            "cat; exit 5",
        ],
    );
    assert_eq!(exit_code(&out), 5, "exec exit code\n{}", describe(&out));
    assert_eq!(
        stdout(&out),
        "x\n",
        "exec stdin->stdout\n{}",
        describe(&out)
    );

    // exec stdout/stderr separation and exit 0
    let out = env.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e2",
        "det1",
        "/bin/sh",
        "-c",
        "echo out; echo err >&2",
    ]);
    assert_eq!(exit_code(&out), 0, "{}", describe(&out));
    assert_eq!(stdout(&out), "out\n", "{}", describe(&out));
    assert!(stderr(&out).contains("err"), "{}", describe(&out));

    // ps lists the init pid
    let ps = env.ctr_ok(&["task", "ps", "det1"]);
    let pids: Vec<u32> = stdout(&ps)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(
        pids.contains(&pid),
        "ctr task ps must list init pid {pid}: {}",
        stdout(&ps)
    );

    // pause / resume
    env.ctr_ok(&["task", "pause", "det1"]);
    env.wait_task_status("det1", "PAUSED", T);
    env.ctr_ok(&["task", "resume", "det1"]);
    env.wait_task_status("det1", "RUNNING", T);

    // metrics: memory usage non-zero, some cpu figure
    let m = stdout(&env.ctr_ok(&["task", "metrics", "det1"]));
    let mem = m
        .lines()
        .find(|l| {
            let k = l.split_whitespace().next().unwrap_or("");
            k == "memory.usage_in_bytes" || k == "memory.usage"
        })
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no memory usage figure in metrics:\n{m}"));
    assert!(mem > 0, "memory usage must be non-zero:\n{m}");
    assert!(
        m.lines()
            .any(|l| l.starts_with("cpuacct.usage") || l.starts_with("cpu.usage")),
        "no cpu figure in metrics:\n{m}"
    );

    // kill -s SIGKILL -> STOPPED, exit 137
    env.ctr_ok(&["task", "kill", "-s", "SIGKILL", "det1"]);
    env.wait_task_status("det1", "STOPPED", T);
    assert_eq!(env.task_rm_exit_code("det1"), 137);
    env.ctr_ok(&["containers", "rm", "det1"]);
    wait_until("container process to be gone", T, || {
        (!pid_alive(pid)).then_some(())
    });
}

#[test]
fn kill_all_stops_every_process() {
    let env = TestEnv::new();
    let (_rootfs, pid) = env.run_rootfs_detached("all1", &[], &["/bin/sleep", "1000"]);
    env.ctr_ok(&[
        "task",
        "exec",
        "-d",
        "--exec-id",
        "bg",
        "all1",
        "/bin/sleep",
        "999",
    ]);
    let extra = wait_until("exec'd sleep to show in ctr task ps", T, || {
        env.task_pids("all1").into_iter().find(|x| *x != pid)
    });
    env.ctr_ok(&["task", "kill", "--all", "-s", "SIGKILL", "all1"]);
    env.wait_task_status("all1", "STOPPED", T);
    wait_until("all container processes to be gone", T, || {
        (!pid_alive(pid) && !pid_alive(extra)).then_some(())
    });
    assert_eq!(env.task_rm_exit_code("all1"), 137);
}

// ------------------------------------------------------------------------------------------
// TTY
// ------------------------------------------------------------------------------------------

fn pts_line(out: &str) -> bool {
    out.lines().any(|l| l.trim().starts_with("/dev/pts/"))
}

#[test]
fn tty_run_exec_and_window_size() {
    let env = TestEnv::new();
    let rt = runtime();
    let rootfs = env.rootfs().display().to_string();

    // run -t: tty and exit code
    let cmd = env.ctr_command(&[
        "run",
        "--rm",
        "-t",
        "--runtime",
        &rt,
        "--env",
        CONTAINER_PATH,
        "--rootfs",
        &rootfs,
        "tty1",
        "/bin/sh",
        "-c",
        "tty; exit 4",
    ]);
    let (code, out) = run_in_pty(cmd, 24, 80, T);
    assert_eq!(code, 4, "ctr run -t exit code; output {out:?}");
    assert!(pts_line(&out), "tty must print /dev/pts/N; output {out:?}");

    // run -t: initial size from our terminal, then a live resize
    let rootfs = env.rootfs().display().to_string();
    // stty may transiently fail or read 0x0 before ctr's initial resize lands: poll (bounded).
    let script = "n=0; while [ $n -lt 200 ]; do s=$(stty size 2>/dev/null); \
                  case \"$s\" in ''|'0 0') sleep 0.05; n=$((n+1));; *) break;; esac; done; \
                  echo \"size=$s\"; \
                  n=0; while [ \"$(stty size 2>/dev/null)\" != '50 100' ] && [ $n -lt 400 ]; do sleep 0.05; n=$((n+1)); done; \
                  echo \"resized=$(stty size)\"";
    let cmd = env.ctr_command(&[
        "run",
        "--rm",
        "-t",
        "--runtime",
        &rt,
        "--env",
        CONTAINER_PATH,
        "--rootfs",
        &rootfs,
        "tty2",
        "/bin/sh",
        "-c",
        script,
    ]);
    let mut pty = PtySession::spawn(cmd, 37, 123);
    pty.wait_output_contains("size=", T);
    assert!(
        pty.output().contains("size=37 123"),
        "initial window size must be 37x123; output {:?}",
        pty.output()
    );
    pty.set_size(50, 100);
    let (code, out) = pty.finish(T);
    assert_eq!(code, 0, "output {out:?}");
    assert!(
        out.contains("resized=50 100"),
        "resize must reach the container; output {out:?}"
    );

    // exec -t
    env.run_rootfs_detached("ttyd", &[], &["/bin/sleep", "1000"]);
    let cmd = env.ctr_command(&[
        "task",
        "exec",
        "-t",
        "--exec-id",
        "te1",
        "ttyd",
        "/bin/sh",
        "-c",
        "tty; stty size; exit 4",
    ]);
    let (code, out) = run_in_pty(cmd, 33, 99, T);
    assert_eq!(code, 4, "ctr task exec -t exit code; output {out:?}");
    assert!(
        pts_line(&out),
        "exec tty must print /dev/pts/N; output {out:?}"
    );
}

// ------------------------------------------------------------------------------------------
// Events
// ------------------------------------------------------------------------------------------

#[test]
fn events_in_order() {
    let env = TestEnv::new();
    let ev = env.events();
    let (_rootfs, _pid) = env.run_rootfs_detached("ev1", &[], &["/bin/sleep", "1000"]);
    let out = env.ctr(&["task", "exec", "--exec-id", "x1", "ev1", "/bin/true"]);
    assert_eq!(exit_code(&out), 0, "{}", describe(&out));
    env.ctr_ok(&["task", "pause", "ev1"]);
    env.wait_task_status("ev1", "PAUSED", T);
    env.ctr_ok(&["task", "resume", "ev1"]);
    env.wait_task_status("ev1", "RUNNING", T);
    env.ctr_ok(&["task", "kill", "-s", "SIGKILL", "ev1"]);
    env.wait_task_status("ev1", "STOPPED", T);
    env.ctr_ok(&["task", "rm", "ev1"]);
    env.ctr_ok(&["containers", "rm", "ev1"]);
    ev.assert_order(
        &[
            "/tasks/create",
            "/tasks/start",
            "/tasks/exec-added",
            "/tasks/exec-started",
            "/tasks/paused",
            "/tasks/resumed",
            "/tasks/exit",
            "/tasks/delete",
        ],
        "ev1",
        T,
    );
    // The init's exit event carries 137.
    let exit = ev
        .events()
        .into_iter()
        .find(|e| e.topic == "/tasks/exit" && e.payload.contains("\"id\":\"ev1\""))
        .unwrap_or_else(|| panic!("no init /tasks/exit: {:#?}", ev.topics()));
    assert!(
        exit.payload.contains("\"exit_status\":137"),
        "init exit event must carry 137: {}",
        exit.payload
    );
}

#[test]
fn oom_event_and_exit_137() {
    let env = TestEnv::new();
    let ev = env.events();
    let out = env.run_rootfs(
        "oom1",
        &["--memory-limit", "33554432"],
        &["/bin/sh", "-c", "exec tail /dev/zero"],
    );
    assert_eq!(exit_code(&out), 137, "OOM-killed task\n{}", describe(&out));
    ev.wait_for("/tasks/oom", "oom1", T);
}

// ------------------------------------------------------------------------------------------
// containerd restart, shim death
// ------------------------------------------------------------------------------------------

#[test]
fn containerd_restart_keeps_tasks() {
    let mut env = TestEnv::new();
    let (_r1, pid1) = env.run_rootfs_detached("keep1", &[], &["/bin/sleep", "1000"]);
    let (r2, pid2) = env.run_rootfs_detached(
        "exit9",
        &[],
        &[
            "/bin/sh",
            "-c",
            "while [ ! -e /tmp/stop ]; do sleep 0.05; done; exit 9",
        ],
    );
    env.stop_containerd();
    // exit9 exits while containerd is down
    fs::write(r2.join("tmp/stop"), "").expect("touch stop file");
    wait_until("exit9 to exit while containerd is down", T, || {
        (!pid_alive(pid2)).then_some(())
    });
    assert!(pid_alive(pid1), "keep1 must survive containerd stopping");
    env.start_containerd();

    env.wait_task_status("keep1", "RUNNING", T);
    env.wait_task_status("exit9", "STOPPED", T);
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
    env.ctr_ok(&["task", "kill", "-s", "SIGKILL", "keep1"]);
    env.wait_task_status("keep1", "STOPPED", T);
    assert_eq!(env.task_rm_exit_code("keep1"), 137);
    assert_eq!(
        env.task_rm_exit_code("exit9"),
        9,
        "exit status recorded while containerd was down"
    );
    env.ctr_ok(&["containers", "rm", "keep1", "exit9"]);
    wait_until("keep1 process gone", T, || (!pid_alive(pid1)).then_some(()));
}

#[test]
fn shim_sigkill_then_rm_cleans_up() {
    let env = TestEnv::new();
    let pid = env.run_image_detached("shimdie", &[], &["/bin/sleep", "1000"]);
    let shims = env.shim_pids();
    assert_eq!(shims.len(), 1, "one shim expected: {shims:?}");
    let argv0 = cmdline(shims[0]).first().cloned().unwrap_or_default();
    assert!(
        argv0.ends_with(&expected_shim_binary()),
        "the shim running must be {} (runtime {}), found {argv0}",
        expected_shim_binary(),
        runtime()
    );
    assert!(
        !env.leftover_mounts().is_empty(),
        "the image rootfs should be mounted while running"
    );
    kill_pid(shims[0]);
    wait_until("shim to die", T, || (!pid_alive(shims[0])).then_some(()));
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
    wait_until("container process to be gone after shim death", T, || {
        (!pid_alive(pid)).then_some(())
    });
    wait_until("no mount left under containerd root/state", T, || {
        env.leftover_mounts().is_empty().then_some(())
    });
    // containerd may still be running the shim's `delete` action briefly
    wait_until("no shim process left for this containerd", T, || {
        env.shim_pids().is_empty().then_some(())
    });
}

// ------------------------------------------------------------------------------------------
// Checkpoint, pod grouping
// ------------------------------------------------------------------------------------------

#[test]
fn checkpoint_fails_clearly() {
    if skip_unless_our_runtime() {
        return;
    }
    let env = TestEnv::new();
    env.run_image_detached("ckpt", &[], &["/bin/sleep", "1000"]);
    let out = env.ctr(&["task", "checkpoint", "ckpt"]);
    assert!(
        !out.status.success(),
        "checkpoint must fail\n{}",
        describe(&out)
    );
    assert!(
        !stderr(&out).trim().is_empty(),
        "checkpoint failure needs a message\n{}",
        describe(&out)
    );
    env.wait_task_status("ckpt", "RUNNING", T);
}

#[test]
fn pod_grouping_shares_one_shim() {
    // io.kubernetes.cri.sandbox-id grouping is also what the stock runc.v2 shim does.
    let env = TestEnv::new();
    let ann = "--annotation=io.kubernetes.cri.sandbox-id=pod-abc";
    env.run_rootfs_detached("pod-a", &[ann], &["/bin/sleep", "1000"]);
    env.run_rootfs_detached("pod-b", &[ann], &["/bin/sleep", "1000"]);
    let shims = env.shim_pids();
    assert_eq!(
        shims.len(),
        1,
        "two containers of one sandbox must share one shim: {shims:?} {:?}",
        shims.iter().map(|p| cmdline(*p)).collect::<Vec<_>>()
    );
    env.run_rootfs_detached("solo", &[], &["/bin/sleep", "1000"]);
    assert_eq!(
        env.shim_pids().len(),
        2,
        "an ungrouped container gets its own shim"
    );

    // tearing one down keeps the other usable
    env.ctr_ok(&["task", "kill", "-s", "SIGKILL", "pod-a"]);
    env.wait_task_status("pod-a", "STOPPED", T);
    env.ctr_ok(&["task", "rm", "pod-a"]);
    let out = env.ctr(&["task", "exec", "--exec-id", "p", "pod-b", "/bin/echo", "ok"]);
    assert_eq!(stdout(&out), "ok\n", "{}", describe(&out));
}

// ------------------------------------------------------------------------------------------
// Router / config (our runtime only)
// ------------------------------------------------------------------------------------------

#[test]
fn backend_annotation_routes() {
    if skip_unless_our_runtime() {
        return;
    }
    let env = TestEnv::new();
    let out = env.run_rootfs(
        "bk-crun",
        &["--annotation", "io.pvelxc.backend=crun"],
        &["/bin/sh", "-c", SCRIPT],
    );
    assert_hello_err_3("backend=crun", &out);

    let out = env.run_rootfs(
        "bk-bogus",
        &["--annotation", "io.pvelxc.backend=bogus"],
        &["/bin/true"],
    );
    assert!(
        !out.status.success(),
        "backend=bogus must fail\n{}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains("bogus"),
        "the error must name the unknown backend\n{}",
        describe(&out)
    );
}

#[test]
fn runtime_config_path() {
    if skip_unless_our_runtime() {
        return;
    }
    let env = TestEnv::new();
    let good = env.dir().join("good.toml");
    fs::write(&good, "backend = \"crun\"\n").expect("write config");
    let good_s = good.display().to_string();
    let out = env.run_rootfs(
        "cfg-good",
        &["--runtime-config-path", &good_s],
        &["/bin/sh", "-c", SCRIPT],
    );
    assert_hello_err_3("--runtime-config-path good.toml", &out);

    let bad = env.dir().join("bad-config.toml");
    fs::write(&bad, "backend = = [crun\n").expect("write config");
    let bad_s = bad.display().to_string();
    let out = env.run_rootfs(
        "cfg-bad",
        &["--runtime-config-path", &bad_s],
        &["/bin/true"],
    );
    assert!(
        !out.status.success(),
        "invalid TOML must fail\n{}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains("bad-config.toml"),
        "the error must name the config file\n{}",
        describe(&out)
    );
}
