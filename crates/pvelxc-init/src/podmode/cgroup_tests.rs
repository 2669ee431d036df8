use super::*;
use crate::podmode::cglimits::cpu_weight;

const HYBRID: &str = "10:hugetlb:/\n9:name=systemd:/user.slice\n8:pids:/\n\
4:memory:/process_api/c19\n2:cpu,cpuacct:/a/b\n0::/init.scope\n";

const MOUNTINFO: &str = "\
25 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 25 0:23 / /sys/fs/cgroup rw,relatime shared:8 - tmpfs tmpfs rw,mode=755
27 26 0:24 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
28 26 0:25 / /sys/fs/cgroup/systemd rw,relatime shared:10 - cgroup cgroup rw,xattr,name=systemd
29 26 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:11 - cgroup cgroup rw,cpu,cpuacct
30 26 0:27 / /sys/fs/cgroup/memory rw,relatime shared:12 - cgroup cgroup rw,memory
31 26 0:28 /lxc/100 /sys/fs/cgroup/pids rw,relatime shared:13 - cgroup cgroup rw,pids
32 26 0:29 / /mnt/with\\040space rw - cgroup cgroup rw,hugetlb
";

fn spec() -> CgroupSpec {
    CgroupSpec {
        name: "c1".into(),
        memory_limit: Some(64 << 20),
        cpu_shares: Some(512),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        pids_limit: Some(50),
    }
}

#[test]
fn proc_cgroup_lines() {
    let h = parse_proc_cgroup(HYBRID);
    assert_eq!(h.len(), 6);
    assert_eq!(h[4].controllers, ["cpu", "cpuacct"]);
    assert_eq!(h[4].path, "/a/b");
    assert_eq!(h[1].controllers, ["name=systemd"]);
    assert!(h[5].v2() && h[5].path == "/init.scope");
    assert!(!h[0].v2());
}

#[test]
fn dirs_from_mountinfo() {
    let m = parse_mountinfo(MOUNTINFO);
    assert_eq!(m.len(), 8);
    assert_eq!(m[7].mountpoint, "/mnt/with space");
    let h = parse_proc_cgroup(HYBRID);
    let dir = |i: usize| hierarchy_dir(&h[i], &m).map(|p| p.display().to_string());
    assert_eq!(dir(0).as_deref(), Some("/mnt/with space/"));
    assert_eq!(dir(1).as_deref(), Some("/sys/fs/cgroup/systemd/user.slice"));
    assert_eq!(
        dir(3).as_deref(),
        Some("/sys/fs/cgroup/memory/process_api/c19")
    );
    assert_eq!(dir(4).as_deref(), Some("/sys/fs/cgroup/cpu,cpuacct/a/b"));
    assert_eq!(dir(5).as_deref(), Some("/sys/fs/cgroup/unified/init.scope"));
    // pids is mounted from /lxc/100: "/" lies outside it, "/lxc/100/x" inside.
    assert_eq!(dir(2), None);
    let inside = Hierarchy {
        id: 8,
        controllers: vec!["pids".into()],
        path: "/lxc/100/x".into(),
    };
    assert_eq!(
        hierarchy_dir(&inside, &m).unwrap(),
        Path::new("/sys/fs/cgroup/pids/x")
    );
    let other = Hierarchy {
        path: "/lxc/1000".into(),
        ..inside
    };
    assert_eq!(hierarchy_dir(&other, &m), None);
    let blkio = Hierarchy {
        id: 7,
        controllers: vec!["blkio".into()],
        path: "/".into(),
    };
    assert_eq!(hierarchy_dir(&blkio, &m), None);
}

#[test]
fn weights_and_writes() {
    // runc's conversion: 2 → 1, 1024 → 39, 262144 → 10000.
    assert_eq!(cpu_weight(2), 1);
    assert_eq!(cpu_weight(1024), 39);
    assert_eq!(cpu_weight(262_144), 10_000);
    assert_eq!(cpu_weight(1), 1);
    let s = spec();
    let v1 = |c: &[&str]| {
        let c: Vec<String> = c.iter().map(|x| x.to_string()).collect();
        limit_writes(false, &c, &s)
            .into_iter()
            .map(|(_, f, v, _)| (f, v))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        v1(&["memory"]),
        [("memory.limit_in_bytes", "67108864".to_string())]
    );
    assert_eq!(
        v1(&["cpu", "cpuacct"]),
        [
            ("cpu.shares", "512".to_string()),
            ("cpu.cfs_period_us", "100000".to_string()),
            ("cpu.cfs_quota_us", "50000".to_string())
        ]
    );
    assert!(v1(&["name=systemd"]).is_empty());
    let all: Vec<String> = ["cpu", "memory", "pids"].map(String::from).to_vec();
    let v2: Vec<(&str, String)> = limit_writes(true, &all, &s)
        .into_iter()
        .map(|(_, f, v, _)| (f, v))
        .collect();
    assert_eq!(
        v2,
        [
            ("memory.max", "67108864".to_string()),
            ("cpu.weight", "20".to_string()),
            ("cpu.max", "50000 100000".to_string()),
            ("pids.max", "50".to_string())
        ]
    );
    let unlimited = CgroupSpec {
        memory_limit: Some(-1),
        cpu_shares: None,
        cpu_quota: Some(-1),
        cpu_period: None,
        pids_limit: Some(-1),
        ..spec()
    };
    let v2: Vec<String> = limit_writes(true, &all, &unlimited)
        .into_iter()
        .map(|(_, f, v, _)| format!("{f}={v}"))
        .collect();
    assert_eq!(v2, ["memory.max=max", "cpu.max=max 100000", "pids.max=max"]);
    assert_eq!(requested(&unlimited).len(), 3);
}

/// cgroup v2 on a fake tree (plain files): controllers enabled in the parent, the limits in
/// the child, its cgroup.procs opened; a limit no hierarchy takes is an error.
#[test]
fn v2_on_a_fake_tree() {
    let base = std::env::temp_dir().join(format!("pvelxc-cg-ut-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let parent = base.join("ct");
    let child = parent.join("c1");
    std::fs::create_dir_all(&child).unwrap();
    std::fs::write(
        parent.join("cgroup.controllers"),
        "cpuset cpu memory pids\n",
    )
    .unwrap();
    std::fs::write(parent.join("cgroup.subtree_control"), "").unwrap();
    for f in [
        "memory.max",
        "cpu.weight",
        "cpu.max",
        "pids.max",
        "cgroup.procs",
    ] {
        std::fs::write(child.join(f), "").unwrap();
    }
    let hiers = parse_proc_cgroup("0::/ct\n");
    let mounts = vec![MountEntry {
        root: "/".into(),
        mountpoint: base.display().to_string(),
        fstype: "cgroup2".into(),
        super_opts: vec!["rw".into()],
    }];
    let mut c = Container::default();
    create_in(&spec(), &hiers, &mounts, &mut c).unwrap();
    let read = |f: &str| std::fs::read_to_string(child.join(f)).unwrap();
    assert_eq!(read("memory.max"), "67108864");
    assert_eq!(read("cpu.weight"), "20");
    assert_eq!(read("cpu.max"), "50000 100000");
    assert_eq!(read("pids.max"), "50");
    // One "+ctrl" write per controller; a plain file keeps the last.
    assert_eq!(
        std::fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap(),
        "+pids"
    );
    assert_eq!(c.procs.0.len(), 1);
    assert!(c.created.is_empty(), "c1 existed: not ours to remove");

    // The parent offers no memory controller: the memory limit cannot be applied.
    std::fs::write(parent.join("cgroup.controllers"), "cpu pids\n").unwrap();
    let mut c = Container::default();
    let e = create_in(&spec(), &hiers, &mounts, &mut c).unwrap_err();
    assert_eq!(
        e,
        "cgroup: memory limit requested but no writable hierarchy has its controller"
    );
    std::fs::remove_dir_all(&base).unwrap();
}
