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
mod scenarios;

use common::pve::*;
use common::*;
use scenarios::{Backend, Expect};
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

impl Backend for Pve {
    fn env(&self) -> &TestEnv {
        Pve::env(self)
    }
    fn env_mut(&mut self) -> &mut TestEnv {
        Pve::env_mut(self)
    }
    fn expect(&self) -> &Expect {
        &scenarios::PCT
    }
    /// The CT has a VMID of the range, an unmanaged unprivileged config naming the container,
    /// and `pct list` shows it.
    fn check_running(&self, id: &str) {
        let vmid = vmid_of(self, id);
        assert!(
            (self.lo..=self.hi).contains(&vmid),
            "VMID {vmid} outside the range"
        );
        let conf = stdout(&self.pct(&["config", &vmid.to_string()]));
        assert!(
            conf.contains("ostype: unmanaged") && conf.contains("unprivileged: 1"),
            "{conf}"
        );
        assert!(
            conf.contains(&format!("container id%3A {id}")) && conf.contains("tags: "),
            "{conf}"
        );
        assert!(
            self.list().contains(&vmid),
            "pct list must show the CT while it runs"
        );
        // What `assert_gone` looks for is there while the CT exists.
        let confs = ct_configs_naming(self, id);
        assert_eq!(confs.len(), 1, "one CT config naming {id}: {confs:?}");
    }
    /// No CT config naming the container `id` left in the cluster tree (read from the double's
    /// files, not through `pct`: the double's call log stays the shim's alone).
    fn assert_gone(&self, id: &str) {
        wait_until(&format!("the CT of {id} to be destroyed"), T, || {
            ct_configs_naming(self, id).is_empty().then_some(())
        });
    }
    fn assert_clean(&self) {
        Pve::assert_clean(self);
    }
}

/// The pct subcommands of the calls log from entry `from` on.
fn pct_subcommands(p: &Pve, from: usize) -> Vec<String> {
    p.calls()
        .into_iter()
        .skip(from)
        .filter(|c| c.first().map(String::as_str) == Some("pct"))
        .filter_map(|c| c.get(1).cloned())
        .collect()
}

/// CT configs (any node) whose description names the container `id`.
fn ct_configs_naming(p: &Pve, id: &str) -> Vec<PathBuf> {
    let needle = format!("container id%3A {id}");
    let nodes = fs::read_dir(p.root.join("etc/pve/nodes"))
        .into_iter()
        .flatten()
        .flatten();
    nodes
        .flat_map(|n| {
            fs::read_dir(n.path().join("lxc"))
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|e| e.path())
        .filter(|c| {
            let text = fs::read_to_string(c).unwrap_or_default();
            text.match_indices(&needle).any(|(i, _)| {
                !text[i + needle.len()..]
                    .starts_with(|ch: char| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
            })
        })
        .collect()
}

// ------------------------------------------------------------------------------------------
// Shared scenarios (tests/scenarios/), each in its own VMID range
// ------------------------------------------------------------------------------------------

/// The shared rootfs/image/`--null-io` runs, and content-keyed templates: reused across runs of
/// the same content (never re-packed), distinct for different bytes under identical metadata.
#[test]
fn run_rootfs_image_null_io_and_template_reuse() {
    let p = Pve::new(300_000, 300_019);
    let env = p.env();
    scenarios::run::run_rootfs_stdio_exit_code(&p, "r1");
    // The first container of an image makes its template CT (create + template) once.
    assert_eq!(
        pct_subcommands(&p, 0),
        ["create", "template", "clone", "set", "start", "destroy"],
        "{:?}",
        p.calls()
    );
    let before = p.calls().len();

    scenarios::run::run_image_stdio_exit_code(&p, "img1");
    // Every later one: at most 4 pct calls per run->exit->delete, no pvesh.
    assert_eq!(
        pct_subcommands(&p, before),
        ["clone", "set", "start", "destroy"],
        "{:?}",
        p.calls()
    );
    assert_eq!(p.calls().len() - before, 4, "{:?}", p.calls());
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

    scenarios::run::null_io(&p, "img2", "nullio");
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

    // r1, img1, img2, nullio, img3: one template (CT); m1, m2: one each. Every container
    // is a linked clone.
    let creates: Vec<String> = p
        .calls()
        .into_iter()
        .filter(|c| c.get(1).map(String::as_str) == Some("create"))
        .filter_map(|c| c.get(3).cloned())
        .collect();
    assert_eq!(creates.len(), 3, "{creates:?}");
    assert!(
        creates[1] != creates[0] && creates[2] != creates[1] && creates[2] != creates[0],
        "different content, different templates: {creates:?}"
    );
    assert_eq!(
        pct_subcommands(&p, 0)
            .iter()
            .filter(|c| *c == "clone")
            .count(),
        7
    );
    assert_eq!(p.templates().len(), 3, "{:?}", p.templates());
    scenarios::finish(&p);
}

#[test]
fn detached_exec_ps_pause_resume_metrics_kill_and_pct_list() {
    scenarios::task::detached_exec_ps_pause_resume_metrics_kill(&Pve::new(300_020, 300_039));
}

/// The shared TERM trap; then an admin's `pct shutdown` (= SIGTERM to the process) and
/// `pct stop` (kills the CT: 137).
#[test]
fn term_trap_and_admin_stop_shutdown() {
    let p = Pve::new(300_040, 300_059);
    let env = p.env();
    scenarios::run::term_trap_exit_code(&p);

    let run = scenarios::run::spawn_term_trap(&p, "trap2");
    let v = vmid_of(&p, "trap2").to_string();
    let o = p.pct(&["shutdown", &v, "--timeout", "20"]);
    assert!(o.status.success(), "{}", describe(&o));
    let out = run.finish(T);
    assert_eq!(exit_code(&out), 7, "pct shutdown\n{}", describe(&out));

    env.run_rootfs_detached("stopme", &[], &["/bin/sleep", "1000"]);
    let v = vmid_of(&p, "stopme").to_string();
    let o = p.pct(&["stop", &v]);
    assert!(o.status.success(), "{}", describe(&o));
    env.wait_task_status("stopme", "STOPPED", T);
    assert_eq!(env.task_rm_exit_code("stopme"), 137);
    env.ctr_ok(&["containers", "rm", "stopme"]);
    scenarios::finish(&p);
}

#[test]
fn tty_run_exec_and_resize() {
    scenarios::tty::tty_run_exec_and_resize(&Pve::new(300_060, 300_079));
}

#[test]
fn events_in_order() {
    scenarios::task::events_in_order(&Pve::new(300_080, 300_099));
}

#[test]
fn shim_sigkill_then_rm_destroys_the_ct() {
    scenarios::recovery::shim_sigkill_then_rm_cleans_up(&Pve::new(300_220, 300_239));
}

/// `kill --all` reaches every process of the CT (the init signals all of them), exec'd ones
/// included; with SIGTERM the container's own process dies of it (143).
#[test]
fn kill_all_reaches_every_process_of_the_ct() {
    scenarios::task::kill_all_reaches_every_process(&Pve::new(300_460, 300_499));
}

/// `--cpu-shares` becomes the CT's `cpuunits`, and so its CPU weight (cgroup v2: `cpu.weight`
/// of `lxc/<vmid>`, converted like runc; v1: `cpu.shares`).
#[test]
fn cpu_shares_become_cpu_weight() {
    scenarios::task::cpu_shares_become_cpu_weight(&Pve::new(300_580, 300_599));
}

/// A CT process over its memory limit is OOM-killed: exit 137 and a TaskOOM event.
#[test]
fn oom_event_and_exit_137() {
    scenarios::run::oom_event_and_exit_137(&Pve::new(300_500, 300_539));
}

/// containerd restarts while a CT keeps running and another CT's process exits meanwhile:
/// both are reported correctly afterwards (RUNNING; STOPPED with its own exit code).
#[test]
fn containerd_restart_with_an_exit_while_down() {
    scenarios::recovery::containerd_restart_with_an_exit_while_down(&mut Pve::new(
        300_540, 300_579,
    ));
}

// ------------------------------------------------------------------------------------------
// pct only: no config, VMIDs, faults, bridge network
// ------------------------------------------------------------------------------------------

#[test]
fn no_config_annotation_run_and_pod_rules() {
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

    // A pod sandbox is a CT of its own (its pod's); a pod container whose sandbox this shim
    // does not run is refused, naming the sandbox.
    let out = env.run_rootfs(
        "podsb",
        &[
            "--annotation",
            "io.pvelxc.backend=pct",
            "--annotation",
            "io.kubernetes.cri.container-type=sandbox",
        ],
        &["/bin/sh", "-c", "exit 4"],
    );
    assert_eq!(out.status.code(), Some(4), "{}", describe(&out));
    let out = env.run_rootfs(
        "podc",
        &[
            "--annotation",
            "io.pvelxc.backend=pct",
            "--annotation",
            "io.kubernetes.cri.container-type=container",
            "--annotation",
            "io.kubernetes.cri.sandbox-id=nope",
        ],
        &["/bin/true"],
    );
    assert!(
        !out.status.success(),
        "a pod container without its sandbox must fail\n{}",
        describe(&out)
    );
    let e = stderr(&out);
    assert!(
        e.contains("pct") && e.contains("sandbox nope"),
        "{}",
        describe(&out)
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

/// `containerd-shim-pvelxc-v2 gc --all` inside the test's host shape.
fn shim_gc_all(p: &Pve) -> std::process::Output {
    let mut c = p.shaped(shim_dir().join(SHIM_BINARY).as_os_str(), &["gc", "--all"]);
    c.env("PVELXC_CONFIG", p.root.join("pvelxc.toml"));
    let mut path = pct_bin().parent().expect("pct dir").as_os_str().to_owned();
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    c.env("PATH", path);
    run_cmd(c, None, T)
}

/// lvmthin (the default storage): an image becomes one template CT; its containers are linked
/// clones that write (almost) no rootfs data at create; the template is kept while a clone
/// exists and garbage-collected once unused; a failed `pct template` leaves nothing.
#[test]
fn linked_clones_write_no_rootfs_and_keep_their_template() {
    let p = Pve::new(300_300, 300_319);
    let env = p.env();
    let out = env.run_rootfs("lc1", &[], &["/bin/sh", "-c", "echo one"]);
    assert_eq!(stdout(&out), "one\n", "{}", describe(&out));
    let before = p.calls().len();
    let out = env.run_rootfs("lc2", &[], &["/bin/sh", "-c", "echo two > /t; cat /t"]);
    assert_eq!(stdout(&out), "two\n", "{}", describe(&out));
    assert_eq!(
        pct_subcommands(&p, before),
        ["clone", "set", "start", "destroy"]
    );
    let tpls = p.templates();
    assert_eq!(tpls.len(), 1, "one template CT: {tpls:?}");
    let writes = p.rootfs_writes();
    eprintln!("rootfs bytes written: {writes:?}");
    let created: Vec<u64> = writes
        .iter()
        .filter(|w| w.0 == "create")
        .map(|w| w.2)
        .collect();
    let cloned: Vec<u64> = writes
        .iter()
        .filter(|w| w.0 == "clone")
        .map(|w| w.2)
        .collect();
    assert_eq!(created.len(), 1, "{writes:?}");
    assert!(
        created[0] > 1 << 20,
        "the template holds the image: {writes:?}"
    );
    assert_eq!(cloned.len(), 2, "{writes:?}");
    assert!(
        cloned.iter().all(|b| *b < 1 << 20),
        "a clone writes under 1 MB of rootfs data: {writes:?}"
    );
    // The clone's writes stayed its own: a third container does not see /t.
    let out = env.run_rootfs(
        "lc3",
        &[],
        &["/bin/sh", "-c", "test -e /t && echo seen || echo fresh"],
    );
    assert_eq!(stdout(&out), "fresh\n", "{}", describe(&out));

    // A running clone keeps its template through `gc --all`; it is tagged as its clone.
    let rootfs = env.rootfs().display().to_string();
    env.ctr_ok(&[
        "run",
        "-d",
        "--null-io",
        "--runtime",
        &runtime(),
        "--env",
        CONTAINER_PATH,
        "--rootfs",
        &rootfs,
        "lc4",
        "/bin/sleep",
        "3600",
    ]);
    env.wait_task_status("lc4", "RUNNING", T);
    let v = vmid_of(&p, "lc4");
    let conf = stdout(&p.pct(&["config", &v.to_string()]));
    assert!(conf.contains(&format!("pvelxc-tpl-{}", tpls[0])), "{conf}");
    let gc = shim_gc_all(&p);
    assert!(gc.status.success(), "{}", describe(&gc));
    assert!(stdout(&gc).contains("1 in use kept"), "{}", describe(&gc));
    assert_eq!(
        p.templates(),
        tpls,
        "gc kept the template in use\n{}",
        describe(&gc)
    );
    env.ctr_ok(&["task", "rm", "-f", "lc4"]);
    env.ctr_ok(&["containers", "rm", "lc4"]);
    p.assert_clean();
    let gc = shim_gc_all(&p);
    assert!(gc.status.success(), "{}", describe(&gc));
    assert!(
        stdout(&gc).contains(&format!("removed template CT {}", tpls[0])),
        "{}",
        describe(&gc)
    );
    assert!(p.templates().is_empty() && p.all_cts().is_empty());

    // `pct template` fails: the half-made template CT is destroyed, nothing is left.
    fs::write(
        p.root.join("faults"),
        "fail template no base volume today\n",
    )
    .expect("faults");
    let out = env.run_rootfs("lc5", &[], &["/bin/true"]);
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(
        stderr(&out).contains("no base volume today"),
        "{}",
        describe(&out)
    );
    let _ = env.ctr(&["containers", "rm", "lc5"]);
    fs::write(p.root.join("faults"), "").expect("faults");
    assert!(p.all_cts().is_empty(), "{:?}", p.all_cts());
    // ... and the next create makes the template.
    let out = env.run_rootfs("lc6", &[], &["/bin/sh", "-c", "echo six"]);
    assert_eq!(stdout(&out), "six\n", "{}", describe(&out));
    assert_eq!(p.templates().len(), 1);
    scenarios::finish(&p);
}

/// A dir storage cannot make linked clones: every container is extracted (create, start,
/// destroy), no template CT is made.
#[test]
fn dir_storage_falls_back_to_extraction() {
    let p = Pve::with(300_320, 300_339, "storage = \"ctdir\"\n", true);
    let env = p.env();
    let cfg = p.root.join("etc/pve/storage.cfg");
    // The shape wrote the install's storage.cfg; add a dir storage for CTs.
    let _ = p.pct(&["list"]);
    let mut text = fs::read_to_string(&cfg).expect("storage.cfg");
    text.push_str("\ndir: ctdir\n\tpath /var/lib/ctdir\n\tcontent rootdir\n");
    fs::write(&cfg, text).expect("storage.cfg");
    let before = p.calls().len();
    for id in ["d1", "d2"] {
        let out = env.run_rootfs(id, &[], &["/bin/sh", "-c", "echo dir"]);
        assert_eq!(stdout(&out), "dir\n", "{}", describe(&out));
    }
    assert_eq!(
        pct_subcommands(&p, before),
        ["create", "start", "destroy", "create", "start", "destroy"]
    );
    assert!(p.templates().is_empty());
    let creates = p.rootfs_writes().iter().filter(|w| w.0 == "create").count();
    assert_eq!(creates, 2);
    scenarios::finish(&p);
}
