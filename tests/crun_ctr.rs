//! "The shim on a real containerd": drive `ctr` against a private containerd with the runtime under
//! test (default backend: crun). Run against the stock shim with
//! `PVELXC_TEST_RUNTIME=io.containerd.runc.v2 cargo test --release --test crun_ctr`.
//!
//! The scenarios every backend shares are in `tests/scenarios/`; here the crun backend's fixture
//! and one test per scenario, then what only crun (or only our router) does.

// An integration test crate: a failed step panics with its context. (The workspace denies
// unwrap/expect and unexplained unsafe in shipped code; tests are exempt.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::undocumented_unsafe_blocks
)]

mod common;
mod scenarios;

use common::*;
use scenarios::{Backend, Expect};
use std::fs;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

impl Backend for TestEnv {
    fn env(&self) -> &TestEnv {
        self
    }
    fn env_mut(&mut self) -> &mut TestEnv {
        self
    }
    fn expect(&self) -> &Expect {
        &scenarios::CRUN
    }
}

// ------------------------------------------------------------------------------------------
// Shared scenarios (tests/scenarios/)
// ------------------------------------------------------------------------------------------

#[test]
fn run_rootfs_stdout_stderr_exit_code() {
    let env = TestEnv::new();
    scenarios::run::run_rootfs_stdio_exit_code(&env, "rootfs1");
    scenarios::finish(&env);
}

#[test]
fn run_image_stdout_stderr_exit_code_and_null_io() {
    scenarios::run::run_image_stdio_exit_code_and_null_io(&TestEnv::new());
}

#[test]
fn term_trap_exit_code_reaches_ctr_run() {
    scenarios::run::term_trap_exit_code(&TestEnv::new());
}

#[test]
fn oom_event_and_exit_137() {
    scenarios::run::oom_event_and_exit_137(&TestEnv::new());
}

#[test]
fn detached_exec_ps_pause_resume_metrics_kill() {
    scenarios::task::detached_exec_ps_pause_resume_metrics_kill(&TestEnv::new());
}

#[test]
fn cpu_shares_become_cpu_weight() {
    scenarios::task::cpu_shares_become_cpu_weight(&TestEnv::new());
}

#[test]
fn kill_all_stops_every_process() {
    scenarios::task::kill_all_reaches_every_process(&TestEnv::new());
}

#[test]
fn events_in_order() {
    scenarios::task::events_in_order(&TestEnv::new());
}

#[test]
fn tty_run_exec_and_window_size() {
    scenarios::tty::tty_run_exec_and_resize(&TestEnv::new());
}

#[test]
fn containerd_restart_keeps_tasks() {
    scenarios::recovery::containerd_restart_with_an_exit_while_down(&mut TestEnv::new());
}

#[test]
fn shim_sigkill_then_rm_cleans_up() {
    scenarios::recovery::shim_sigkill_then_rm_cleans_up(&TestEnv::new());
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

// ------------------------------------------------------------------------------------------
// The lean lifecycle (start through the exec fifo, delete begun at exit, a `delete` action
// with nothing to do) and where it must not apply.
// ------------------------------------------------------------------------------------------

/// Once the init has exited, the runtime's state of the container goes before `task rm`
/// (the early delete); the task still reports its exit code, a kill is refused without
/// touching any process, and `ps` lists nothing.
#[test]
fn an_exited_container_is_deleted_from_the_runtime_before_task_rm() {
    if skip_unless_our_runtime() {
        return;
    }
    let env = TestEnv::new();
    let (rootfs, _) = env.run_rootfs_detached(
        "gone",
        &[],
        &[
            "/bin/sh",
            "-c",
            "while [ ! -e /go ]; do sleep 0.05; done; exit 7",
        ],
    );
    // The runtime's state directory, from the bundle record (crun or runc, whichever root).
    let record = env
        .state()
        .join("io.containerd.runtime.v2.task")
        .join(env.ns())
        .join("gone/pvelxc.json");
    let record: serde_json::Value = serde_json::from_slice(&fs::read(&record).unwrap()).unwrap();
    let state = std::path::Path::new(record["state"]["root"].as_str().unwrap()).join("gone");
    assert!(
        state.is_dir(),
        "crun's state while it runs: {}",
        state.display()
    );
    fs::write(rootfs.join("go"), b"").unwrap();
    env.wait_task_status("gone", "STOPPED", T);
    wait_until(
        "the runtime's state of the exited container to go",
        T,
        || (!state.exists()).then_some(()),
    );
    let out = env.ctr(&["task", "kill", "-s", "SIGKILL", "gone"]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("already finished"),
        "{}",
        describe(&out)
    );
    assert!(env.task_pids("gone").is_empty());
    assert_eq!(env.task_rm_exit_code("gone"), 7);
    env.ctr_ok(&["container", "rm", "gone"]);
}

/// A spec with hooks keeps the runtime's own `start` and `delete` (they run poststart and
/// poststop hooks): both hooks run, once each, in order.
#[test]
fn hooks_keep_the_runtimes_own_start_and_delete() {
    if skip_unless_our_runtime() {
        return;
    }
    let env = TestEnv::new();
    let out = env.ctr_ok(&["oci", "spec"]);
    let mut spec: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let marker = env.dir().join("hooks.log");
    let hook = |name: &str| {
        serde_json::json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("echo {name} >> {}", marker.display())],
        })
    };
    spec["hooks"] = serde_json::json!({
        "poststart": [hook("poststart")],
        "poststop": [hook("poststop")],
    });
    spec["process"]["args"] = serde_json::json!(["/bin/sh", "-c", "echo ran"]);
    spec["process"]["env"] = serde_json::json!([CONTAINER_PATH]);
    spec["process"]["terminal"] = serde_json::json!(false);
    spec["root"] = serde_json::json!({"path": env.rootfs().display().to_string()});
    let file = env.dir().join("hooked.json");
    fs::write(&file, serde_json::to_vec(&spec).unwrap()).unwrap();
    let file_s = file.display().to_string();
    let runtime = env.runtime();
    let out = env.ctr(&[
        "run",
        "--rm",
        "--runtime",
        &runtime,
        "--config",
        &file_s,
        "hooked",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out).trim(), "ran");
    let log = fs::read_to_string(&marker).unwrap_or_default();
    assert_eq!(
        log, "poststart\npoststop\n",
        "hooks run by crun start and delete"
    );
}

/// containerd runs the `delete` action after every shim exit: for a container the service
/// deleted it does nothing (no runtime call); for one it did not, it cleans up.
#[test]
fn the_delete_action_skips_what_the_service_deleted() {
    if skip_unless_our_runtime() {
        return;
    }
    let env = TestEnv::new();
    let dir = env.dir().join("late");
    let fake = env.dir().join("fake-crun");
    let calls = env.dir().join("fake-crun.calls");
    fs::write(
        &fake,
        format!("#!/bin/sh\necho \"$*\" >> {}\n", calls.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let action = |deleted: bool| {
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let record = serde_json::json!({
            "backend": "crun",
            "namespace": env.ns(),
            "id": "late",
            "config_path": null,
            "state": {"kind": "oci", "binary": fake.display().to_string(), "root": env.dir().join("rt").display().to_string()},
            "deleted": deleted,
        });
        fs::write(dir.join("pvelxc.json"), record.to_string()).unwrap();
        let c = env.shim_action("late", "delete", &dir);
        let out = run_cmd(c, None, T);
        assert!(out.status.success(), "delete action: {}", describe(&out));
        fs::read_to_string(&calls).unwrap_or_default()
    };
    assert_eq!(action(true), "", "nothing to undo: no runtime call");
    assert!(
        action(false).contains("delete --force late"),
        "an unfinished container is deleted"
    );
}

/// Containers of one pod whose `start` actions run at once get one server between them: the
/// socket is bound under a lock, and a bound socket is joined, never replaced.
#[test]
fn concurrent_starts_of_a_pod_share_one_server() {
    if skip_unless_our_runtime() {
        return;
    }
    let env = TestEnv::new();
    let group = format!("podrace{}", std::process::id());
    let starts: Vec<_> = (0..8)
        .map(|i| {
            let bundle = env.dir().join(format!("race{i}"));
            fs::create_dir_all(&bundle).unwrap();
            let spec = serde_json::json!({"annotations": {"io.kubernetes.cri.sandbox-id": group}});
            fs::write(bundle.join("config.json"), spec.to_string()).unwrap();
            // containerd's log fifo, as a plain file here
            fs::write(bundle.join("log"), b"").unwrap();
            let c = env.shim_action(&format!("race{i}"), "start", &bundle);
            BgProcess::spawn(c, None)
        })
        .collect();
    let addresses: Vec<String> = starts
        .into_iter()
        .map(|p| {
            let out = p.finish(T);
            assert!(out.status.success(), "start: {}", describe(&out));
            stdout(&out)
        })
        .collect();
    let address = addresses[0].clone();
    assert!(address.starts_with("unix://"), "{address:?}");
    assert!(addresses.iter().all(|a| *a == address), "{addresses:?}");
    let servers: Vec<u32> = shim_pids_for(env.address())
        .into_iter()
        .filter(|p| cmdline(*p).contains(&address))
        .collect();
    for p in &servers {
        kill_pid(*p);
    }
    let _ = fs::remove_file(address.trim_start_matches("unix://"));
    assert_eq!(servers.len(), 1, "one server for the pod: {servers:?}");
}
