//! End-to-end tests against real LXC (root required; skipped loudly otherwise, a failure under
//! `CI=true`: see `skip`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::undocumented_unsafe_blocks
)] // a test crate: panics carry the context

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

#[test]
fn create_start_exec_stop_destroy() {
    if !needs_lxc() {
        return;
    }
    let env = Env::new("life", &[810]);
    assert_eq!(
        text(
            &env.cmd(PVESH, &["get", "/cluster/nextid"])
                .output()
                .unwrap()
                .stdout
        ),
        "100\n"
    );
    let out = env.pct_ok(&[
        "create",
        "810",
        "local:vztmpl/busybox.tar",
        "--rootfs",
        "local-lvm:1",
        "--hostname",
        "life",
        "--entrypoint",
        "/bin/sleep 1000",
        "--memory=128",
        "-cores",
        "1",
    ]);
    assert!(out.contains("extracting archive"), "{out}");
    let conf = env.pct_ok(&["config", "810"]);
    assert!(
        conf.contains("rootfs: local-lvm:vm-810-disk-0,size=1G\n"),
        "{conf}"
    );
    assert!(conf.contains("unprivileged: 1\n"));
    assert!(conf.contains("ostype: unmanaged\n"));

    let o = env.pct(&[
        "create",
        "810",
        "local:vztmpl/busybox.tar",
        "--rootfs",
        "local-lvm:1",
    ]);
    assert_eq!(o.status.code(), Some(255));
    assert_eq!(text(&o.stderr), "CT 810 already exists on node 'pve'\n");

    assert_eq!(env.pct_ok(&["start", "810"]), "", "start is silent");
    let o = env.pct(&["start", "810"]);
    assert_eq!(text(&o.stderr), "CT 810 already running\n");
    let st = env.pct_ok(&["status", "810", "--verbose"]);
    assert!(st.contains("status: running\n"), "{st}");
    let pid: i32 = st
        .lines()
        .find_map(|l| l.strip_prefix("pid: "))
        .expect("pid line")
        .parse()
        .unwrap();
    let info = Command::new("lxc-info")
        .arg("-P")
        .arg(env.root.join("lxc"))
        .args(["-n", "810", "-p", "-H"])
        .output()
        .unwrap();
    assert_eq!(text(&info.stdout).trim(), pid.to_string());
    // Proxmox cgroup layout: lxc/<vmid>/ns
    let cg = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(cg.contains(":/lxc/810/ns\n"), "{cg}");
    // host uid of the CT's root
    assert_eq!(fs::metadata(format!("/proc/{pid}")).unwrap().uid(), 100_000);

    let o = env.pct(&["exec", "810", "--", "echo", "hi"]);
    assert_eq!(
        (o.status.code(), text(&o.stdout)),
        (Some(0), "hi\n".to_string())
    );
    let o = env.pct(&["exec", "810", "--", "sh", "-c", "echo err >&2; exit 3"]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(text(&o.stderr), "err\n");
    assert_eq!(
        env.pct(&["exec", "810", "--", "sh", "-c", "kill -9 $$"])
            .status
            .code(),
        Some(137)
    );
    assert_eq!(
        env.pct(&["exec", "810", "--", "/nonexistent"])
            .status
            .code(),
        Some(127)
    );
    assert_eq!(
        env.pct(&["exec", "810", "--", "/etc/passwd"]).status.code(),
        Some(126)
    );
    // stdin EOF is delivered through pipes
    let mut c = env.cmd(PCT, &["exec", "810", "--", "cat"]);
    c.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        let mut si = child.stdin.take().unwrap();
        si.write_all(b"piped\n").unwrap();
    }
    let o = child.wait_with_output().unwrap();
    assert_eq!(text(&o.stdout), "piped\n");

    let list = env.pct_ok(&["list"]);
    assert_eq!(
        list,
        "VMID       Status     Lock         Name                \n810        running                 life                \n"
    );
    let o = env.pct(&["destroy", "810"]);
    assert_eq!(
        text(&o.stderr),
        "unable to destroy CT 810 - container is running\n"
    );

    env.pct_ok(&["stop", "810"]);
    assert_eq!(env.pct_ok(&["status", "810"]), "status: stopped\n");
    let o = env.pct(&["exec", "810", "--", "true"]);
    assert_eq!(text(&o.stderr), "container '810' not running!\n");
    let o = env.pct(&["stop", "810"]);
    assert_eq!(text(&o.stderr), "CT 810 not running\n");
    env.pct_ok(&["destroy", "810", "--purge"]);
    assert!(!env.root.join("etc/pve/nodes/pve/lxc/810.conf").exists());
    assert!(env.dir_is_empty("storage/local-lvm"), "volume left behind");
    assert!(env.dir_is_empty("lxc"), "lxc dir left behind");
    assert_eq!(env.pct_ok(&["list"]), "");

    // every invocation is logged
    let calls = fs::read_to_string(env.root.join("calls.log")).unwrap();
    assert!(calls.lines().count() >= 20);
    assert!(calls
        .lines()
        .any(|l| l.contains("[\"pct\",\"exec\",\"810\",\"--\",\"echo\",\"hi\"]")));
}

#[test]
fn unprivileged_entrypoint_from_bind_mount() {
    if !needs_lxc() {
        return;
    }
    let env = Env::new("mp", &[811]);
    let host = env.root.join("hostdir");
    fs::create_dir(&host).unwrap();
    fs::set_permissions(&host, fs::Permissions::from_mode(0o777)).unwrap();
    fs::write(
        host.join("init"),
        "#!/bin/sh\nid -u > /.pvelxc/out.tmp\necho \"$GREETING\" >> /.pvelxc/out.tmp\nmv /.pvelxc/out.tmp /.pvelxc/out\n",
    )
    .unwrap();
    fs::set_permissions(host.join("init"), fs::Permissions::from_mode(0o755)).unwrap();
    let mp0 = format!("{},mp=/.pvelxc", host.display());
    env.pct_ok(&[
        "create",
        "811",
        "local:vztmpl/busybox.tar",
        "--rootfs",
        "local-lvm:0.5",
        "--ostype",
        "unmanaged",
        "--mp0",
        &mp0,
        "--entrypoint",
        "/.pvelxc/init",
        "--env",
        "GREETING=hello",
    ]);
    let lxc_conf_before = env.root.join("lxc/811/config");
    assert!(!lxc_conf_before.exists());
    env.pct_ok(&["start", "811"]);
    let out = host.join("out");
    assert!(
        wait_for(&out, Duration::from_secs(10)),
        "entrypoint did not write its file"
    );
    assert_eq!(fs::read_to_string(&out).unwrap(), "0\nhello\n");
    assert_eq!(
        fs::metadata(&out).unwrap().uid(),
        100_000,
        "CT root must be uid 100000 on the host"
    );
    let cfg = fs::read_to_string(&lxc_conf_before).unwrap();
    assert!(cfg.contains("lxc.idmap = u 0 100000 65536\n"), "{cfg}");
    assert!(cfg.contains("lxc.init.cmd = /.pvelxc/init\n"));
    // the entrypoint exited, so the CT stops by itself
    let t = Instant::now();
    while env.pct_ok(&["status", "811"]) != "status: stopped\n" {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "CT did not stop after its init exited"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    env.pct_ok(&["destroy", "811"]);
    assert!(env.dir_is_empty("storage/local-lvm"));
    assert!(
        host.join("init").exists(),
        "bind-mounted host dir must survive destroy"
    );
}

#[test]
fn faults_and_errors() {
    if !needs_lxc() {
        return;
    }
    let env = Env::new("faults", &[812]);
    fs::write(env.root.join("faults"), "create-exists 812\n").unwrap();
    let args = [
        "create",
        "812",
        "local:vztmpl/busybox.tar",
        "--rootfs",
        "local-lvm:1",
    ];
    let o = env.pct(&args);
    assert_eq!(o.status.code(), Some(255));
    assert_eq!(
        text(&o.stderr),
        "unable to create CT 812 - CT 812 already exists on node 'pve'\n"
    );
    assert!(!env.root.join("etc/pve/nodes/pve/lxc/812.conf").exists());
    env.pct_ok(&args);

    let t = Instant::now();
    let o = env
        .cmd(PCT, &["set", "812", "--memory", "64"])
        .env("PVE_DOUBLE_FAULTS", "lock-timeout 812 50")
        .output()
        .unwrap();
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_eq!(o.status.code(), Some(255));
    let lock = env.root.join("lock/pve-config-812.lock");
    assert!(text(&o.stderr).ends_with(&format!(
        "can't lock file '{}' - got timeout\n",
        lock.display()
    )));

    let o = env
        .cmd(PCT, &["start", "812"])
        .env(
            "PVE_DOUBLE_FAULTS",
            "fail start:812 startup for container '812' failed",
        )
        .output()
        .unwrap();
    assert_eq!(
        (o.status.code(), text(&o.stderr)),
        (Some(255), "startup for container '812' failed\n".into())
    );

    env.pct_ok(&["set", "812", "--lock", "backup"]);
    assert_eq!(
        text(&env.pct(&["start", "812"]).stderr),
        "CT is locked (backup)\n"
    );
    assert!(env
        .pct_ok(&["list"])
        .contains("812        stopped    backup       CT812"));
    env.pct_ok(&["unlock", "812"]);
    let o = env.pct(&["set", "812", "--net0", "name=eth0,bridge=nosuchbr0"]);
    assert!(o.status.success());
    let o = env.pct(&["start", "812"]);
    assert!(
        text(&o.stderr).ends_with("startup for container '812' failed\n"),
        "{}",
        text(&o.stderr)
    );
    assert!(text(&o.stderr).contains("bridge 'nosuchbr0' does not exist"));
    let o = env.pct(&["bogus"]);
    assert_eq!(
        text(&o.stderr),
        "ERROR: unknown command 'pct bogus'\nUSAGE: pct <COMMAND> [ARGS] [OPTIONS]\n"
    );
    assert_eq!(
        text(
            &env.cmd(PVESH, &["get", "/cluster/nextid"])
                .output()
                .unwrap()
                .stdout
        ),
        "100\n"
    );
    env.pct_ok(&["destroy", "812"]);
}
