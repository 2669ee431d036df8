//! The pct backend end to end: `ctr` against a private containerd whose shims drive the
//! pve-double `pct` (real LXC underneath). Every test has its own `PVE_DOUBLE_ROOT` and its own
//! VMID range inside 300000–399999, and checks that nothing is left behind.
//!
//! Needs: root, lxc, containerd, `cargo build --release -p pve-double` (pct/pvesh next to the
//! shim), and the static init:
//! `RUSTFLAGS="-C target-feature=+crt-static" cargo build --release -p pvelxc-init --target x86_64-unknown-linux-gnu`.

// An integration test crate: a failed step panics with its context. (The workspace denies
// unwrap/expect and unexplained unsafe in shipped code; tests are exempt.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::undocumented_unsafe_blocks
)]

mod common;

use common::pve::*;
use common::*;
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

// ------------------------------------------------------------------------------------------

#[test]
fn no_config_annotation_run_and_pod_refused() {
    // Defaults (VMIDs 100000..199999): one container at a time.
    let p = Pve::with(100_000, 199_999, "", false);
    let env = p.env();
    let out = env.run_rootfs(
        "noconf",
        &["--annotation", "io.pvelxc.backend=pct"],
        &["/bin/sh", "-c", SCRIPT],
    );
    assert_hello_err_3("pct, no config", &out);
    let creates = p
        .calls()
        .iter()
        .filter(|c| c.get(1).map(String::as_str) == Some("create"))
        .count();
    assert_eq!(creates, 1, "one pct create: {:?}", p.calls());

    let out = env.run_rootfs(
        "podc",
        &[
            "--annotation",
            "io.pvelxc.backend=pct",
            "--annotation",
            "io.kubernetes.cri.container-type=sandbox",
        ],
        &["/bin/true"],
    );
    assert!(
        !out.status.success(),
        "a pod sandbox must fail\n{}",
        describe(&out)
    );
    let e = stderr(&out);
    assert!(e.contains("pct") && e.contains("pod"), "{}", describe(&out));
    p.assert_clean();
}

#[test]
fn run_rootfs_image_null_io_and_template_reuse() {
    let p = Pve::new(300_000, 300_019);
    let env = p.env();
    let out = env.run_rootfs("r1", &[], &["/bin/sh", "-c", SCRIPT]);
    assert_hello_err_3("run --rootfs", &out);
    let per_run = p.calls().len();
    assert!(
        per_run <= 4,
        "pct/pvesh calls per run->exit->delete: {:?}",
        p.calls()
    );

    let out = env.run_image("img1", &[], &["/bin/sh", "-c", SCRIPT]);
    assert_hello_err_3("run image", &out);
    let tdir = p.root.join("storage/local/template/cache");
    let tpls: Vec<PathBuf> = fs::read_dir(&tdir)
        .expect("template dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().map(|e| e == "tar").unwrap_or(false))
        .collect();
    // Templates are keyed by content: the image holds the same files as the rootfs.
    assert_eq!(tpls.len(), 1, "one template per content: {tpls:?}");
    let mtimes = |v: &[PathBuf]| -> Vec<_> {
        v.iter()
            .map(|p| fs::metadata(p).and_then(|m| m.modified()).expect("mtime"))
            .collect()
    };
    let before = mtimes(&tpls);

    let out = env.run_image("img2", &["--null-io"], &["/bin/sh", "-c", SCRIPT]);
    assert_eq!(exit_code(&out), 3, "--null-io\n{}", describe(&out));
    assert!(!stdout(&out).contains("hello"), "{}", describe(&out));
    let out = env.run_image("img3", &[], &["/bin/sh", "-c", "echo again"]);
    assert_eq!(stdout(&out), "again\n", "{}", describe(&out));
    assert_eq!(before, mtimes(&tpls), "a template was re-packed");

    // Two trees with identical metadata (names, sizes, modes, owners, mtimes) but different
    // bytes: each container runs its own files, never the other's template.
    let same_meta = |text: &'static str| {
        move |r: &std::path::Path| {
            let f = r.join("etc/msg");
            fs::write(&f, text).expect("write msg");
            let t = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            let file = fs::File::options().write(true).open(&f).expect("open msg");
            file.set_modified(t).expect("mtime");
        }
    };
    let a = env.run_rootfs_edited("m1", same_meta("one\n"), &["/bin/cat", "/etc/msg"]);
    assert_eq!(stdout(&a), "one\n", "{}", describe(&a));
    let b = env.run_rootfs_edited("m2", same_meta("two\n"), &["/bin/cat", "/etc/msg"]);
    assert_eq!(
        stdout(&b),
        "two\n",
        "the second tree ran the first one's files\n{}",
        describe(&b)
    );

    let creates: Vec<String> = p
        .calls()
        .into_iter()
        .filter(|c| c.get(1).map(String::as_str) == Some("create"))
        .filter_map(|c| c.get(3).cloned())
        .collect();
    assert_eq!(creates.len(), 6, "{creates:?}");
    assert!(
        creates[..4].iter().all(|c| *c == creates[0]),
        "the rootfs and image containers share one template: {creates:?}"
    );
    assert!(
        creates[4] != creates[0] && creates[5] != creates[4],
        "different content, different templates: {creates:?}"
    );
    p.assert_clean();
}

#[test]
fn detached_exec_ps_pause_resume_metrics_kill_and_pct_list() {
    let p = Pve::new(300_020, 300_039);
    let env = p.env();
    let (_r, pid) = env.run_rootfs_detached("det1", &[], &["/bin/sleep", "1000"]);
    assert!(pid > 0 && pid_alive(pid));
    let vmid = vmid_of(&p, "det1");
    assert!(
        (p.lo..=p.hi).contains(&vmid),
        "VMID {vmid} outside the range"
    );
    let conf = stdout(&p.pct(&["config", &vmid.to_string()]));
    assert!(
        conf.contains("ostype: unmanaged") && conf.contains("unprivileged: 1"),
        "{conf}"
    );
    assert!(
        conf.contains("container id%3A det1") && conf.contains("tags: "),
        "{conf}"
    );

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
    assert_eq!(stdout(&out), "x\n", "{}", describe(&out));
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
    ex.wait_stdout_contains("up", T);
    env.ctr_ok(&["task", "kill", "--exec-id", "e3", "-s", "SIGTERM", "det1"]);
    let out = ex.finish(T);
    assert_eq!(exit_code(&out), 9, "exec TERM trap\n{}", describe(&out));

    let ps = env.ctr_ok(&["task", "ps", "det1"]);
    let pids: Vec<u32> = stdout(&ps)
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(!pids.is_empty(), "ps: {}", stdout(&ps));
    assert!(
        pids.iter().all(|p| pid_alive(*p)),
        "ps lists host pids: {pids:?}"
    );
    // The task pid is the user's process (not our init), and ps lists it.
    let ls = stdout(&env.ctr_ok(&["task", "ls"]));
    let task_pid: u32 = ls
        .lines()
        .find(|l| l.starts_with("det1 "))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("task ls: {ls}"));
    assert!(pids.contains(&task_pid), "task {task_pid} in ps {pids:?}");
    let comm = fs::read_to_string(format!("/proc/{task_pid}/comm")).unwrap_or_default();
    assert_eq!(
        comm.trim(),
        "sleep",
        "task pid {task_pid} is the user's process"
    );

    // An exec of a missing binary fails at Start.
    let out = env.ctr(&["task", "exec", "--exec-id", "e4", "det1", "/no/such/binary"]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("no such file or directory"),
        "{}",
        describe(&out)
    );

    env.ctr_ok(&["task", "pause", "det1"]);
    env.wait_task_status("det1", "PAUSED", T);
    env.ctr_ok(&["task", "resume", "det1"]);
    env.wait_task_status("det1", "RUNNING", T);

    let m = stdout(&env.ctr_ok(&["task", "metrics", "det1"]));
    assert!(
        m.lines()
            .any(|l| l.starts_with("memory.usage_in_bytes") || l.starts_with("memory.usage")),
        "{m}"
    );

    assert!(
        p.list().contains(&vmid),
        "pct list must show the CT while it runs"
    );
    env.ctr_ok(&["task", "kill", "-s", "SIGKILL", "det1"]);
    env.wait_task_status("det1", "STOPPED", T);
    assert_eq!(env.task_rm_exit_code("det1"), 137);
    env.ctr_ok(&["containers", "rm", "det1"]);
    p.assert_clean();
}

#[test]
fn term_trap_and_admin_stop_shutdown() {
    let p = Pve::new(300_040, 300_059);
    let env = p.env();
    let rootfs = env.rootfs().display().to_string();
    let rt = runtime();
    let spawn = |id: &str| {
        env.ctr_spawn(&[
            "run",
            "--rm",
            "--runtime",
            &rt,
            "--env",
            CONTAINER_PATH,
            "--rootfs",
            &rootfs,
            id,
            "/bin/sh",
            "-c",
            "trap 'exit 7' TERM; echo ready; while true; do sleep 0.1; done",
        ])
    };
    let mut run = spawn("trap1");
    run.wait_stdout_contains("ready", T);
    env.ctr_ok(&["task", "kill", "-s", "SIGTERM", "trap1"]);
    let out = run.finish(T);
    assert_eq!(exit_code(&out), 7, "TERM trap\n{}", describe(&out));

    // An admin's `pct shutdown` = SIGTERM to the process.
    let mut run = spawn("trap2");
    run.wait_stdout_contains("ready", T);
    let v = vmid_of(&p, "trap2").to_string();
    let o = p.pct(&["shutdown", &v, "--timeout", "20"]);
    assert!(o.status.success(), "{}", describe(&o));
    let out = run.finish(T);
    assert_eq!(exit_code(&out), 7, "pct shutdown\n{}", describe(&out));

    // An admin's `pct stop` kills the CT: 137.
    env.run_rootfs_detached("stopme", &[], &["/bin/sleep", "1000"]);
    let v = vmid_of(&p, "stopme").to_string();
    let o = p.pct(&["stop", &v]);
    assert!(o.status.success(), "{}", describe(&o));
    env.wait_task_status("stopme", "STOPPED", T);
    assert_eq!(env.task_rm_exit_code("stopme"), 137);
    env.ctr_ok(&["containers", "rm", "stopme"]);
    p.assert_clean();
}

fn pts_line(out: &str) -> bool {
    out.lines().any(|l| l.trim().starts_with("/dev/pts/"))
}

#[test]
fn tty_run_exec_and_resize() {
    let p = Pve::new(300_060, 300_079);
    let env = p.env();
    let rt = runtime();
    let rootfs = env.rootfs().display().to_string();
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
    assert_eq!(code, 4, "run -t exit code; {out:?}");
    assert!(pts_line(&out), "{out:?}");

    let rootfs = env.rootfs().display().to_string();
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
    assert!(pty.output().contains("size=37 123"), "{:?}", pty.output());
    pty.set_size(50, 100);
    let (code, out) = pty.finish(T);
    assert_eq!(code, 0, "{out:?}");
    assert!(out.contains("resized=50 100"), "{out:?}");

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
    assert_eq!(code, 4, "exec -t exit code; {out:?}");
    assert!(pts_line(&out), "{out:?}");
    assert!(out.contains("33 99"), "exec -t window size; {out:?}");
    env.ctr_ok(&["task", "kill", "-s", "SIGKILL", "ttyd"]);
    env.wait_task_status("ttyd", "STOPPED", T);
    env.ctr_ok(&["task", "rm", "ttyd"]);
    env.ctr_ok(&["containers", "rm", "ttyd"]);
    p.assert_clean();
}

#[test]
fn events_in_order() {
    let p = Pve::new(300_080, 300_099);
    let env = p.env();
    let ev = env.events();
    env.run_rootfs_detached("ev1", &[], &["/bin/sleep", "1000"]);
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
    let exit = ev
        .events()
        .into_iter()
        .find(|e| e.topic == "/tasks/exit" && e.payload.contains("\"id\":\"ev1\""))
        .unwrap_or_else(|| panic!("no init exit: {:#?}", ev.topics()));
    assert!(
        exit.payload.contains("\"exit_status\":137"),
        "{}",
        exit.payload
    );
    p.assert_clean();
}

#[test]
fn parallel_creates_get_distinct_vmids() {
    const N: usize = 50;
    let p = Pve::new(300_100, 300_199);
    let env = p.env();
    let rootfs = env.rootfs().display().to_string();
    let rt = runtime();
    let start = Instant::now();
    let runs: Vec<(String, Command)> = (0..N)
        .map(|i| {
            let id = format!("par{i}");
            let cmd = env.ctr_command(&[
                "run",
                "-d",
                "--null-io",
                "--runtime",
                &rt,
                "--env",
                CONTAINER_PATH,
                "--rootfs",
                &rootfs,
                &id,
                "/bin/sleep",
                "1000",
            ]);
            (id, cmd)
        })
        .collect();
    let failures: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = runs
            .into_iter()
            .map(|(id, cmd)| {
                s.spawn(move || {
                    let out = run_cmd(cmd, None, Duration::from_secs(300));
                    (!out.status.success()).then(|| format!("{id}: {}", describe(&out)))
                })
            })
            .collect();
        hs.into_iter()
            .filter_map(|h| h.join().expect("thread"))
            .collect()
    });
    eprintln!("{N} parallel creates took {:?}", start.elapsed());
    assert!(
        failures.is_empty(),
        "parallel creates failed: {failures:#?}"
    );
    let mut vmids = p.list();
    vmids.sort_unstable();
    vmids.dedup();
    assert_eq!(vmids.len(), N, "distinct VMIDs: {vmids:?}");
    assert!(vmids.iter().all(|v| (p.lo..=p.hi).contains(v)));
    for i in 0..N {
        env.wait_task_status(&format!("par{i}"), "RUNNING", T);
    }
    let rms: Vec<Vec<Command>> = (0..N)
        .collect::<Vec<_>>()
        .chunks(10)
        .map(|c| {
            c.iter()
                .flat_map(|i| {
                    let id = format!("par{i}");
                    [
                        env.ctr_command(&["task", "rm", "-f", &id]),
                        env.ctr_command(&["containers", "rm", &id]),
                    ]
                })
                .collect()
        })
        .collect();
    let failures: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = rms
            .into_iter()
            .map(|cmds| {
                s.spawn(move || {
                    cmds.into_iter()
                        .map(|c| run_cmd(c, None, Duration::from_secs(120)))
                        .filter(|o| !o.status.success())
                        .map(|o| describe(&o))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    });
    assert!(failures.is_empty(), "removal failed: {failures:#?}");
    p.assert_clean();
}

#[test]
fn faults_give_clear_errors_or_retries_and_leave_nothing() {
    let p = Pve::new(300_200, 300_219);
    let env = p.env();
    let faults = p.root.join("faults");
    let check = |id: &str, fault: &str, want: &str| {
        fs::write(&faults, format!("{fault}\n")).expect("faults");
        let out = env.run_rootfs(id, &[], &["/bin/true"]);
        assert!(
            !out.status.success(),
            "{fault}: must fail\n{}",
            describe(&out)
        );
        assert!(
            stderr(&out).contains(want),
            "{fault}: error must say {want:?}\n{}",
            describe(&out)
        );
        let _ = env.ctr(&["containers", "rm", id]);
        p.assert_clean();
    };
    check(
        "f1",
        "fail create TASK ERROR: storage is full",
        "storage is full",
    );
    check("f2", "fail start boom at start", "boom at start");
    check("f3", "lock-timeout * 100", "got timeout");

    // "already exists" races and a single lock timeout are retried.
    fs::write(&faults, format!("create-exists {}\n", p.lo)).expect("faults");
    let out = env.run_rootfs("f4", &[], &["/bin/sh", "-c", SCRIPT]);
    assert_hello_err_3("create-exists retried", &out);
    fs::write(&faults, "delay create 300\n").expect("faults");
    let out = env.run_rootfs("f5", &[], &["/bin/sh", "-c", SCRIPT]);
    assert_hello_err_3("slow pct", &out);
    fs::write(&faults, "").expect("faults");
    p.assert_clean();

    // A missing binary fails the create before any pct call.
    let before = p.calls().len();
    let out = env.run_rootfs("f6", &[], &["nothing-here"]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("executable file not found in $PATH"),
        "{}",
        describe(&out)
    );
    assert_eq!(p.calls().len(), before, "pct calls: {:?}", p.calls());
    let _ = env.ctr(&["containers", "rm", "f6"]);
    p.assert_clean();
}

#[test]
fn shim_sigkill_then_rm_destroys_the_ct() {
    let p = Pve::new(300_220, 300_239);
    let env = p.env();
    env.run_rootfs_detached("shimdie", &[], &["/bin/sleep", "1000"]);
    let vmid = vmid_of(&p, "shimdie");
    let shims = env.shim_pids();
    assert_eq!(shims.len(), 1, "{shims:?}");
    kill_pid(shims[0]);
    wait_until("shim to die", T, || (!pid_alive(shims[0])).then_some(()));
    let out = env.ctr(&["task", "rm", "-f", "shimdie"]);
    if !out.status.success() {
        assert!(stderr(&out).contains("not found"), "{}", describe(&out));
    }
    env.ctr_ok(&["containers", "rm", "shimdie"]);
    wait_until("the CT to be destroyed", T, || {
        (!p.list().contains(&vmid)).then_some(())
    });
    p.assert_clean();
}

/// `network = "bridge"` gives the container its address on every Proxmox version: PVE 9.1
/// configures it (`host-managed=1`), older versions leave an unmanaged CT's interface down and
/// the CT's init configures the static address. The container reaches the bridge's gateway.
#[test]
fn bridge_network_reaches_the_gateway() {
    let n = std::process::id() % 200 + 20;
    let bridge = format!("vmbrt{n}");
    let gw = format!("10.215.{n}.1");
    let _ = Command::new("ip").args(["link", "del", &bridge]).output();
    for args in [
        vec!["link", "add", &bridge, "type", "bridge"],
        vec!["addr", "add", &format!("{gw}/24"), "dev", &bridge],
        vec!["link", "set", &bridge, "up"],
    ] {
        run_ok(&[&["ip"][..], &args].concat());
    }
    struct DelBridge(String);
    impl Drop for DelBridge {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["link", "del", &self.0]).output();
        }
    }
    let _bridge = DelBridge(bridge.clone());
    let extra = format!(
        "network = \"bridge\"\nbridge = \"{bridge}\"\nip = \"10.215.{n}.5/24\"\ngateway = \"{gw}\"\n"
    );
    let p = Pve::with(300_420, 300_459, &extra, true);
    let env = p.env();
    let out = env.run_rootfs(
        "net1",
        &[],
        &[
            "/bin/sh",
            "-c",
            &format!("ip -4 addr show eth0; ip route; ping -c 1 -W 5 {gw}"),
        ],
    );
    assert_eq!(
        exit_code(&out),
        0,
        "profile {}: the container must reach {gw}\n{}",
        profile(),
        describe(&out)
    );
    assert!(
        stdout(&out).contains(&format!("10.215.{n}.5/24")),
        "{}",
        describe(&out)
    );
    assert!(
        stdout(&out).contains(&format!("default via {gw}")),
        "{}",
        describe(&out)
    );
    p.assert_clean();
}

/// `kill --all` reaches every process of the CT (the init signals all of them), exec'd ones
/// included; with SIGTERM the container's own process dies of it (143).
#[test]
fn kill_all_reaches_every_process_of_the_ct() {
    let p = Pve::new(300_460, 300_499);
    let env = p.env();
    let (_r, pid) = env.run_rootfs_detached("kall", &[], &["/bin/sleep", "1000"]);
    env.ctr_ok(&[
        "task",
        "exec",
        "-d",
        "--exec-id",
        "bg",
        "kall",
        "/bin/sleep",
        "999",
    ]);
    let extra = wait_until("exec'd sleep to show in ctr task ps", T, || {
        env.task_pids("kall").into_iter().find(|x| *x != pid)
    });
    env.ctr_ok(&["task", "kill", "--all", "-s", "SIGTERM", "kall"]);
    env.wait_task_status("kall", "STOPPED", T);
    wait_until("all CT processes to be gone", T, || {
        (!pid_alive(pid) && !pid_alive(extra)).then_some(())
    });
    assert_eq!(env.task_rm_exit_code("kall"), 143);
    env.ctr_ok(&["container", "rm", "kall"]);
    p.assert_clean();
}

/// A CT process over its memory limit is OOM-killed: exit 137 and a TaskOOM event.
#[test]
fn oom_event_and_exit_137() {
    let p = Pve::new(300_500, 300_539);
    let env = p.env();
    let ev = env.events();
    let out = env.run_rootfs(
        "oom1",
        &["--memory-limit", "33554432"],
        &["/bin/sh", "-c", "exec tail /dev/zero"],
    );
    assert_eq!(exit_code(&out), 137, "OOM-killed task\n{}", describe(&out));
    ev.wait_for("/tasks/oom", "oom1", T);
    p.assert_clean();
}

/// containerd restarts while a CT keeps running and another CT's process exits meanwhile:
/// both are reported correctly afterwards (RUNNING; STOPPED with its own exit code).
#[test]
fn containerd_restart_with_an_exit_while_down() {
    let mut p = Pve::new(300_540, 300_579);
    let env = p.env_mut();
    let (_r1, pid1) = env.run_rootfs_detached("keep1", &[], &["/bin/sleep", "1000"]);
    let (_r2, pid2) = env.run_rootfs_detached("exit9", &[], &["/bin/sh", "-c", "sleep 4; exit 9"]);
    env.stop_containerd();
    wait_until("exit9 to exit while containerd is down", T, || {
        (!pid_alive(pid2)).then_some(())
    });
    assert!(pid_alive(pid1), "keep1 must survive containerd stopping");
    env.start_containerd();
    env.wait_task_status("keep1", "RUNNING", T);
    env.wait_task_status("exit9", "STOPPED", T);
    assert_eq!(env.task_rm_exit_code("exit9"), 9);
    env.ctr_ok(&["container", "rm", "exit9"]);
    env.ctr_ok(&["task", "kill", "-s", "KILL", "keep1"]);
    env.wait_task_status("keep1", "STOPPED", T);
    env.ctr_ok(&["task", "rm", "keep1"]);
    env.ctr_ok(&["container", "rm", "keep1"]);
    p.assert_clean();
}
