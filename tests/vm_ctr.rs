//! The vm backend on a real containerd: `ctr` with `--annotation io.pvelxc.backend=vm` boots a
//! QEMU micro-VM (TCG here) per container.
//!
//! Needs root, QEMU, the kernel cache from `crates/pvelxc-agent/fetch-kernel.sh`
//! (`PVELXC_VM_CACHE`, default /var/cache/pvelxc/vm) and a static guest agent (`PVELXC_AGENT_BIN`,
//! else built once into `target/tmp/agent-static`). Skips loudly (`common::skip`, suite `vm`) when
//! the kernel cache is missing; fails instead under `CI=true` or with `PVELXC_VM_REQUIRED=1`.
//! VM tests run one at a time (TCG on shared cores). `vm_bench` (ignored) prints start-to-output
//! latency and QEMU RSS: `cargo test --release --test vm_ctr -- --ignored --nocapture vm_bench`.

// An integration test crate: a failed step panics with its context. (The workspace denies
// unwrap/expect and unexplained unsafe in shipped code; tests are exempt.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::undocumented_unsafe_blocks
)]

mod common;
mod scenarios;

use common::vm::*;
use common::*;
use scenarios::{Backend, Expect};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);
const VM: &str = "io.pvelxc.backend=vm";

/// The vm test host: one VM test at a time (the guard), a private containerd with the vm config.
struct VmHost {
    _serial: MutexGuard<'static, ()>,
    env: TestEnv,
}

/// None when the test must be skipped (see `common::vm::vm_env`).
fn vm() -> Option<VmHost> {
    vm_env().map(|(g, env)| VmHost { _serial: g, env })
}

/// Run a shared scenario on a vm host (unless the test skips).
fn on_vm(scenario: fn(&VmHost)) {
    if let Some(host) = vm() {
        scenario(&host);
    }
}

impl Backend for VmHost {
    fn env(&self) -> &TestEnv {
        &self.env
    }
    fn env_mut(&mut self) -> &mut TestEnv {
        &mut self.env
    }
    fn expect(&self) -> &Expect {
        &scenarios::VM
    }
    /// The VM's state dir exists.
    fn check_running(&self, id: &str) {
        let dir = state_dir(&self.env, id);
        assert!(dir.is_dir(), "state dir {} must exist", dir.display());
    }
    /// No QEMU using the container's state dir, and the dir is gone.
    fn assert_gone(&self, id: &str) {
        assert_no_vm_left(&self.env, id);
    }
}

/// Live QEMU processes whose command line mentions `needle`.
fn qemus_with(needle: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let argv = cmdline(pid);
        if argv.first().is_some_and(|a| a.contains("qemu-system"))
            && argv.iter().any(|a| a.contains(needle))
            && pid_alive(pid)
        {
            v.push(pid);
        }
    }
    v
}

fn state_dir(env: &TestEnv, id: &str) -> PathBuf {
    Path::new("/run/pvelxc/vm").join(env.ns()).join(id)
}

fn assert_no_vm_left(env: &TestEnv, id: &str) {
    let dir = state_dir(env, id);
    let needle = dir.display().to_string();
    wait_until(&format!("no QEMU using {needle}"), T, || {
        qemus_with(&needle).is_empty().then_some(())
    });
    assert!(!dir.exists(), "state dir {} left behind", dir.display());
}

#[test]
fn vm_run_rootfs_stdio_exit_code_and_spec_mapping() {
    let Some(host) = vm() else {
        return;
    };
    scenarios::run::run_rootfs_stdio_exit_code(&host, "vm1");
    let env = &host.env;

    // Read-only rootfs, a read-write bind mount, memory limit → VM RAM, CPU quota → vCPUs.
    let rootfs = env.rootfs();
    fs::create_dir_all(rootfs.join("data")).expect("mkdir /data");
    let shared = env.dir().join("shared");
    fs::create_dir_all(&shared).expect("mkdir shared");
    // QEMU serves shares as the unprivileged vm.qemu_user: a read-write one must be writable by it.
    fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod shared");
    let mount = format!(
        "type=bind,src={},dst=/data,options=rbind:rw",
        shared.display()
    );
    let rt = runtime();
    let rootfs_s = rootfs.display().to_string();
    let script = "echo data > /data/f; touch /x 2>/dev/null && echo writable; \
                  grep MemTotal /proc/meminfo; echo cpus=$(nproc); hostname";
    let out = env.ctr(&[
        "run",
        "--rm",
        "--runtime",
        &rt,
        "--annotation",
        VM,
        "--env",
        CONTAINER_PATH,
        "--read-only",
        "--mount",
        &mount,
        "--memory-limit",
        "536870912",
        "--cpus",
        "2",
        "--rootfs",
        &rootfs_s,
        "vm2",
        "/bin/sh",
        "-c",
        script,
    ]);
    assert_eq!(exit_code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    assert_eq!(
        fs::read_to_string(shared.join("f")).unwrap_or_default(),
        "data\n",
        "bind mount must be shared read-write\n{}",
        describe(&out)
    );
    assert!(
        !text.contains("writable"),
        "rootfs must be read-only\n{text}"
    );
    let mem_kib: u64 = text
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("no MemTotal\n{}", describe(&out)));
    assert!(
        mem_kib > 512 * 1024,
        "VM RAM must exceed the 512 MiB limit (limit + overhead): {mem_kib} KiB"
    );
    let host_cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    assert!(
        text.contains(&format!("cpus={}", 2.min(host_cpus))),
        "--cpus 2 → vCPUs\n{text}"
    );
    assert!(text.contains("vm2"), "hostname defaults to the id\n{text}");
    assert_no_vm_left(env, "vm2");
    scenarios::finish(&host);
}

#[test]
fn vm_run_image() {
    on_vm(scenarios::run::run_image_stdio_exit_code_and_null_io);
}

#[test]
fn vm_detached_exec_ps_pause_metrics_kill_delete() {
    on_vm(scenarios::task::detached_exec_ps_pause_resume_metrics_kill);
}

#[test]
fn vm_shim_sigkill_then_rm_cleans_up() {
    on_vm(scenarios::recovery::shim_sigkill_then_rm_cleans_up);
}

/// A 32 MiB limit gives the minimum VM (memory_mib); `tail /dev/zero` exhausts it.
#[test]
fn vm_oom_event_and_exit_137() {
    on_vm(scenarios::run::oom_event_and_exit_137);
}

#[test]
fn vm_tty_run() {
    on_vm(scenarios::tty::tty_run_exec_and_resize);
}

// ------------------------------------------------------------------------------------------
// vm only: a missing kernel, the benchmark
// ------------------------------------------------------------------------------------------

#[test]
fn vm_missing_kernel_fails_clearly() {
    if skip_unless_our_runtime() {
        return;
    }
    let dir = work_dir();
    fs::create_dir_all(&dir).expect("mkdir");
    let cfg = dir.join(format!("nokernel-{}.toml", std::process::id()));
    fs::write(&cfg, "[vm]\nkernel = \"/nonexistent/pvelxc/vmlinux\"\n").expect("cfg");
    let env = TestEnv::builder().env("PVELXC_CONFIG", &cfg).start();
    let out = env.run_rootfs("vmnok", &["--annotation", VM], &["/bin/true"]);
    assert!(!out.status.success(), "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("/nonexistent/pvelxc/vmlinux") && err.contains("fetch-kernel.sh"),
        "the error must name the kernel path and fetch-kernel.sh\n{}",
        describe(&out)
    );
    let _ = fs::remove_file(&cfg);
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn vm_bench() {
    let Some((_g, env)) = vm_env() else {
        return;
    };
    let mut times = Vec::new();
    for i in 0..5 {
        let id = format!("vmb{i}");
        let rootfs = env.rootfs();
        let rt = runtime();
        let rootfs_s = rootfs.display().to_string();
        let t = Instant::now();
        let out = env.ctr(&[
            "run",
            "--rm",
            "--runtime",
            &rt,
            "--annotation",
            VM,
            "--env",
            CONTAINER_PATH,
            "--rootfs",
            &rootfs_s,
            &id,
            "/bin/echo",
            "hi",
        ]);
        let el = t.elapsed();
        assert_eq!(stdout(&out), "hi\n", "{}", describe(&out));
        times.push(el);
    }
    times.sort();
    eprintln!(
        "BENCH ctr run --rm (vm) /bin/echo hi: median {:.2} s, min {:.2} s, max {:.2} s",
        times[2].as_secs_f64(),
        times[0].as_secs_f64(),
        times[4].as_secs_f64()
    );
    let (_r, pid) =
        env.run_rootfs_detached("vmrss", &["--annotation", VM], &["/bin/sleep", "1000"]);
    std::thread::sleep(Duration::from_secs(2));
    eprintln!(
        "BENCH QEMU RSS per idle container (256 MiB guest): {} MiB",
        vm_rss_kb(pid).unwrap_or(0) / 1024
    );
    env.ctr_ok(&["task", "kill", "-s", "SIGKILL", "vmrss"]);
    env.wait_task_status("vmrss", "STOPPED", T);
    env.ctr_ok(&["task", "rm", "vmrss"]);
}
