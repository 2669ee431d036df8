use std::time::Duration;

use super::fixture::{memory_events, Host};
use super::*;

const VMID: u32 = 300001;
const INIT: u32 = 41001;

fn sys() -> PathBuf {
    PathBuf::from("/sys/fs/cgroup")
}

#[test]
fn parses_hybrid_and_unified() {
    let text =
        "12:memory:/default/c1\n4:cpu,cpuacct:/default/c1\n1:name=systemd:/x\n0::/default/c1\n";
    match Cgroup::parse(text, false, &sys()) {
        Cgroup::V1(m) => {
            assert_eq!(
                m["memory"],
                PathBuf::from("/sys/fs/cgroup/memory/default/c1")
            );
            assert_eq!(
                m["cpuacct"],
                PathBuf::from("/sys/fs/cgroup/cpuacct/default/c1")
            );
            assert_eq!(m["systemd"], PathBuf::from("/sys/fs/cgroup/systemd/x"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        Cgroup::parse("0::/lxc/101/ns\n", true, &sys()),
        Cgroup::V2(PathBuf::from("/sys/fs/cgroup/lxc/101/ns"))
    );
}

/// The CI machines' shape: cgroup v1 hybrid (tmpfs at /sys/fs/cgroup, no cgroup.controllers
/// there, a `unified` v2 mount), /proc/<pid>/cgroup with one line per v1 hierarchy and `0::/`.
#[test]
fn v1_hybrid_host_parses_per_controller() {
    let h = Host::new();
    h.write("sys/fs/cgroup/unified/cgroup.controllers", "");
    h.proc_cgroup(
        7,
        "10:hugetlb:/\n9:name=systemd:/\n8:pids:/\n7:blkio:/\n6:freezer:/\n5:devices:/\n\
         4:memory:/process_api/88f47b384debcf84dea293841febae39\n3:cpuset:/\n2:cpuacct:/\n\
         1:cpu:/\n0::/\n",
    );
    let cg = Cgroup::of_pid_at(h.root(), 7).expect("parse");
    let Cgroup::V1(m) = cg else {
        panic!("a hybrid host is v1: {cg:?}")
    };
    let mut keys: Vec<&str> = m.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "hugetlb", "memory", "pids",
            "systemd"
        ]
    );
    assert_eq!(
        m["memory"],
        h.cg()
            .join("memory/process_api/88f47b384debcf84dea293841febae39")
    );
    assert_eq!(m["pids"], h.cg().join("pids"));
    assert_eq!(m["systemd"], h.cg().join("systemd"));
}

/// This machine, whatever it is: the parse names directories that exist.
#[test]
fn own_cgroup_dirs_exist() {
    match Cgroup::of_pid(std::process::id()).expect("cgroup") {
        Cgroup::V2(p) => {
            assert!(is_unified());
            assert!(p.join("cgroup.procs").is_file(), "{}", p.display());
        }
        Cgroup::V1(m) => {
            assert!(!is_unified());
            let mem = m.get("memory").expect("a memory hierarchy");
            assert!(mem.join("cgroup.procs").is_file(), "{}", mem.display());
        }
    }
}

#[test]
fn own_metrics_have_memory() {
    let cg = Cgroup::of_pid(std::process::id()).expect("cgroup");
    match cg.metrics() {
        Metrics::V1(m) => assert!(m.memory.is_some_and(|m| m.usage.usage > 0)),
        Metrics::V2(m) => assert!(m.memory.usage > 0),
    }
}

#[test]
fn pve9_init_is_in_the_ns_cgroup() {
    let h = Host::pve9(VMID, INIT, &[]);
    assert_eq!(
        Cgroup::of_pid_at(h.root(), INIT).expect("parse"),
        Cgroup::V2(h.cg().join("lxc/300001/ns"))
    );
    // No such process: an error naming the file, not a guess.
    let e = Cgroup::of_pid_at(h.root(), INIT + 1).expect_err("no process");
    assert!(e.to_string().contains("proc/41002/cgroup"), "{e}");
}

#[test]
fn paths_from_another_cgroup_namespace_are_not_resolved() {
    let h = Host::pve9(VMID, INIT, &[]);
    h.proc_cgroup(INIT, "0::/../../lxc/300001/ns\n");
    assert_eq!(
        Cgroup::of_pid_at(h.root(), INIT).expect("parse"),
        Cgroup::V1(HashMap::new())
    );
}

fn decode_v2(cg: &Cgroup) -> types::V2Metrics {
    match cg.metrics() {
        Metrics::V2(m) => *m,
        Metrics::V1(_) => panic!("a v2 cgroup reads as v2"),
    }
}

#[test]
fn v2_metrics_read_every_file_of_the_dir() {
    let h = Host::pve9(VMID, INIT, &[]);
    let m = decode_v2(&Cgroup::V2(h.cg().join("lxc/300001")));
    assert_eq!((m.pids.current, m.pids.limit), (4, u64::MAX));
    assert_eq!(
        (m.cpu.usage_usec, m.cpu.user_usec, m.cpu.system_usec),
        (70, 50, 20)
    );
    assert_eq!(
        (m.memory.usage, m.memory.usage_limit, m.memory.max_usage),
        (1000, 536870912, 3000)
    );
    assert_eq!((m.memory.anon, m.memory.file), (500, 400));
    assert_eq!(m.memory.swap_limit, u64::MAX);
    assert_eq!(
        (
            m.memory_events.max,
            m.memory_events.oom,
            m.memory_events.oom_kill
        ),
        (5, 1, 1)
    );
    let io: Vec<_> =
        m.io.iter()
            .map(|e| (e.major, e.minor, e.rbytes, e.wbytes, e.rios, e.wios))
            .collect();
    assert_eq!(io, [(8, 0, 100, 200, 3, 4), (253, 2, 5, 6, 7, 8)]);
}

async fn next(rx: &mut mpsc::UnboundedReceiver<()>, within: Duration) -> Option<Option<()>> {
    tokio::time::timeout(within, rx.recv()).await.ok()
}

/// The kernel bumps memory.events' counters in place and signals a modification; the test plays
/// that part (same-length in-place writes on a plain file, which inotify reports as IN_MODIFY).
#[tokio::test]
async fn v2_oom_kill_increments_are_oom_events() {
    let h = Host::pve9(VMID, INIT, &[]);
    let events = "sys/fs/cgroup/lxc/300001/ns/memory.events";
    let cg = Cgroup::of_pid_at(h.root(), INIT).expect("parse");
    let mut rx = cg.watch_oom().expect("watch");
    let long = Duration::from_secs(5);
    let short = Duration::from_millis(300);

    // What was counted before the watch began is not an event.
    assert_eq!(next(&mut rx, short).await, None, "no event before a change");

    // One kill: exactly one event.
    h.rewrite(events, &memory_events(0, 1, 2));
    assert_eq!(next(&mut rx, long).await, Some(Some(())), "the kill");
    assert_eq!(next(&mut rx, short).await, None, "exactly one event");

    // A change of another counter: none.
    h.rewrite(events, &memory_events(7, 1, 2));
    assert_eq!(next(&mut rx, short).await, None, "max is no OOM kill");

    // Two kills seen at once: two events.
    h.rewrite(events, &memory_events(7, 2, 4));
    assert_eq!(next(&mut rx, long).await, Some(Some(())), "kill 1 of 2");
    assert_eq!(next(&mut rx, long).await, Some(Some(())), "kill 2 of 2");
    assert_eq!(next(&mut rx, short).await, None, "exactly two events");

    // The cgroup goes away (the CT stopped): the stream ends.
    std::fs::remove_file(h.root().join(events)).expect("rm");
    assert_eq!(next(&mut rx, long).await, Some(None), "stream closed");
}

/// Each OOM kill is reported once, whether the watcher or the flush at exit sees it first.
#[test]
fn oom_flush_reports_each_kill_once() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("memory.oom_control");
    let count = |n: u64| {
        std::fs::write(
            &file,
            format!("oom_kill_disable 0\nunder_oom 0\noom_kill {n}\n"),
        )
        .expect("write")
    };
    let drain =
        |rx: &mut mpsc::UnboundedReceiver<()>| std::iter::from_fn(|| rx.try_recv().ok()).count();

    // v1, the watcher first: its notification came before the count; the flush adds nothing.
    count(4);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let f = OomFlush::new(file.clone(), tx);
    assert!(f.notified());
    count(5);
    f.flush();
    assert_eq!(drain(&mut rx), 1);

    // v1, the exit first (the notification still queued): the flush reports it, the late
    // notification is dropped.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let f = OomFlush::new(file.clone(), tx);
    count(7);
    f.flush();
    assert!(!f.notified());
    assert_eq!(drain(&mut rx), 2);

    // v2: the counter's increase, by the watcher or the flush, once.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let f = OomFlush::new(file.clone(), tx);
    count(8);
    assert!(f.report());
    count(9);
    f.flush();
    assert!(f.report());
    assert_eq!(drain(&mut rx), 2);
}
