//! Boots a real micro-VM (TCG) with a busybox rootfs and drives the guest agent.
//!
//! Needs root, qemu-system-x86_64, busybox-static and the kernel cache from `fetch-kernel.sh`
//! (`PVELXC_VM_CACHE`, default /var/cache/pvelxc/vm). Skips loudly (`skip`, suite `vm`) only when
//! that cache is absent; a failure instead under `CI=true` or with `PVELXC_VM_REQUIRED` set.
//! `PVELXC_AGENT_BIN` may name a prebuilt static agent; otherwise the
//! test builds one (static glibc, release) in its own target directory.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::undocumented_unsafe_blocks
)] // a test crate: panics carry the context

/// The workspace's one skip helper (loud, counted, a failure under CI).
#[path = "../../../tests/common/skip.rs"]
mod skip;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pvelxc_agent::host::{ExtraMount, Vm, VmConfig};
use pvelxc_agent::initramfs;
use pvelxc_agent::proto::Process;
use pvelxc_agent::proto::Rlimit;

const STEP: Duration = Duration::from_secs(60);

fn cache_dir() -> PathBuf {
    std::env::var_os("PVELXC_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/pvelxc/vm"))
}

fn static_agent() -> PathBuf {
    if let Some(p) = std::env::var_os("PVELXC_AGENT_BIN") {
        return PathBuf::from(p);
    }
    // A separate target dir: the outer `cargo test` holds the lock on the shared one.
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("agent-static");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let triple = "x86_64-unknown-linux-gnu";
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "pvelxc-agent",
            "--bin",
            "pvelxc-agent",
            "--target",
            triple,
        ])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("running cargo to build the static agent");
    assert!(
        status.success(),
        "building the static agent failed: {status}"
    );
    target_dir.join(triple).join("release").join("pvelxc-agent")
}

/// bin/busybox plus one symlink per applet, and the mount points the agent uses.
fn busybox_rootfs(dir: &Path) {
    let _ = fs::remove_dir_all(dir);
    for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox not found: apt-get install busybox-static");
    fs::copy(busybox, dir.join("bin/busybox")).unwrap();
    let list = Command::new(busybox).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
        }
    }
}

fn sh(script: &str) -> Process {
    Process {
        args: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec!["PATH=/bin".into(), "HOME=/".into()],
        cwd: "/".into(),
        ..Default::default()
    }
}

async fn step<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// The kernel, or `None` after a skip (`skip::unavailable`, suite `vm`: a failure under `CI=true` or
/// with `PVELXC_VM_REQUIRED` set).
fn kernel_or_skip() -> Option<PathBuf> {
    let kernel = cache_dir().join("vmlinux");
    if kernel.exists() {
        return Some(kernel);
    }
    skip::unavailable(
        "vm",
        &["PVELXC_VM_REQUIRED"],
        &format!(
            "no guest kernel at {} (run crates/pvelxc-agent/fetch-kernel.sh)",
            kernel.display()
        ),
    );
    None
}

/// A fresh work dir with a busybox rootfs and an initramfs: (work, rootfs, initramfs).
fn prepare(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let rootfs = work.join("rootfs");
    busybox_rootfs(&rootfs);
    let agent = static_agent();
    let initrd = work.join("initramfs.cpio.gz");
    initramfs::build(&cache_dir().join("modules"), &agent, &initrd).unwrap();
    println!("initramfs: {} bytes", fs::metadata(&initrd).unwrap().len());
    (work, rootfs, initrd)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_run_exec_signal_tty_shutdown() {
    let Some(kernel) = kernel_or_skip() else {
        return;
    };
    let (_work, rootfs, initrd) = prepare("pvelxc-agent-boot");
    let mut cfg = VmConfig::new(&kernel, &initrd, &rootfs);
    cfg.hostname = "pvelxc-test".into();
    cfg.boot_timeout = Duration::from_secs(60);

    let t0 = Instant::now();
    let vm = match Vm::start(cfg).await {
        Ok(vm) => vm,
        Err(e) => panic!("VM did not start: {e}"),
    };
    println!(
        "boot: launch -> agent ready {:?} (kernel {})",
        vm.boot_time(),
        vm.guest_info().0
    );
    let run_dir = vm.run_dir().to_path_buf();
    let qemu_pid = vm.qemu_pid().unwrap();

    // Container process: stdout, stderr, exit code.
    let mut io = step("run", vm.run("c1", &sh("echo hi; echo err >&2; exit 3")))
        .await
        .unwrap();
    let first = step("first output", io.stdout.recv()).await;
    println!(
        "boot-to-output latency: {:?} (launch -> first stdout byte)",
        t0.elapsed()
    );
    let mut out = first.unwrap_or_default();
    out.extend(step("stdout", io.stdout.read_to_end()).await);
    let err = step("stderr", io.stderr.read_to_end()).await;
    assert_eq!(String::from_utf8_lossy(&out), "hi\n");
    assert_eq!(String::from_utf8_lossy(&err), "err\n");
    assert_eq!(step("wait c1", vm.wait("c1")).await.unwrap(), 3);

    // Exec with stdin.
    let t = Instant::now();
    let mut e1 = step("exec", vm.exec("e1", &sh("cat; exit 5")))
        .await
        .unwrap();
    e1.stdin.write(b"x").await.unwrap();
    e1.stdin.close().await.unwrap();
    assert_eq!(step("e1 stdout", e1.stdout.read_to_end()).await, b"x");
    assert_eq!(step("wait e1", vm.wait("e1")).await.unwrap(), 5);
    println!(
        "exec round trip (start, stdin, output, exit): {:?}",
        t.elapsed()
    );

    // Bulk stdin -> stdout through cat (framing, ordering, both directions at once).
    let data: Vec<u8> = (0..(2u32 << 20)).map(|i| (i % 251) as u8).collect();
    let t = Instant::now();
    let mut big = step("exec cat", vm.exec("big", &sh("exec cat")))
        .await
        .unwrap();
    let reader = tokio::spawn(async move { big.stdout.read_to_end().await });
    big.stdin.write(&data).await.unwrap();
    big.stdin.close().await.unwrap();
    let echoed = step("cat output", reader).await.unwrap();
    assert_eq!(echoed.len(), data.len());
    assert!(echoed == data, "2 MiB round trip corrupted");
    assert_eq!(step("wait big", vm.wait("big")).await.unwrap(), 0);
    println!("2 MiB through cat (in + out): {:?}", t.elapsed());

    // pids, stats, SIGKILL.
    let s1 = step("exec sleep", vm.exec("s1", &sh("exec sleep 1000")))
        .await
        .unwrap();
    let pids = step("pids", vm.pids()).await.unwrap();
    println!("pids: {pids:?}");
    assert!(
        pids.iter().any(|p| p.pid == s1.pid && p.id == "s1"),
        "sleep missing from {pids:?}"
    );
    let stats = step("stats", vm.stats()).await.unwrap();
    println!("stats: {stats:?}");
    assert!(stats.mem_used_bytes > 0 && stats.mem_total_bytes > 0);
    step("signal", vm.signal("s1", 9)).await.unwrap();
    assert_eq!(step("wait s1", vm.wait("s1")).await.unwrap(), 137);
    assert!(
        vm.signal("s1", 9).await.is_err(),
        "signal to an exited process must fail"
    );

    // Terminal: tty, initial size, resize.
    let mut t1 = step(
        "tty",
        vm.exec(
            "t1",
            &Process {
                terminal: true,
                console_size: Some((33, 77)),
                ..sh("tty; stty size; read line; stty size")
            },
        ),
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("33 77") {
        match step("tty output", t1.stdout.recv()).await {
            Some(c) => seen.extend(c),
            None => break,
        }
    }
    step("resize", vm.resize("t1", 40, 100)).await.unwrap();
    t1.stdin.write(b"go\n").await.unwrap();
    seen.extend(step("tty rest", t1.stdout.read_to_end()).await);
    let text = String::from_utf8_lossy(&seen);
    println!("tty output: {text:?}");
    assert!(text.contains("/dev/pts/"), "{text:?}");
    assert!(text.contains("40 100"), "{text:?}");
    assert_eq!(step("wait t1", vm.wait("t1")).await.unwrap(), 0);

    let mem = vm.qemu_memory().unwrap();
    println!(
        "QEMU RSS: {} MiB (peak {} MiB)",
        mem.rss_bytes >> 20,
        mem.peak_rss_bytes >> 20
    );

    let console = fs::read_to_string(vm.console_log()).unwrap_or_default();
    println!("--- serial console ---\n{console}--- end ---");

    let t = Instant::now();
    step("shutdown", vm.shutdown()).await.unwrap();
    println!("shutdown: {:?}", t.elapsed());
    assert!(
        !Path::new(&format!("/proc/{qemu_pid}")).exists(),
        "QEMU {qemu_pid} still exists"
    );
    assert!(!run_dir.exists(), "{} left behind", run_dir.display());
    drop(vm);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_rootfs_extra_mount_and_process_settings() {
    let Some(kernel) = kernel_or_skip() else {
        return;
    };
    let (work, rootfs, initrd) = prepare("pvelxc-agent-ro");
    fs::create_dir_all(rootfs.join("data")).unwrap();
    let shared = work.join("shared");
    let _ = fs::remove_dir_all(&shared);
    fs::create_dir_all(&shared).unwrap();
    // uid 1000 writes here; set before boot (the guest caches the mount root's attributes).
    std::os::unix::fs::chown(&shared, Some(1000), Some(1000)).unwrap();
    let mut cfg = VmConfig::new(&kernel, &initrd, &rootfs);
    cfg.read_only = true;
    cfg.hostname = "ro-test".into();
    cfg.mounts.push(ExtraMount {
        host_path: shared.clone(),
        guest_path: "/data".into(),
        read_only: false,
    });
    let vm = Vm::start(cfg)
        .await
        .unwrap_or_else(|e| panic!("VM did not start: {e}"));

    let mut p = sh("hostname; touch /ro-probe 2>/dev/null && echo writable; echo shared > /data/f; id -u; id -g; id -G; pwd; ulimit -n; echo $FOO");
    p.uid = 1000;
    p.gid = 1000;
    p.additional_gids = vec![2000, 3000];
    p.cwd = "/data".into();
    p.env.push("FOO=bar baz".into());
    p.rlimits.push(Rlimit {
        kind: "RLIMIT_NOFILE".into(),
        soft: 123,
        hard: 456,
    });
    let mut io = step("run", vm.run("c", &p)).await.unwrap();
    let out = String::from_utf8(step("stdout", io.stdout.read_to_end()).await).unwrap();
    let err = String::from_utf8_lossy(&step("stderr", io.stderr.read_to_end()).await).into_owned();
    assert_eq!(step("wait", vm.wait("c")).await.unwrap(), 0, "{out}");
    assert_eq!(err, "", "stderr");
    assert_eq!(
        out,
        "ro-test\n1000\n1000\n1000 2000 3000\n/data\n123\nbar baz\n"
    );
    assert_eq!(fs::read_to_string(shared.join("f")).unwrap(), "shared\n");
    assert!(!rootfs.join("ro-probe").exists());

    // Errors come back as errors.
    let missing = vm
        .exec(
            "x",
            &Process {
                args: vec!["/no/such".into()],
                ..Default::default()
            },
        )
        .await;
    assert!(missing.is_err(), "exec of a missing binary must fail");
    assert!(
        vm.run("again", &sh("true")).await.is_err(),
        "a second Run must fail"
    );

    vm.shutdown().await.unwrap();
}
