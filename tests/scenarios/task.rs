//! A detached task: exec (stdin, both streams, kill of an exec, a missing binary), ps,
//! pause/resume, metrics, kill, `kill --all`, and the events of all that in order.

use super::{assert_task_pid, finish, kill_and_remove, run_rootfs_detached, Backend, TaskPid};
use crate::common::*;
use std::fs;

/// `ctr task exec -d` of a `sleep` in the container `id`.
fn exec_background_sleep(b: &impl Backend, id: &str) {
    let argv = [
        "task",
        "exec",
        "-d",
        "--exec-id",
        "bg",
        id,
        "/bin/sleep",
        "999",
    ];
    b.env().ctr_ok(&argv);
}

/// Exec with stdin, stdout/stderr, kill of an exec; ps; pause/resume; metrics; SIGKILL → 137.
pub fn detached_exec_ps_pause_resume_metrics_kill(b: &impl Backend) {
    let env = b.env();
    let e = b.expect();
    let t = e.timeout;
    let (_rootfs, pid) = run_rootfs_detached(b, "det1", &["/bin/sleep", "1000"]);
    assert_task_pid(b, pid, "sleep");
    b.check_running("det1");

    // exec with stdin piped in
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

    // exec stdout/stderr separation, exit 0, runs as root
    let out = env.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e2",
        "det1",
        "/bin/sh",
        "-c",
        "echo out; echo err >&2; id -u",
    ]);
    assert_eq!(exit_code(&out), 0, "{}", describe(&out));
    assert_eq!(stdout(&out), "out\n0\n", "{}", describe(&out));
    assert!(stderr(&out).contains("err"), "{}", describe(&out));

    // kill of an exec reaches the process
    let mut ex = env.ctr_spawn(&[
        "task",
        "exec",
        "--exec-id",
        "e3",
        "det1",
        "/bin/sh",
        "-c",
        "trap 'exit 9' TERM; echo up; while true; do sleep 0.1; done",
    ]);
    ex.wait_stdout_contains("up", t);
    env.ctr_ok(&["task", "kill", "--exec-id", "e3", "-s", "SIGTERM", "det1"]);
    let out = ex.finish(t);
    assert_eq!(exit_code(&out), 9, "exec TERM trap\n{}", describe(&out));

    // an exec of a missing binary fails at Start, saying so
    let out = env.ctr(&["task", "exec", "--exec-id", "e4", "det1", "/no/such/binary"]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out)
            .to_lowercase()
            .contains("no such file or directory"),
        "{}",
        describe(&out)
    );

    // ps lists the task pid and a background exec
    exec_background_sleep(b, "det1");
    // Host pids: on a backend whose task pid is the container's process, every pid listed is
    // a live process of this host. A listing may catch a process in its last moment (the
    // failed exec above), so the listing is taken again until it holds only live ones.
    let host_pids = e.task_pid == TaskPid::Process;
    let pids = wait_until(
        "ctr task ps to list the task pid and the exec, all live host pids",
        t,
        || {
            let pids = env.task_pids("det1");
            let live = !host_pids || pids.iter().all(|p| pid_alive(*p));
            (pids.contains(&pid) && pids.len() >= 2 && live).then_some(pids)
        },
    );
    assert!(pids.contains(&pid), "ps lists the task pid: {pids:?}");

    // pause / resume
    env.ctr_ok(&["task", "pause", "det1"]);
    env.wait_task_status("det1", "PAUSED", t);
    if e.task_pid == TaskPid::Vmm {
        let st = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(
            st.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('T')),
            "QEMU must be stopped while paused: {st}"
        );
    }
    env.ctr_ok(&["task", "resume", "det1"]);
    env.wait_task_status("det1", "RUNNING", t);

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
    kill_and_remove(b, "det1");
    wait_until("the task process to be gone", t, || {
        (!pid_alive(pid)).then_some(())
    });
    b.assert_gone("det1");
    finish(b);
}

/// `kill --all` reaches every process of the container, exec'd ones included.
pub fn kill_all_reaches_every_process(b: &impl Backend) {
    let env = b.env();
    let t = b.expect().timeout;
    let (signal, code) = b.expect().kill_all;
    let (_rootfs, pid) = run_rootfs_detached(b, "kall", &["/bin/sleep", "1000"]);
    exec_background_sleep(b, "kall");
    let extra = wait_until("exec'd sleep to show in ctr task ps", t, || {
        env.task_pids("kall").into_iter().find(|x| *x != pid)
    });
    env.ctr_ok(&["task", "kill", "--all", "-s", signal, "kall"]);
    env.wait_task_status("kall", "STOPPED", t);
    // (a vm's exec pid is a guest pid: QEMU's exit is the host's view of it)
    let host_extra = b.expect().task_pid == TaskPid::Process;
    wait_until("all container processes to be gone", t, || {
        let extra_alive = host_extra && pid_alive(extra);
        (!pid_alive(pid) && !extra_alive).then_some(())
    });
    assert_eq!(
        env.task_rm_exit_code("kall"),
        code,
        "kill --all -s {signal}"
    );
    env.ctr_ok(&["containers", "rm", "kall"]);
    b.assert_gone("kall");
    finish(b);
}

/// create, start, exec-added, exec-started, paused, resumed, exit (137), delete: in this order.
pub fn events_in_order(b: &impl Backend) {
    let env = b.env();
    let t = b.expect().timeout;
    let ev = env.events();
    run_rootfs_detached(b, "ev1", &["/bin/sleep", "1000"]);
    let out = env.ctr(&["task", "exec", "--exec-id", "x1", "ev1", "/bin/true"]);
    assert_eq!(exit_code(&out), 0, "{}", describe(&out));
    env.ctr_ok(&["task", "pause", "ev1"]);
    env.wait_task_status("ev1", "PAUSED", t);
    env.ctr_ok(&["task", "resume", "ev1"]);
    env.wait_task_status("ev1", "RUNNING", t);
    env.ctr_ok(&["task", "kill", "-s", "SIGKILL", "ev1"]);
    env.wait_task_status("ev1", "STOPPED", t);
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
        t,
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
    b.assert_gone("ev1");
    finish(b);
}

/// The cgroup directory holding the container's `file` (a v2 name like `cpu.weight`, or a v1
/// name like `cpu.shares` of `controller`): the task process's cgroup, `up` levels higher.
fn limits_dir(pid: u32, controller: &str, up: usize) -> std::path::PathBuf {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("read /proc/PID/cgroup");
    let unified = fs::metadata("/sys/fs/cgroup/cgroup.controllers").is_ok();
    let (mount, rel) = text
        .lines()
        .find_map(|l| {
            let mut it = l.splitn(3, ':');
            let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
            if unified {
                ctrls
                    .is_empty()
                    .then(|| ("/sys/fs/cgroup".to_string(), path))
            } else {
                ctrls
                    .split(',')
                    .any(|c| c == controller)
                    .then(|| (format!("/sys/fs/cgroup/{ctrls}"), path))
            }
        })
        .unwrap_or_else(|| panic!("no {controller} cgroup of {pid}:\n{text}"));
    let mut dir = std::path::PathBuf::from(mount).join(rel.trim_start_matches('/'));
    for _ in 0..up {
        dir.pop();
    }
    dir
}

/// `--cpu-shares 2048` reaches the kernel as the container's CPU weight: on cgroup v2
/// `cpu.weight` = 1 + ((2048 − 2) × 9999) / 262142 = 79 (runc's and crun's conversion; pct:
/// `cpuunits` = `cpu.weight`), on cgroup v1 `cpu.shares` = 2048.
pub fn cpu_shares_become_cpu_weight(b: &impl Backend) {
    let env = b.env();
    let (_rootfs, pid) = env.run_rootfs_detached(
        "cpuw",
        &super::flags(b, &["--cpu-shares", "2048"]),
        &["/bin/sleep", "1000"],
    );
    let up = b.expect().limits_up;
    let (file, want) = if fs::metadata("/sys/fs/cgroup/cgroup.controllers").is_ok() {
        ("cpu.weight", "79")
    } else {
        ("cpu.shares", "2048")
    };
    let path = limits_dir(pid, "cpu", up).join(file);
    let got = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(got.trim(), want, "{}", path.display());
    kill_and_remove(b, "cpuw");
    b.assert_gone("cpuw");
    finish(b);
}
