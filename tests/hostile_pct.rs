//! A hostile container on the pct backend: root inside an unprivileged CT tries what an
//! attacker would against the root shim and the host (issue: "a hostile container cannot touch
//! the host, hang the shim, or hurt another container"). Each test runs the attack through
//! ctr, then checks the host, the shim's responsiveness and memory, and the other CTs.
//! Template isolation (same metadata, different bytes) is in tests/pct_ctr.rs.

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
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

fn sh(env: &TestEnv, exec_id: &str, task: &str, script: &str) -> std::process::Output {
    env.ctr(&[
        "task",
        "exec",
        "--exec-id",
        exec_id,
        task,
        "/bin/sh",
        "-c",
        script,
    ])
}

fn shim_rss_kb(env: &TestEnv) -> u64 {
    env.shim_pids()
        .iter()
        .filter_map(|p| vm_rss_kb(*p))
        .max()
        .unwrap_or(0)
}

/// The CT can write nowhere the host resolves names: not into D (where the init, the specs
/// and the control socket live), and only 64 KiB into its own rw/ directory. Planted names
/// (a symlink as an exec spec) never make the shim write through them.
#[test]
fn ct_cannot_write_where_the_host_resolves_names() {
    if skip_unless_our_runtime() {
        return;
    }
    let p = Pve::new(300_300, 300_339);
    let env = p.env();
    env.run_rootfs_detached("h1", &[], &["/bin/sleep", "1000"]);
    let secret = p.root.join("host-secret");
    fs::write(&secret, "secret\n").expect("write secret");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).expect("chmod");

    // The attack of the issue: a symlink where the next exec spec will be written.
    let s = secret.display().to_string();
    let out = sh(
        env,
        "a1",
        "h1",
        &format!("ln -s {s} /.pvelxc/exec-pwn.json && echo PLANTED; exit 0"),
    );
    assert!(
        !stdout(&out).contains("PLANTED"),
        "the CT wrote into D\n{}",
        describe(&out)
    );
    let out = env.ctr(&["task", "exec", "--exec-id", "pwn", "h1", "/bin/echo", "ok"]);
    assert_eq!(stdout(&out), "ok\n", "{}", describe(&out));
    assert_eq!(fs::read_to_string(&secret).expect("secret"), "secret\n");
    let mode = fs::metadata(&secret).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the host file's mode changed");

    // Nothing in D is writable or replaceable from inside.
    for target in [
        "/.pvelxc/x",
        "/.pvelxc/process.json",
        "/.pvelxc/init",
        "/.pvelxc/ctl.sock",
    ] {
        let out = sh(
            env,
            "a2",
            "h1",
            &format!("rm -f {target} 2>/dev/null; echo pwn > {target} && echo WROTE"),
        );
        assert!(
            !stdout(&out).contains("WROTE"),
            "{target} writable\n{}",
            describe(&out)
        );
    }
    let out = sh(env, "a3", "h1", "mv /.pvelxc/rw /.pvelxc/rw2 && echo MOVED");
    assert!(!stdout(&out).contains("MOVED"), "{}", describe(&out));
    // rw/ is a tiny tmpfs: the CT cannot fill the host's disk through it.
    let out = sh(
        env,
        "a4",
        "h1",
        "dd if=/dev/zero of=/.pvelxc/rw/fill bs=1024 count=1024 2>&1; \
         wc -c < /.pvelxc/rw/fill; rm -f /.pvelxc/rw/fill",
    );
    let written: u64 = stdout(&out)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .next_back()
        .unwrap_or(u64::MAX);
    assert!(
        written <= 64 * 1024,
        "rw/ took {written} bytes\n{}",
        describe(&out)
    );
    assert_eq!(
        stdout(&env.ctr(&[
            "task",
            "exec",
            "--exec-id",
            "a5",
            "h1",
            "/bin/echo",
            "alive"
        ])),
        "alive\n"
    );
    env.ctr_ok(&["task", "kill", "-s", "KILL", "h1"]);
    env.wait_task_status("h1", "STOPPED", Duration::from_secs(60));
    env.ctr_ok(&["task", "rm", "h1"]);
    env.ctr_ok(&["container", "rm", "h1"]);
    p.assert_clean();
}

/// The hang: `.exit.tmp` made a directory and `exit` a FIFO, then exit 3. The shim
/// must report 3 (from the control socket), quickly, and delete the CT; a planted symlink to
/// an endless host file is never read.
#[test]
fn planted_exit_records_neither_hang_nor_grow_the_shim() {
    if skip_unless_our_runtime() {
        return;
    }
    let p = Pve::new(300_340, 300_379);
    let env = p.env();
    let t0 = Instant::now();
    let out = env.run_rootfs(
        "fifo",
        &[],
        &[
            "/bin/sh",
            "-c",
            "mkdir /.pvelxc/rw/.exit.tmp; mkfifo /.pvelxc/rw/exit; echo planted; exit 3",
        ],
    );
    assert_eq!(exit_code(&out), 3, "{}", describe(&out));
    assert_eq!(stdout(&out), "planted\n", "{}", describe(&out));
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "took {:?}",
        t0.elapsed()
    );

    // A symlink to /dev/zero as the exit record (the 64 MB read, unbounded here).
    let (_r, _pid) = env.run_rootfs_detached(
        "zero",
        &[],
        &[
            "/bin/sh",
            "-c",
            "mkdir /.pvelxc/rw/.exit.tmp; ln -s /dev/zero /.pvelxc/rw/exit; \
             trap 'exit 4' TERM; while true; do sleep 0.2; done",
        ],
    );
    let before = shim_rss_kb(env);
    env.ctr_ok(&["task", "kill", "-s", "TERM", "zero"]);
    env.wait_task_status("zero", "STOPPED", Duration::from_secs(60));
    assert_eq!(env.task_rm_exit_code("zero"), 4);
    let after = shim_rss_kb(env);
    assert!(
        after < before + 8 * 1024,
        "shim RSS grew from {before} kB to {after} kB"
    );
    env.ctr_ok(&["container", "rm", "zero"]);
    p.assert_clean();
}

/// Never destroy a CT that is not provably ours: the VMID of a container whose CT an admin
/// destroyed and re-created by hand (same VMID, no pvelxc tag) survives the container's
/// deletion, and so do the foreign guests of other nodes.
#[test]
fn a_reused_vmid_is_not_destroyed() {
    if skip_unless_our_runtime() {
        return;
    }
    let p = Pve::new(300_380, 300_419);
    let env = p.env();
    env.run_rootfs_detached("reuse", &[], &["/bin/sleep", "1000"]);
    let vmid = vmid_of(&p, "reuse").to_string();
    // The admin removes the CT behind the shim's back and makes their own with that VMID.
    let out = p.pct(&["stop", &vmid]);
    assert!(out.status.success(), "{}", describe(&out));
    env.wait_task_status("reuse", "STOPPED", Duration::from_secs(60));
    let out = p.pct(&["destroy", &vmid, "--purge", "1"]);
    assert!(out.status.success(), "{}", describe(&out));
    let tpl = fs::read_dir(p.root.join("storage/local/template/cache"))
        .expect("templates")
        .flatten()
        .map(|e| e.path())
        .find(|x| x.extension().is_some_and(|e| e == "tar"))
        .expect("a template");
    let tpl = tpl.display().to_string();
    let out = p.pct(&[
        "create",
        &vmid,
        &tpl,
        "--rootfs",
        "local-lvm:0.1",
        "--hostname",
        "admins-ct",
        "--ostype",
        "unmanaged",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(env.task_rm_exit_code("reuse"), 137);
    env.ctr_ok(&["container", "rm", "reuse"]);
    assert!(
        p.list().contains(&vmid.parse().expect("vmid")),
        "the admin's CT {vmid} was destroyed"
    );
    let out = p.pct(&["destroy", &vmid, "--purge", "1"]);
    assert!(out.status.success(), "{}", describe(&out));
    p.assert_clean();
}

/// A late `delete` action (containerd runs the shim binary's `delete` for a container whose
/// shim it lost, possibly long after the container was removed) must not touch the next
/// container given the same VMID: its CT, its per-CT directory and its reservation survive.
#[test]
fn a_late_delete_action_spares_the_next_container_on_its_vmid() {
    if skip_unless_our_runtime() {
        return;
    }
    // Two VMIDs, no room for foreign guests: one for the image's template CT (linked clones),
    // one for the containers; the second container must get the first's.
    let p = Pve::new(300_420, 300_421);
    let env = p.env();
    env.run_rootfs_detached("first", &[], &["/bin/sh", "-c", "exec tail -f /dev/null"]);
    let free = vmid_of(&p, "first");
    // What the late delete action will find: a copy of the first container's bundle.
    let bundle = env
        .state()
        .join("io.containerd.runtime.v2.task")
        .join(env.ns())
        .join("first");
    let stale = p.root.join("stale-bundle");
    fs::create_dir_all(&stale).unwrap();
    for f in ["pvelxc.json", "config.json"] {
        fs::copy(bundle.join(f), stale.join(f)).unwrap_or_else(|e| panic!("copy {f}: {e}"));
    }
    env.ctr_ok(&["task", "kill", "-s", "SIGKILL", "first"]);
    env.wait_task_status("first", "STOPPED", Duration::from_secs(60));
    env.ctr_ok(&["task", "rm", "first"]);
    env.ctr_ok(&["container", "rm", "first"]);
    env.run_rootfs_detached("second", &[], &["/bin/sh", "-c", "exec tail -f /dev/null"]);
    assert_eq!(vmid_of(&p, "second"), free, "the VMID was reused");

    // containerd's late `delete` for the first container, as containerd runs it.
    let shim = shim_dir().join(SHIM_BINARY);
    let args = [
        "-namespace",
        env.ns(),
        "-address",
        &env.address().display().to_string(),
        "-id",
        "first",
        "delete",
    ];
    let mut c = p.shaped(shim.as_os_str(), &args);
    c.current_dir(&stale)
        .env("PVELXC_CONFIG", p.root.join("pvelxc.toml"))
        .env(
            "TTRPC_ADDRESS",
            format!("{}.ttrpc", env.address().display()),
        )
        .env("GRPC_ADDRESS", env.address());
    let out = run_cmd(c, None, Duration::from_secs(60));
    assert!(out.status.success(), "delete action: {}", describe(&out));

    assert!(
        p.list().contains(&free),
        "the second container's CT was destroyed"
    );
    assert!(
        p.state.join(free.to_string()).is_dir(),
        "the second container's per-CT directory was removed"
    );
    let info = env.wait_task_status("second", "RUNNING", Duration::from_secs(5));
    assert_eq!(info.status, "RUNNING");
    let out = env.ctr_ok(&[
        "task",
        "exec",
        "--exec-id",
        "alive",
        "second",
        "echo",
        "alive",
    ]);
    assert_eq!(stdout(&out).trim(), "alive");
    env.ctr_ok(&["task", "kill", "-s", "SIGKILL", "second"]);
    env.wait_task_status("second", "STOPPED", Duration::from_secs(60));
    env.ctr_ok(&["task", "rm", "second"]);
    env.ctr_ok(&["container", "rm", "second"]);
    p.assert_clean();
}
