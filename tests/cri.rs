//! The Kubernetes path: containerd's CRI plugin driving our shim through RuntimeClass handlers,
//! with these tests playing the kubelet (a `k8s-cri` tonic client on the private containerd's
//! socket).
//!
//! Handlers configured in the private containerd (see `cri_support`):
//! * `pvelxc`        — runtime type = the runtime under test (`PVELXC_TEST_RUNTIME`, default ours),
//!   pod/container annotations `io.pvelxc.*` passed through;
//! * `pvelxc-runc`   — our shim with `ConfigPath` to a config saying `backend = "runc"`;
//! * `pvelxc-locked` — our shim with a config that forbids annotation overrides;
//! * `runc-crun`     — the stock `io.containerd.runc.v2` with `BinaryName = /usr/bin/crun`.
//!
//! `PVELXC_TEST_RUNTIME=io.containerd.runc.v2 cargo test --release --test cri` runs the generic
//! scenarios against the stock shim (handler `pvelxc` then uses the stock shim + crun), which
//! tells a test problem from a shim problem; tests of our routing are skipped then.
//!
//! Needs root, containerd 1.6+, crun, runc, containernetworking-plugins (/usr/lib/cni), gcc with
//! a static libc, umoci, busybox-static.

// An integration test crate: a failed step panics with its context. (The workspace denies
// unwrap/expect and unexplained unsafe in shipped code; tests are exempt.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::undocumented_unsafe_blocks
)]

mod common;
mod cri_support;

use std::fs;
use std::time::{Duration, Instant};

use cri_support::client::v1;
use cri_support::{CriEnv, Pod, ANN_BACKEND, H_DEFAULT, H_LOCKED, H_PCT, H_RUNC};

/// A PID-1 shell that exits 0 on SIGTERM.
const IDLE: &[&str] = &[
    "sh",
    "-c",
    "trap 'exit 0' TERM; echo idle-ready; while true; do sleep 0.2; done",
];

const RUNNING: v1::ContainerState = v1::ContainerState::ContainerRunning;
const EXITED: v1::ContainerState = v1::ContainerState::ContainerExited;

fn skip_unless_ours() -> bool {
    if cri_support::ours() {
        return false;
    }
    common::skip::not_applicable(&format!(
        "needs {}, PVELXC_TEST_RUNTIME={}",
        common::OUR_RUNTIME,
        common::runtime()
    ));
    true
}

/// The backend the handler should pick (None: not our shim, nothing recorded).
fn expected_backend(handler: &str) -> Option<&'static str> {
    match handler {
        H_RUNC => Some("runc"),
        H_DEFAULT if cri_support::ours() => Some("crun"),
        H_LOCKED => Some("crun"),
        H_PCT => Some("pct"),
        _ => None,
    }
}

/// The env a handler needs: [`H_PCT`] runs containerd in a Proxmox-shaped host with the pct
/// double, over a VMID range of its own per test.
fn cri_env(handler: &str) -> CriEnv {
    if handler != H_PCT {
        return CriEnv::new();
    }
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let lo = 762_000 + 100 * n;
    CriEnv::with_pct(lo, lo + 99)
}

fn pod_ip(cri: &mut CriEnv, pod: &Pod) -> String {
    let st = cri
        .cri
        .pod_status(&pod.id)
        .unwrap_or_else(|e| panic!("PodSandboxStatus {}: {e}", pod.id))
        .status
        .expect("sandbox status");
    assert_eq!(
        st.state,
        v1::PodSandboxState::SandboxReady as i32,
        "pod not READY: {st:#?}"
    );
    st.network.map(|n| n.ip).unwrap_or_default()
}

fn cgroup_v2_host() -> bool {
    fs::metadata("/sys/fs/cgroup/cgroup.controllers").is_ok()
}

fn log_lines(path: &std::path::Path) -> Vec<(String, String)> {
    cri_support::parse_cri_log(&fs::read_to_string(path).unwrap_or_default())
}

fn wait_log_line(path: &std::path::Path, stream: &str, text: &str) {
    let want = (stream.to_string(), text.to_string());
    let r = common::poll_until(Duration::from_secs(20), || {
        log_lines(path).contains(&want).then_some(())
    });
    assert!(
        r.is_some(),
        "log {} has no {stream} line {text:?}; content:\n{}",
        path.display(),
        fs::read_to_string(path).unwrap_or_else(|e| format!("<{e}>"))
    );
}

fn container_log(pod: &Pod, name: &str) -> std::path::PathBuf {
    std::path::Path::new(&pod.config.log_directory).join(format!("{name}.log"))
}

// ---------------------------------------------------------------------------------------------
// One pod, one container: every kubelet call on the happy path
// ---------------------------------------------------------------------------------------------

fn lifecycle(handler: &str) {
    let mut env = cri_env(handler);
    let pod = env.pod(handler, &[], false);

    let ip = pod_ip(&mut env, &pod);
    assert!(
        ip.starts_with("10.88."),
        "pod IP {ip:?} is not from the test's CNI subnet"
    );
    let pause_pid = env.pod_pid(&pod.id);

    let cmd = [
        "sh",
        "-c",
        "echo out-line-1; echo err-line-1 >&2; \
         trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.2; done",
    ];
    let c = env.run(&pod, "app", &cmd, &[]);
    let st = env.status(&c);
    assert_eq!(st.state, RUNNING as i32);
    assert!(st.started_at > 0, "no started_at: {st:#?}");
    let pid = env.ctr_pid(&c);

    // Log file in kubectl-logs format, both streams.
    let log = container_log(&pod, "app");
    wait_log_line(&log, "stdout", "out-line-1");
    wait_log_line(&log, "stderr", "err-line-1");
    wait_log_line(&log, "stdout", "ready");

    // ExecSync: stdout, stderr, exit code.
    let (code, out, err) = env.exec(&c, &["sh", "-c", "echo to-out; echo to-err >&2; exit 3"]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (3, "to-out\n", "to-err\n")
    );
    // ExecSync timeout: an error well before the command would end; the container lives on.
    let t = Instant::now();
    let r = env.cri.exec(&c, &["sleep", "30"], 2);
    let took = t.elapsed();
    match r {
        Err(e) => assert!(
            e.message().to_lowercase().contains("timeout") || e.message().contains("deadline"),
            "ExecSync timeout error does not say so: {e}"
        ),
        Ok(r) => panic!("ExecSync of `sleep 30` with timeout 2s returned {r:?} after {took:?}"),
    }
    assert!(
        took < Duration::from_secs(15),
        "ExecSync timeout took {took:?}"
    );
    assert_eq!(env.status(&c).state, RUNNING as i32);
    assert_eq!(env.exec_ok(&c, &["echo", "still-here"]), "still-here");

    // Stats: real numbers after some work.
    env.exec_ok(
        &c,
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done",
        ],
    );
    let stats = env
        .cri
        .container_stats(v1::ContainerStatsRequest {
            container_id: c.clone(),
        })
        .unwrap_or_else(|e| panic!("ContainerStats: {e}\n{}", env.containerd_log_tail()))
        .stats
        .expect("stats");
    let cpu = stats
        .cpu
        .as_ref()
        .and_then(|c| c.usage_core_nano_seconds.as_ref())
        .map(|v| v.value)
        .unwrap_or(0);
    let mem = stats
        .memory
        .as_ref()
        .and_then(|m| m.working_set_bytes.as_ref())
        .map(|v| v.value)
        .unwrap_or(0);
    assert!(
        cpu > 0 && mem > 0,
        "ContainerStats without numbers: {stats:#?}"
    );
    let list = env
        .cri
        .list_container_stats(v1::ListContainerStatsRequest {
            filter: Some(v1::ContainerStatsFilter {
                pod_sandbox_id: pod.id.clone(),
                ..Default::default()
            }),
        })
        .unwrap_or_else(|e| panic!("ListContainerStats: {e}"))
        .stats;
    let mine = list
        .iter()
        .find(|s| s.attributes.as_ref().map(|a| a.id.as_str()) == Some(c.as_str()))
        .unwrap_or_else(|| panic!("ListContainerStats lacks {c}: {list:#?}"));
    let lcpu = mine
        .cpu
        .as_ref()
        .and_then(|c| c.usage_core_nano_seconds.as_ref())
        .map(|v| v.value)
        .unwrap_or(0);
    let lmem = mine
        .memory
        .as_ref()
        .and_then(|m| m.working_set_bytes.as_ref())
        .map(|v| v.value)
        .unwrap_or(0);
    assert!(
        lcpu > 0 && lmem > 0,
        "ListContainerStats without numbers: {mine:#?}"
    );

    // UpdateContainerResources: the new memory limit lands in the container's cgroup.
    let new_limit: i64 = 64 << 20;
    env.cri
        .update_container_resources(v1::UpdateContainerResourcesRequest {
            container_id: c.clone(),
            linux: Some(v1::LinuxContainerResources {
                cpu_shares: 512,
                memory_limit_in_bytes: new_limit,
                ..Default::default()
            }),
            ..Default::default()
        })
        .unwrap_or_else(|e| {
            panic!(
                "UpdateContainerResources: {e}\n{}",
                env.containerd_log_tail()
            )
        });
    if let Some(cg) = cri_support::cgroup_v1_path(pid, "memory") {
        let f = format!("/sys/fs/cgroup/memory{cg}/memory.limit_in_bytes");
        let v = fs::read_to_string(&f).unwrap_or_else(|e| panic!("read {f}: {e}"));
        assert_eq!(v.trim(), new_limit.to_string(), "{f} after update");
        // A pod CT's container sees the CT's cgroup tree (its own cgroup sits next to the CT's
        // `ns` cgroup, outside the CT's cgroup namespace): no inside view of its own limit.
        if handler != H_PCT {
            let inside = env.exec_ok(&c, &["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]);
            assert_eq!(
                inside,
                new_limit.to_string(),
                "limit seen inside the container"
            );
        }
    } else {
        // cgroup v2 only host
        let cg = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let path = cg.lines().find_map(|l| l.strip_prefix("0::")).unwrap_or("");
        let f = format!("/sys/fs/cgroup{path}/memory.max");
        let v = fs::read_to_string(&f).unwrap_or_else(|e| panic!("read {f}: {e}"));
        assert_eq!(v.trim(), new_limit.to_string(), "{f} after update");
    }

    // One shim for the pod; the container joined the sandbox's shim.
    let shims = env.shim_pids();
    assert_eq!(shims.len(), 1, "shims for one pod: {shims:?}");
    let addr = |id: &str| fs::read_to_string(env.bundle(id).join("address")).unwrap_or_default();
    assert_eq!(
        addr(&pod.id),
        addr(&c),
        "sandbox and container use different shims"
    );
    if let Some(b) = expected_backend(handler) {
        assert_eq!(env.recorded_backend(&pod.id), b, "sandbox backend");
        assert_eq!(env.recorded_backend(&c), b, "container backend");
    }

    // StopContainer: SIGTERM, the trap's exit code.
    let t = Instant::now();
    env.cri
        .stop_ctr(&c, 10)
        .unwrap_or_else(|e| panic!("StopContainer: {e}\n{}", env.containerd_log_tail()));
    assert!(
        t.elapsed() < Duration::from_secs(9),
        "StopContainer of a TERM-trapping container took {:?} (grace period used up?)",
        t.elapsed()
    );
    let st = env.wait_state(&c, EXITED, Duration::from_secs(10));
    assert_eq!((st.exit_code, st.reason.as_str()), (7, "Error"), "{st:#?}");
    assert!(st.finished_at >= st.started_at);
    wait_log_line(&log, "stdout", "got-term");

    env.cri.remove_ctr(&c).expect("RemoveContainer");
    let gone = env.cri.ctr_status(&c, false);
    assert!(
        gone.is_err(),
        "ContainerStatus after RemoveContainer: {gone:?}"
    );
    env.cri.stop_pod(&pod.id).expect("StopPodSandbox");
    let st = env
        .cri
        .pod_status(&pod.id)
        .expect("PodSandboxStatus")
        .status
        .expect("status");
    assert_eq!(st.state, v1::PodSandboxState::SandboxNotready as i32);
    env.cri.remove_pod(&pod.id).expect("RemovePodSandbox");
    env.assert_nothing_left(&[pid, pause_pid]);
}

#[test]
fn lifecycle_default_handler() {
    lifecycle(H_DEFAULT);
}

#[test]
fn lifecycle_config_path_handler() {
    if skip_unless_ours() {
        return;
    }
    lifecycle(H_RUNC);
}

// ---------------------------------------------------------------------------------------------
// Exit codes, reasons, and StopContainer's grace period
// ---------------------------------------------------------------------------------------------

fn exits_and_stop(handler: &str) {
    let mut env = cri_env(handler);
    let pod = env.pod(handler, &[], false);
    let mut pids = vec![env.pod_pid(&pod.id)];

    let ok = env.create(&pod, "ok", &["sh", "-c", "echo done"], &[]);
    env.cri.start_ctr(&ok).expect("StartContainer ok");
    let st = env.wait_state(&ok, EXITED, Duration::from_secs(20));
    assert_eq!(
        (st.exit_code, st.reason.as_str()),
        (0, "Completed"),
        "{st:#?}"
    );
    wait_log_line(&container_log(&pod, "ok"), "stdout", "done");

    let bad = env.create(&pod, "bad", &["sh", "-c", "echo bye >&2; exit 3"], &[]);
    env.cri.start_ctr(&bad).expect("StartContainer bad");
    let st = env.wait_state(&bad, EXITED, Duration::from_secs(20));
    assert_eq!((st.exit_code, st.reason.as_str()), (3, "Error"), "{st:#?}");
    // CRI stamps started_at when StartContainer returns, so a process that exits at once can
    // show finished_at a little before started_at, with any shim: compare with created_at.
    assert!(
        st.finished_at >= st.created_at && st.started_at >= st.created_at,
        "{st:#?}"
    );
    wait_log_line(&container_log(&pod, "bad"), "stderr", "bye");

    // Ignores SIGTERM: killed after the grace period.
    let stubborn = env.run(
        &pod,
        "stubborn",
        &[
            "sh",
            "-c",
            "trap '' TERM; echo ready; while true; do sleep 0.2; done",
        ],
        &[],
    );
    // The trap must be in place before the stop (with crun the shell is not PID 1 of its own
    // pid namespace, so an untrapped TERM would kill it at once).
    wait_log_line(&container_log(&pod, "stubborn"), "stdout", "ready");
    pids.push(env.ctr_pid(&stubborn));
    let t = Instant::now();
    env.cri
        .stop_ctr(&stubborn, 2)
        .unwrap_or_else(|e| panic!("StopContainer: {e}\n{}", env.containerd_log_tail()));
    let took = t.elapsed();
    let st = env.wait_state(&stubborn, EXITED, Duration::from_secs(10));
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(20),
        "StopContainer(timeout 2s) of a TERM-ignoring container took {took:?}"
    );
    assert_eq!(st.exit_code, 137, "{st:#?}");

    // Timeout 0: straight SIGKILL, even for a sleep that has no handler.
    let sleeper = env.run(&pod, "sleeper", &["sleep", "600"], &[]);
    pids.push(env.ctr_pid(&sleeper));
    env.cri.stop_ctr(&sleeper, 0).expect("StopContainer 0");
    let st = env.wait_state(&sleeper, EXITED, Duration::from_secs(10));
    assert_eq!(st.exit_code, 137, "{st:#?}");

    let shims = env.shim_pids();
    assert_eq!(shims.len(), 1, "one shim for the pod: {shims:?}");
    let id = pod.id.clone();
    env.remove_pod_fully(&id);
    env.assert_nothing_left(&pids);
}

#[test]
fn lifecycle_pct_handler() {
    if skip_unless_ours() {
        return;
    }
    lifecycle(H_PCT);
}

#[test]
fn exit_codes_and_stop_grace_default_handler() {
    exits_and_stop(H_DEFAULT);
}

#[test]
fn exit_codes_and_stop_grace_config_path_handler() {
    if skip_unless_ours() {
        return;
    }
    exits_and_stop(H_RUNC);
}

// ---------------------------------------------------------------------------------------------
// Two containers in one pod share network, IPC and UTS
// ---------------------------------------------------------------------------------------------

fn shared_namespaces(handler: &str) {
    let mut env = cri_env(handler);
    let pod = env.pod(handler, &[], false);
    let pause = env.pod_pid(&pod.id);
    let web = env.run(
        &pod,
        "web",
        &[
            "sh",
            "-c",
            "mkdir -p /www && echo pong-from-web > /www/index.html && exec httpd -f -p 8080 -h /www",
        ],
        &[],
    );
    let client = env.run(&pod, "client", IDLE, &[]);
    let pids = vec![pause, env.ctr_pid(&web), env.ctr_pid(&client)];

    // localhost reaches the other container.
    let mut last = String::new();
    let got = common::poll_until(Duration::from_secs(20), || {
        let r = env
            .cri
            .exec(
                &client,
                &["wget", "-q", "-O", "-", "http://127.0.0.1:8080/index.html"],
                10,
            )
            .ok()?;
        last = format!("{r:?}");
        (r.exit_code == 0).then(|| String::from_utf8_lossy(&r.stdout).trim().to_string())
    });
    assert_eq!(
        got.as_deref(),
        Some("pong-from-web"),
        "client could not fetch from web over localhost; last: {last}"
    );
    let (code, out, _) = env.exec(
        &client,
        &["sh", "-c", "echo hi | nc localhost 8080 | head -1"],
    );
    assert_eq!(code, 0);
    assert!(
        out.starts_with("HTTP/1."),
        "nc to localhost:8080 got {out:?}"
    );

    // Same hostname (the pod's), same net/ipc/uts namespaces as the sandbox.
    let hostname = pod.config.hostname.clone();
    assert_eq!(env.exec_ok(&web, &["hostname"]), hostname);
    assert_eq!(env.exec_ok(&client, &["hostname"]), hostname);
    for ns in ["net", "ipc", "uts"] {
        let p = format!("/proc/self/ns/{ns}");
        let a = env.exec_ok(&web, &["readlink", &p]);
        let b = env.exec_ok(&client, &["readlink", &p]);
        let sandbox = cri_support::host_ns(&pause.to_string(), ns);
        let host = cri_support::host_ns("self", ns);
        assert_eq!(a, b, "{ns} namespace differs between the pod's containers");
        assert_eq!(a, sandbox, "{ns} namespace is not the sandbox's");
        assert_ne!(a, host, "{ns} namespace is the host's");
    }
    // IPC: the pod's /dev/shm is shared.
    env.exec_ok(&web, &["sh", "-c", "echo shm-data > /dev/shm/pvt"]);
    assert_eq!(env.exec_ok(&client, &["cat", "/dev/shm/pvt"]), "shm-data");

    let shims = env.shim_pids();
    assert_eq!(
        shims.len(),
        1,
        "one shim for a pod of two containers: {shims:?}"
    );
    let id = pod.id.clone();
    env.remove_pod_fully(&id);
    env.assert_nothing_left(&pids);
}

#[test]
fn exit_codes_and_stop_grace_pct_handler() {
    if skip_unless_ours() {
        return;
    }
    exits_and_stop(H_PCT);
}

#[test]
fn shared_namespaces_default_handler() {
    shared_namespaces(H_DEFAULT);
}

#[test]
fn shared_namespaces_config_path_handler() {
    if skip_unless_ours() {
        return;
    }
    shared_namespaces(H_RUNC);
}

// ---------------------------------------------------------------------------------------------
// Host network
// ---------------------------------------------------------------------------------------------

#[test]
fn host_network_pod() {
    let mut env = CriEnv::new();
    let pod = env.pod(H_DEFAULT, &[], true);
    let pause = env.pod_pid(&pod.id);
    let c = env.run(&pod, "hostnet", IDLE, &[]);
    let pid = env.ctr_pid(&c);
    assert_eq!(
        env.exec_ok(&c, &["readlink", "/proc/self/ns/net"]),
        cri_support::host_ns("self", "net"),
        "host-network pod is not in the host's network namespace"
    );
    let host_name = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    assert_eq!(env.exec_ok(&c, &["hostname"]), host_name.trim());
    let id = pod.id.clone();
    env.remove_pod_fully(&id);
    env.assert_nothing_left(&[pause, pid]);
}

// ---------------------------------------------------------------------------------------------
// containerd restart
// ---------------------------------------------------------------------------------------------

fn survives_restart(handler: &str) {
    let mut env = cri_env(handler);
    let pod = env.pod(handler, &[], false);
    let pause = env.pod_pid(&pod.id);
    let c = env.run(&pod, "survivor", IDLE, &[]);
    wait_log_line(&container_log(&pod, "survivor"), "stdout", "idle-ready");
    let pid = env.ctr_pid(&c);
    let shims = env.shim_pids();
    assert_eq!(shims.len(), 1, "{shims:?}");

    env.restart_containerd();

    assert_eq!(
        env.status(&c).state,
        RUNNING as i32,
        "container after restart"
    );
    let ip = pod_ip(&mut env, &pod);
    assert!(ip.starts_with("10.88."), "pod IP after restart: {ip:?}");
    assert_eq!(env.exec_ok(&c, &["echo", "after-restart"]), "after-restart");
    assert_eq!(env.ctr_pid(&c), pid);
    assert_eq!(
        env.shim_pids(),
        shims,
        "the pod's shim changed across the restart"
    );
    // A new container joins the same shim.
    let c2 = env.run(&pod, "late", IDLE, &[]);
    let pid2 = env.ctr_pid(&c2);
    assert_eq!(
        env.shim_pids(),
        shims,
        "new container did not join the pod's shim"
    );
    // Stop delivers the exit (an event the shim sends to the restarted containerd).
    env.cri.stop_ctr(&c, 10).unwrap_or_else(|e| {
        panic!(
            "StopContainer after restart: {e}\n{}",
            env.containerd_log_tail()
        )
    });
    let st = env.wait_state(&c, EXITED, Duration::from_secs(10));
    assert_eq!(st.exit_code, 0, "{st:#?}");
    let id = pod.id.clone();
    env.remove_pod_fully(&id);
    env.assert_nothing_left(&[pause, pid, pid2]);
}

#[test]
fn shared_namespaces_pct_handler() {
    if skip_unless_ours() {
        return;
    }
    shared_namespaces(H_PCT);
}

#[test]
fn survives_containerd_restart_default_handler() {
    survives_restart(H_DEFAULT);
}

#[test]
fn survives_containerd_restart_config_path_handler() {
    if skip_unless_ours() {
        return;
    }
    survives_restart(H_RUNC);
}

#[test]
fn survives_containerd_restart_pct_handler() {
    if skip_unless_ours() {
        return;
    }
    survives_restart(H_PCT);
}

/// A pod CT's container in a pid namespace of its own (what kubelet asks unless the pod sets
/// `shareProcessNamespace`), and an OOM kill in its own memory cgroup reported as OOMKilled.
#[test]
fn pct_pod_container_own_pid_namespace_and_oom() {
    if skip_unless_ours() {
        return;
    }
    let mut env = cri_env(H_PCT);
    let pod = env.pod(H_PCT, &[], false);
    let pause = env.pod_pid(&pod.id);
    let mut cfg = cri_support::container_config("own", cri_support::BUSYBOX, IDLE);
    if let Some(l) = cfg.linux.as_mut() {
        l.security_context = Some(v1::LinuxContainerSecurityContext {
            namespace_options: Some(v1::NamespaceOption {
                pid: v1::NamespaceMode::Container as i32,
                ipc: v1::NamespaceMode::Pod as i32,
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let c = env.run_config(&pod, &cfg);
    let pid = env.ctr_pid(&c);
    assert_eq!(env.exec_ok(&c, &["cat", "/proc/1/comm"]), "sh");
    let ps = env.exec_ok(&c, &["ps", "-o", "comm"]);
    assert!(
        !ps.contains("pause"),
        "the pod's pause seen from its own pid ns: {ps}"
    );

    // 128 MiB limit (container_config): the process that outgrows it is killed in its own cgroup.
    let hog = env.run(
        &pod,
        "hog",
        // `tail` keeps the last line, and /dev/zero has no newline: it grows until killed.
        &["sh", "-c", "echo start; exec tail /dev/zero"],
        &[],
    );
    let st = env.wait_state(&hog, EXITED, Duration::from_secs(60));
    assert_eq!(
        (st.exit_code, st.reason.as_str()),
        (137, "OOMKilled"),
        "{st:#?}"
    );
    // The pod and its other container live on.
    assert_eq!(env.exec_ok(&c, &["echo", "alive"]), "alive");
    let id = pod.id.clone();
    env.remove_pod_fully(&id);
    env.assert_nothing_left(&[pause, pid]);
}

/// What a CT cannot honour is refused naming the pod's field, before anything is made; a pod
/// without limits is bounded by the node (not Proxmox's 512 MiB default); a shim killed with a
/// pod CT running (a container with a host volume) leaves nothing once kubelet removes the pod.
#[test]
fn pct_pod_refusals_unlimited_size_and_crash_cleanup() {
    if skip_unless_ours() {
        return;
    }
    let mut env = cri_env(H_PCT);
    // hostPID, hostNetwork: refused at RunPodSandbox, no CT made.
    let mut cfg = env.pod_config(false);
    if let Some(ns) = cfg
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        ns.pid = v1::NamespaceMode::Node as i32;
    }
    let err = env
        .try_pod(H_PCT, cfg)
        .expect_err("a hostPID pod ran as a CT");
    assert!(err.message().contains("hostPID"), "{}", err.message());
    let cfg = env.pod_config(true);
    let err = env
        .try_pod(H_PCT, cfg)
        .expect_err("a hostNetwork pod ran as a CT");
    assert!(err.message().contains("hostNetwork"), "{}", err.message());
    assert!(env.pct_list().is_empty(), "CT left by a refused pod");

    // A pod that allows privileged containers, without limits.
    let mut cfg = env.pod_config(false);
    if let Some(sc) = cfg.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.privileged = true;
    }
    let pod = env
        .try_pod(H_PCT, cfg)
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", env.containerd_log_tail()));
    let cts = env.pct_list();
    assert_eq!(cts.len(), 1);
    let conf = common::stdout(&env.pct(&["config", &cts[0].to_string()]));
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap();
    let total_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    let want = format!("memory: {}", total_kib / 1024);
    assert!(
        conf.lines().any(|l| l == want),
        "an unlimited pod's CT lacks {want:?}:\n{conf}"
    );

    // A privileged container: refused naming the field; the pod is unharmed.
    let mut priv_cfg = cri_support::container_config("root", cri_support::BUSYBOX, IDLE);
    if let Some(l) = priv_cfg.linux.as_mut() {
        l.security_context = Some(v1::LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        });
    }
    let refused = match env.cri.create_ctr(&pod.id, &priv_cfg, &pod.config) {
        Err(e) => e,
        Ok(id) => {
            env.ctr_ids.push(id.clone());
            env.cri
                .start_ctr(&id)
                .expect_err("a privileged container started in a pod CT")
        }
    };
    assert!(
        refused.message().contains("securityContext.privileged"),
        "{}",
        refused.message()
    );

    // A container with a host volume runs; then the shim dies.
    let vol = env.log_dir().join("vol");
    fs::create_dir_all(&vol).unwrap();
    fs::write(vol.join("hello"), "from-the-host\n").unwrap();
    let mut cfg = cri_support::container_config("vol", cri_support::BUSYBOX, IDLE);
    cfg.mounts.push(v1::Mount {
        container_path: "/data".into(),
        host_path: vol.display().to_string(),
        readonly: true,
        ..Default::default()
    });
    let c = env.run_config(&pod, &cfg);
    assert_eq!(env.exec_ok(&c, &["cat", "/data/hello"]), "from-the-host");
    let pids = vec![env.pod_pid(&pod.id), env.ctr_pid(&c)];
    let shims = env.shim_pids();
    assert_eq!(shims.len(), 1, "one shim per pod: {shims:?}");
    common::run_ok(&["kill", "-KILL", &shims[0].to_string()]);
    // containerd notices, cleans up through `shim delete`, and reports the container exited.
    env.wait_state(&c, EXITED, Duration::from_secs(60));
    let id = pod.id.clone();
    env.remove_pod_fully(&id);
    env.assert_nothing_left(&pids);
}

// ---------------------------------------------------------------------------------------------
// Routing per RuntimeClass handler and annotations
// ---------------------------------------------------------------------------------------------

fn list_ids(runtime: &str, root: &str) -> String {
    let out = common::run_ok(&[runtime, "--root", root, "list", "-q"]);
    common::stdout(&out)
}

#[test]
fn routing_per_handler_and_annotations() {
    if skip_unless_ours() {
        return;
    }
    let mut env = CriEnv::new();
    let mut pids = Vec::new();
    // handler pvelxc: default config -> crun; a container annotation may pick runc.
    let pa = env.pod(H_DEFAULT, &[], false);
    let ca = env.run(&pa, "a", IDLE, &[]);
    let ca2 = env.run(&pa, "a2", IDLE, &[(ANN_BACKEND, "runc")]);
    // handler pvelxc-runc: ConfigPath -> backend runc.
    let pb = env.pod(H_RUNC, &[], false);
    let cb = env.run(&pb, "b", IDLE, &[]);
    // handler pvelxc + pod annotation (passed through by pod_annotations) -> runc.
    let pc = env.pod(H_DEFAULT, &[(ANN_BACKEND, "runc")], false);
    let cc = env.run(&pc, "c", IDLE, &[]);
    // handler pvelxc-locked: overrides forbidden, the annotation is ignored -> crun.
    let pd = env.pod(H_LOCKED, &[(ANN_BACKEND, "runc")], false);
    let cd = env.run(&pd, "d", IDLE, &[]);

    let expect = [
        (&pa.id, "crun", "pod a (pvelxc)"),
        (&ca, "crun", "container a"),
        (&ca2, "runc", "container a2 (annotation runc)"),
        (&pb.id, "runc", "pod b (pvelxc-runc)"),
        (&cb, "runc", "container b"),
        (&pc.id, "runc", "pod c (pod annotation runc)"),
        (&cc, "runc", "container c"),
        (&pd.id, "crun", "pod d (pvelxc-locked + annotation)"),
        (&cd, "crun", "container d"),
    ];
    let runc_list = list_ids("runc", "/run/pvelxc/runc/k8s.io");
    let crun_list = list_ids("crun", "/run/pvelxc/crun/k8s.io");
    for (id, backend, what) in expect {
        assert_eq!(env.recorded_backend(id), backend, "{what}: pvelxc.json");
        let (listed, other) = if backend == "runc" {
            (&runc_list, &crun_list)
        } else {
            (&crun_list, &runc_list)
        };
        assert!(
            listed.lines().any(|l| l.trim() == id.as_str()),
            "{what} ({id}) not listed by {backend}: {listed}"
        );
        assert!(
            !other.lines().any(|l| l.trim() == id.as_str()),
            "{what} ({id}) listed by the other runtime too"
        );
    }
    for c in [&ca, &ca2, &cb, &cc, &cd] {
        assert_eq!(env.exec_ok(c, &["echo", "ok"]), "ok");
        pids.push(env.ctr_pid(c));
    }
    // The sandbox and a runc container share the pod's network across backends.
    assert_eq!(
        env.exec_ok(&ca, &["readlink", "/proc/self/ns/net"]),
        env.exec_ok(&ca2, &["readlink", "/proc/self/ns/net"])
    );
    let shims = env.shim_pids();
    assert_eq!(shims.len(), 4, "one shim per pod: {shims:?}");
    for p in [&pa, &pb, &pc, &pd] {
        pids.push(env.pod_pid(&p.id));
        let id = p.id.clone();
        env.remove_pod_fully(&id);
    }
    env.assert_nothing_left(&pids);
}

// ---------------------------------------------------------------------------------------------
// pct off Proxmox: a clear error, never a half-made pod
// ---------------------------------------------------------------------------------------------

#[test]
fn pct_pod_off_proxmox_is_refused_cleanly() {
    if skip_unless_ours() {
        return;
    }
    let mut env = CriEnv::new();
    let mut cfg = env.pod_config(false);
    cfg.annotations
        .insert(ANN_BACKEND.to_string(), "pct".to_string());
    let err = match env.try_pod(H_DEFAULT, cfg) {
        Ok(p) => panic!("RunPodSandbox with {ANN_BACKEND}=pct succeeded: {}", p.id),
        Err(e) => e,
    };
    let msg = err.message().to_string();
    assert!(
        msg.contains("backend pct is not usable on this host"),
        "RunPodSandbox error does not say the pct backend cannot run here: {msg}"
    );
    let pods = env.cri.pods().expect("ListPodSandbox");
    assert!(pods.is_empty(), "a half-made pod is listed: {pods:#?}");

    // A container of a crun pod asking for pct: StartContainer fails, the pod is unharmed.
    let pod = env.pod(H_DEFAULT, &[], false);
    let bad = env.create(&pod, "bad", IDLE, &[(ANN_BACKEND, "pct")]);
    let err = env
        .cri
        .start_ctr(&bad)
        .expect_err("StartContainer of a pct container in a crun pod succeeded");
    let msg = err.message().to_string();
    assert!(
        msg.contains("pct"),
        "StartContainer error does not name the pct backend: {msg}"
    );
    let good = env.run(&pod, "good", IDLE, &[]);
    assert_eq!(env.exec_ok(&good, &["echo", "ok"]), "ok");
    let pids = vec![env.pod_pid(&pod.id), env.ctr_pid(&good)];
    let id = pod.id.clone();
    env.remove_pod_fully(&id);
    env.assert_nothing_left(&pids);
}

// ---------------------------------------------------------------------------------------------
// A pod as one Proxmox CT (the pct double inside a Proxmox-shaped host)
// ---------------------------------------------------------------------------------------------

#[test]
fn pct_pod_is_one_ct_with_its_containers() {
    if skip_unless_ours() {
        return;
    }
    let mut env = CriEnv::with_pct(761_000, 761_099);
    // The pod's totals as kubelet sends them (sum of the containers' limits and requests).
    let mut cfg = env.pod_config(false);
    if let Some(l) = cfg.linux.as_mut() {
        l.resources = Some(v1::LinuxContainerResources {
            memory_limit_in_bytes: 256 << 20,
            cpu_quota: 150_000,
            cpu_period: 100_000,
            cpu_shares: 512,
            ..Default::default()
        });
    }
    let pod = env
        .try_pod(H_PCT, cfg)
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", env.containerd_log_tail()));
    let cts = env.pct_list();
    assert_eq!(cts.len(), 1, "one CT for the pod");
    let conf = common::stdout(&env.pct(&["config", &cts[0].to_string()]));
    // The CT is sized like the pod: its limits + the configured overhead (64 MiB), no swap,
    // the CPU limit as cores/cpulimit, the requests as cpuunits (not pause's 2 shares).
    let units = if cgroup_v2_host() { "20" } else { "512" };
    for line in [
        "memory: 320".to_string(),
        "swap: 0".to_string(),
        "cores: 2".to_string(),
        "cpulimit: 1.5".to_string(),
        format!("cpuunits: {units}"),
    ] {
        assert!(
            conf.lines().any(|l| l == line),
            "CT config lacks {line:?}:\n{conf}"
        );
    }
    // The CT says whose it is: pod name and uid in its description, tags with the pod's name.
    let meta = pod.config.metadata.clone().unwrap_or_default();
    assert!(
        conf.contains(&meta.uid) && conf.contains(&format!("pod-{}", meta.name)),
        "CT config does not name the pod {} ({}):\n{conf}",
        meta.name,
        meta.uid
    );
    let ip = pod_ip(&mut env, &pod);
    assert!(ip.starts_with("10.88."), "pod IP {ip:?}");

    let cmd = [
        "sh",
        "-c",
        "echo out-line-1; echo err-line-1 >&2; \
         trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.2; done",
    ];
    let c = env.run(&pod, "app", &cmd, &[]);
    assert_eq!(
        env.pct_list().len(),
        1,
        "the container runs inside the pod's CT"
    );
    let log = container_log(&pod, "app");
    wait_log_line(&log, "stdout", "out-line-1");
    wait_log_line(&log, "stderr", "err-line-1");
    wait_log_line(&log, "stdout", "ready");

    // ExecSync inside the container: its stdout, stderr and exit code.
    let (code, out, err) = env.exec(&c, &["sh", "-c", "echo to-out; echo to-err >&2; exit 3"]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (3, "to-out\n", "to-err\n")
    );
    // The pod's network is the CT's: the pod IP is on the container's interface.
    let addrs = env.exec_ok(&c, &["ip", "-o", "-4", "addr"]);
    assert!(
        addrs.contains(&ip),
        "pod IP {ip} not in the container: {addrs}"
    );
    // The container's own root (the busybox image, not the pause image); the pod's pid
    // namespace (this pod config leaves CRI's default, POD): pause and the container see
    // each other.
    assert!(env.exec_ok(&c, &["ls", "/bin"]).contains("busybox"));
    let ps = env.exec_ok(&c, &["ps", "-o", "comm"]);
    assert!(ps.contains("pause") && ps.contains("sh"), "{ps}");
    // The pod's hostname and DNS files.
    let hn = pod.config.hostname.clone();
    assert_eq!(env.exec_ok(&c, &["hostname"]), hn);
    let hosts = env.exec_ok(&c, &["cat", "/etc/hosts"]);
    assert!(hosts.contains("localhost"), "{hosts}");

    // StopContainer: SIGTERM reaches the trap; its exit code comes back.
    env.cri.stop_ctr(&c, 10).expect("StopContainer");
    let st = env.wait_state(&c, EXITED, Duration::from_secs(20));
    assert_eq!(st.exit_code, 7, "{st:#?}");
    wait_log_line(&log, "stdout", "got-term");

    // A second container runs after the first is gone (Kubernetes' restart).
    let c2 = env.run(&pod, "again", IDLE, &[]);
    assert_eq!(env.exec_ok(&c2, &["echo", "ok"]), "ok");
    env.cri.stop_ctr(&c2, 10).expect("StopContainer");
    env.cri.remove_ctr(&c2).expect("RemoveContainer");
    env.cri.remove_ctr(&c).expect("RemoveContainer");
    env.cri.stop_pod(&pod.id).expect("StopPodSandbox");
    env.cri.remove_pod(&pod.id).expect("RemovePodSandbox");
    assert!(
        env.pct_list().is_empty(),
        "CTs left after RemovePodSandbox: {:?}",
        env.pct_list()
    );
}
