//! The CT cgroup code against a fixture tree shaped like a Proxmox VE 9 host (cgroup v2 only,
//! CT `lxc/<vmid>`, processes in `lxc/<vmid>/ns`): see crate::sys::cgroup::fixture. The kernel's
//! part (cgroup.events after a freeze) is played by a helper thread; everything else is the
//! production code reading and writing the fixture's files.

use std::time::{Duration, Instant};

use super::*;
use crate::sys::cgroup::fixture::Host;

const VMID: u32 = 300001;
const INIT: u32 = 41001;
const CT: &str = "sys/fs/cgroup/lxc/300001";
const NS: &str = "sys/fs/cgroup/lxc/300001/ns";

fn pve9() -> (Host, Cgroup) {
    let h = Host::pve9(VMID, INIT, &[41002, 41010, 41011, 41020, 41021]);
    let cg = Cgroup::of_pid_at(h.root(), INIT).expect("parse");
    (h, cg)
}

/// The kernel's side of a v2 freeze: once `cgroup.freeze` of `dir` holds `want`, wait `delay`
/// (the freeze "takes time") and report `frozen <want>` in cgroup.events. Returns when it wrote.
fn kernel(
    h: &Host,
    dir: &str,
    want: &'static str,
    delay: Duration,
) -> std::thread::JoinHandle<Instant> {
    let freeze = h.root().join(dir).join("cgroup.freeze");
    let events = h.root().join(dir).join("cgroup.events");
    std::thread::spawn(move || {
        let t0 = Instant::now();
        while std::fs::read_to_string(&freeze)
            .expect("read freeze")
            .trim()
            != want
        {
            assert!(t0.elapsed() < Duration::from_secs(10), "never asked");
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(delay);
        let at = Instant::now();
        std::fs::write(&events, format!("populated 1\nfrozen {want}\n")).expect("events");
        at
    })
}

#[test]
fn freeze_writes_the_ct_level_and_waits_for_frozen() {
    let (h, cg) = pve9();
    let ct = CtCgroup::of(&cg);
    let k = kernel(&h, CT, "1", Duration::from_millis(150));
    ct.freeze().expect("freeze");
    let done = Instant::now();
    let reported = k.join().expect("kernel thread");
    assert!(
        done >= reported,
        "freeze returned before the kernel said frozen"
    );
    assert_eq!(h.read(&format!("{CT}/cgroup.freeze")), "1");
    // ns is frozen through its parent; its own file is never written.
    assert_eq!(h.read(&format!("{NS}/cgroup.freeze")), "0\n");

    let k = kernel(&h, CT, "0", Duration::from_millis(150));
    ct.thaw().expect("thaw");
    let done = Instant::now();
    assert!(
        done >= k.join().expect("kernel thread"),
        "thaw returned early"
    );
    assert_eq!(h.read(&format!("{CT}/cgroup.freeze")), "0");
    assert_eq!(h.read(&format!("{NS}/cgroup.freeze")), "0\n");
}

#[test]
fn a_freeze_the_kernel_never_completes_fails_and_is_undone() {
    let (h, cg) = pve9();
    let ct = CtCgroup::of(&cg);
    let t0 = Instant::now();
    let e = ct
        .set_frozen(true, Duration::from_millis(200))
        .expect_err("no kernel: never frozen");
    assert!(matches!(e, Error::DeadlineExceeded(_)), "{e:?}");
    assert!(e.to_string().contains("lxc/300001"), "{e}");
    assert!(t0.elapsed() >= Duration::from_millis(200));
    assert_eq!(h.read(&format!("{CT}/cgroup.freeze")), "0", "thawed again");
}

#[test]
fn pids_are_the_ns_subtree() {
    let (_h, cg) = pve9();
    let pids = CtCgroup::of(&cg).pids().expect("pids");
    // ns itself, system.slice/console-getty.service and user.slice/user-0.slice; not the
    // monitor (lxc.monitor/<vmid>) nor the next CT (lxc/<vmid+1>).
    assert_eq!(pids, [41001, 41002, 41010, 41011, 41020, 41021]);
}

#[test]
fn pids_are_bounded() {
    let (h, cg) = pve9();
    let ct = CtCgroup::of(&cg);
    // The fixture's CT has 6 cgroups (lxc/<vmid>, ns, 2 slices, 2 below them).
    assert_eq!(ct.pids_within(6).expect("6 cgroups").len(), 6);
    let e = ct.pids_within(5).expect_err("6 > 5");
    assert!(e.to_string().contains("more than 5 cgroups below"), "{e}");
    // A guest that made a wider cgroup tree than the bound: the walk stops with an error
    // (production bound: MAX_CGROUPS).
    let wide = h.root().join(NS).join("wide");
    for i in 0..20 {
        std::fs::create_dir_all(wide.join(i.to_string())).expect("mkdir");
    }
    let e = ct.pids_within(20).expect_err("too many cgroups");
    assert!(e.to_string().contains("more than 20 cgroups below"), "{e}");
}

#[test]
fn ct_level_is_found_when_the_guest_moved_its_init() {
    let (h, _) = pve9();
    // The guest (root in the CT owns ns) put PID 1 into cgroups of its own, one named `ns`.
    for rel in ["ns/init.scope", "ns/ns", "ns/ns/deeper"] {
        h.proc_cgroup(INIT, &format!("0::/lxc/300001/{rel}\n"));
        let cg = Cgroup::of_pid_at(h.root(), INIT).expect("parse");
        assert_eq!(ct_level_cgroup(&cg), Cgroup::V2(h.root().join(CT)), "{rel}");
        assert_eq!(
            CtCgroup::of(&cg).freeze,
            Some((h.root().join(CT), false)),
            "{rel}"
        );
    }
}

#[test]
fn stats_read_the_ct_level() {
    let (h, cg) = pve9();
    assert_eq!(cg, Cgroup::V2(h.root().join(NS)));
    let crate::sys::cgroup::Metrics::V2(m) = ct_level_cgroup(&cg).metrics() else {
        panic!("a v2 CT reads as v2");
    };
    // The fixture's CT-level values (ns has twice each, and no memory limit).
    assert_eq!(m.pids.current, 4);
    assert_eq!(m.memory.usage, 1000);
    assert_eq!(m.memory.usage_limit, 536870912);
    assert_eq!(m.cpu.usage_usec, 70);
    assert_eq!(m.memory_events.oom, 1);
    assert_eq!(m.io.first().map(|e| e.rbytes), Some(100));
}

#[test]
fn memory_limit_is_mirrored_from_the_ct_level_into_ns() {
    let (h, cg) = pve9();
    mirror_memory_limit(&cg).expect("mirror");
    assert_eq!(h.read(&format!("{NS}/memory.max")), "536870912");
    assert_eq!(h.read(&format!("{CT}/memory.max")), "536870912\n");
}

#[test]
fn v1_freeze_writes_the_ct_level_freezer() {
    let h = Host::new();
    h.write("sys/fs/cgroup/freezer/lxc/300001/freezer.state", "THAWED\n");
    h.write(
        "sys/fs/cgroup/freezer/lxc/300001/ns/freezer.state",
        "THAWED\n",
    );
    h.proc_cgroup(
        INIT,
        "6:freezer:/lxc/300001/ns\n4:memory:/lxc/300001/ns\n0::/\n",
    );
    let cg = Cgroup::of_pid_at(h.root(), INIT).expect("parse");
    let ct = CtCgroup::of(&cg);
    // A plain file reads back what was written: this checks where, not the kernel's FREEZING.
    ct.freeze().expect("freeze");
    assert_eq!(
        h.read("sys/fs/cgroup/freezer/lxc/300001/freezer.state"),
        "FROZEN"
    );
    assert_eq!(
        h.read("sys/fs/cgroup/freezer/lxc/300001/ns/freezer.state"),
        "THAWED\n"
    );
}
