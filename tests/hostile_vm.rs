//! A hostile container in the vm backend cannot touch the host: guest root's ownership, modes
//! and device nodes never reach host files; a guest flooding stdout does not grow the shim; fake
//! OOM lines on the console yield a bounded number of TaskOOM events; QEMU runs inside the
//! container's host cgroup with the memory limit set.
//!
//! Needs root, QEMU, the kernel cache (`crates/pvelxc-agent/fetch-kernel.sh`, `PVELXC_VM_CACHE`)
//! and the `pvelxc-qemu` user (`crates/pvelxc-agent/setup-host.sh`); the static agent comes from
//! `PVELXC_AGENT_BIN` or is built once into `target/tmp/agent-static` (as in tests/vm_ctr.rs).
//! Skips, printing why, when something is missing and `PVELXC_VM_REQUIRED` is unset; with
//! `PVELXC_VM_REQUIRED=1` a skip is a failure.

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
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);
const VM: &str = "io.pvelxc.backend=vm";

/// uid and gid of `pvelxc-qemu` from /etc/passwd.
fn qemu_user() -> Option<(u32, u32)> {
    let text = fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == "pvelxc-qemu")
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

/// The shared vm test host (tests/common/vm.rs), which must also have the `pvelxc-qemu` user.
fn vm_env(_test: &str) -> Option<(MutexGuard<'static, ()>, TestEnv)> {
    if qemu_user().is_none() && !skip_unless_our_runtime() {
        skip::unavailable(
            "vm",
            &["PVELXC_VM_REQUIRED"],
            "missing the pvelxc-qemu user: run crates/pvelxc-agent/setup-host.sh",
        );
        return None;
    }
    common::vm::vm_env()
}

/// Every setuid/setgid file, device node or root-owned file created below `dir` after `since`.
fn host_offenders(dir: &Path, since: i64) -> Vec<String> {
    let mut bad = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let Ok(md) = fs::symlink_metadata(&p) else {
                continue;
            };
            let ft = md.file_type();
            if ft.is_block_device() || ft.is_char_device() {
                bad.push(format!("device node {}", p.display()));
            }
            if md.mode() & 0o6000 != 0 {
                bad.push(format!("setuid/setgid {} ({:o})", p.display(), md.mode()));
            }
            if md.ctime() >= since && md.uid() == 0 && !ft.is_dir() {
                bad.push(format!("root-owned new file {}", p.display()));
            }
            if ft.is_dir() {
                todo.push(p);
            }
        }
    }
    bad
}

#[test]
fn hostile_vm_guest_root_metadata_never_reaches_the_host() {
    let Some((_g, env)) = vm_env("hostile_vm_guest_root_metadata_never_reaches_the_host") else {
        return;
    };
    let (quid, qgid) = qemu_user().expect("pvelxc-qemu");
    let rootfs = env.rootfs();
    fs::create_dir_all(rootfs.join("data")).expect("mkdir /data");
    let shared = env.dir().join("hostile-shared");
    fs::create_dir_all(&shared).expect("mkdir shared");
    // Read-write bind mounts must be writable by the user QEMU runs as.
    std::os::unix::fs::chown(&shared, Some(quid), Some(qgid)).expect("chown shared");
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mount = format!(
        "type=bind,src={},dst=/data,options=rbind:rw",
        shared.display()
    );
    let script = "set -e; for d in /data /; do \
                  cp /bin/busybox ${d}/bb; chown 0:0 ${d}/bb; chmod 4755 ${d}/bb; \
                  mknod ${d}/blk b 8 0; mknod ${d}/chr c 1 3; ln -s /etc/shadow ${d}/esc; done; \
                  stat -c '%n %u:%g %a %F' /data/bb /bb /data/blk /blk /data/chr";
    let rt = runtime();
    let rootfs_s = rootfs.display().to_string();
    let out = env.ctr(&[
        "run",
        "--rm",
        "--runtime",
        &rt,
        "--annotation",
        VM,
        "--env",
        CONTAINER_PATH,
        "--mount",
        &mount,
        "--rootfs",
        &rootfs_s,
        "hv1",
        "/bin/sh",
        "-c",
        script,
    ]);
    assert_eq!(exit_code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    // The guest sees what it set...
    for want in [
        "/data/bb 0:0 4755 regular file",
        "/bb 0:0 4755 regular file",
        "/data/blk 0:0 644 block special file",
        "/blk 0:0 644 block special file",
        "/data/chr 0:0 644 character special file",
    ] {
        assert!(text.contains(want), "guest view: want {want:?}\n{text}");
    }
    // ... the host does not.
    for dir in [&shared, &rootfs] {
        let bad = host_offenders(dir, since);
        assert!(bad.is_empty(), "host side of {}: {bad:#?}", dir.display());
        for name in ["bb", "blk", "chr", "esc"] {
            let md = fs::symlink_metadata(dir.join(name)).expect("created file");
            assert!(
                md.file_type().is_file(),
                "{name} must be a plain file on the host"
            );
            assert_eq!(
                (md.uid(), md.mode() & 0o7777),
                (quid, 0o600),
                "{}: owner and mode on the host",
                dir.join(name).display()
            );
        }
    }
    // The image's files were handed to QEMU's user too (nothing in the rootfs is root's now).
    assert_eq!(
        fs::symlink_metadata(rootfs.join("bin")).expect("bin").uid(),
        quid
    );
    assert!(
        env.leftover_mounts().is_empty(),
        "{:?}",
        env.leftover_mounts()
    );
}

#[test]
fn hostile_vm_stdout_flood_keeps_the_shim_small_and_responsive() {
    let Some((_g, env)) = vm_env("hostile_vm_stdout_flood_keeps_the_shim_small_and_responsive")
    else {
        return;
    };
    // Detached: once ctr exits nobody reads the stdout FIFO.
    let (_r, qemu) = env.run_rootfs_detached(
        "hv2",
        &["--annotation", VM],
        &[
            "/bin/sh",
            "-c",
            "head -c 104857600 /dev/zero | tr '\\000' x; sleep 1000",
        ],
    );
    let shims = env.shim_pids();
    assert_eq!(shims.len(), 1, "{shims:?}");
    let shim = shims[0];
    let t0 = Instant::now();
    let mut peak = 0;
    while t0.elapsed() < Duration::from_secs(25) {
        peak = peak.max(vm_rss_kb(shim).unwrap_or(0));
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("shim peak RSS while the guest floods stdout: {} KiB", peak);
    assert!(
        peak < 64 * 1024,
        "shim RSS {peak} KiB must stay under 64 MiB while nobody reads"
    );
    let t = Instant::now();
    let ps = env.ctr(&["task", "ps", "hv2"]);
    assert!(ps.status.success(), "{}", describe(&ps));
    assert!(stdout(&ps).contains(&qemu.to_string()), "{}", describe(&ps));
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "ps took {:?}",
        t.elapsed()
    );
    env.ctr_ok(&["task", "kill", "-s", "SIGKILL", "hv2"]);
    env.wait_task_status("hv2", "STOPPED", T);
    env.ctr_ok(&["task", "rm", "hv2"]);
}

#[test]
fn hostile_vm_fake_oom_lines_are_rate_limited() {
    let Some((_g, env)) = vm_env("hostile_vm_fake_oom_lines_are_rate_limited") else {
        return;
    };
    let ev = env.events();
    let script = "i=0; while [ $i -lt 1000 ]; do \
                  echo \"[    1.000000] Out of memory: Killed process $((i+100)) (fake) total-vm:1kB, anon-rss:0kB\" > /dev/ttyS0; \
                  echo \"<3>Out of memory: Killed process $((i+5000)) (fake) total-vm:1kB\" > /dev/kmsg; \
                  i=$((i+1)); done; echo flooded";
    let t0 = Instant::now();
    let out = env.run_rootfs("hv3", &["--annotation", VM], &["/bin/sh", "-c", script]);
    assert_eq!(exit_code(&out), 0, "{}", describe(&out));
    assert!(stdout(&out).contains("flooded"), "{}", describe(&out));
    std::thread::sleep(Duration::from_secs(1));
    let secs = t0.elapsed().as_secs_f64();
    let n = ev
        .events()
        .iter()
        .filter(|e| e.topic == "/tasks/oom" && e.payload.contains("hv3"))
        .count();
    eprintln!("{n} TaskOOM events for 2000 fake OOM lines in {secs:.1} s");
    // Burst 3, then 1 per second (src/backend/vm/oom.rs); the lines do arrive (n ≥ 1).
    assert!(n >= 1, "the fake lines must reach the filter");
    assert!(
        (n as f64) <= 3.0 + secs + 1.0,
        "{n} OOM events in {secs:.1} s exceed the rate limit"
    );
}

#[test]
fn hostile_vm_qemu_runs_in_the_container_cgroup_with_limits() {
    let Some((_g, env)) = vm_env("hostile_vm_qemu_runs_in_the_container_cgroup_with_limits") else {
        return;
    };
    let (_r, qemu) = env.run_rootfs_detached(
        "hv4",
        &[
            "--annotation",
            VM,
            "--memory-limit",
            "268435456",
            "--cpus",
            "1",
        ],
        &["/bin/sleep", "1000"],
    );
    // QEMU runs as the unprivileged user.
    let status = fs::read_to_string(format!("/proc/{qemu}/status")).expect("status");
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or("");
    let (quid, _) = qemu_user().expect("user");
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|u| u == quid.to_string()),
        "QEMU must run as pvelxc-qemu: {uid_line}"
    );
    let cg = fs::read_to_string(format!("/proc/{qemu}/cgroup")).expect("cgroup");
    // ctr's default cgroupsPath is /<namespace>/<id>.
    let want = format!("/{}/hv4", env.ns());
    let (limit_file, rel) = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let rel = cg
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or("")
            .to_string();
        (format!("/sys/fs/cgroup{rel}/memory.max"), rel)
    } else {
        let rel = cg
            .lines()
            .find_map(|l| {
                let mut p = l.splitn(3, ':');
                let (_, c, path) = (p.next()?, p.next()?, p.next()?);
                c.split(',')
                    .any(|c| c == "memory")
                    .then(|| path.to_string())
            })
            .unwrap_or_default();
        (
            format!("/sys/fs/cgroup/memory{rel}/memory.limit_in_bytes"),
            rel,
        )
    };
    assert_eq!(rel, want, "QEMU's cgroup\n{cg}");
    let limit: u64 = fs::read_to_string(&limit_file)
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0);
    // Guest RAM = 256 MiB limit + 64 overhead = 320 MiB; the cgroup adds qemu_overhead_mib 192.
    assert_eq!(limit, (320 + 192) << 20, "{limit_file}");
    env.ctr_ok(&["task", "kill", "-s", "SIGKILL", "hv4"]);
    env.wait_task_status("hv4", "STOPPED", T);
    env.ctr_ok(&["task", "rm", "hv4"]);
    let dir = Path::new(&limit_file).parent().expect("dir").to_path_buf();
    wait_until("the QEMU cgroup to be removed", T, || {
        (!dir.exists()).then_some(())
    });
}
