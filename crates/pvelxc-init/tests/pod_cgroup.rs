//! `container` with a CgroupSpec on this host's cgroups (v1 memory and pids hierarchies
//! needed: a hybrid or v1 host; skipped loudly otherwise). The helper starts in test cgroups
//! made below the test's own memory and pids cgroups; the container's process must land in
//! `<test cgroup>/<name>` with the limits written, in every other hierarchy (v2 included) in
//! `<helper's cgroup>/<name>`, and the helper removes what it made once the process is gone.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::undocumented_unsafe_blocks
)] // a test crate: panics carry the context

mod common;
mod pod;

use common::{read_until, skip};
use pod::*;
use pvelxc_init::pod::CgroupSpec;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// (controllers, path) of each line of `/proc/<pid>/cgroup` (controllers "" = v2).
fn cgroups(pid: &str) -> Vec<(String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut it = l.splitn(3, ':');
            let _ = it.next();
            (
                it.next().unwrap().to_string(),
                it.next().unwrap().to_string(),
            )
        })
        .collect()
}

/// Where a cgroup is on this host: its hierarchy's mount (v1: with those controllers) + path.
fn dir_of(ctrls: &str, path: &str) -> Option<PathBuf> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    mi.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        let hit = if ctrls.is_empty() {
            post[0] == "cgroup2"
        } else {
            post[0] == "cgroup" && ctrls.split(',').all(|c| post[2].split(',').any(|o| o == c))
        };
        (hit && pre[3] == "/").then(|| Path::new(pre[4]).join(path.trim_start_matches('/')))
    })
}

fn has(ctrls: &str, c: &str) -> bool {
    ctrls.split(',').any(|x| x == c)
}

/// Kills the helper's family and removes the cgroups, also when an assertion failed.
struct Cleanup {
    helper: Option<Child>,
    dirs: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(h) = &mut self.helper {
            let _ = h.kill();
            let _ = h.wait();
        }
        for d in &self.dirs {
            // The container's process dies with the helper; give the kernel a moment.
            for _ in 0..200 {
                if !d.exists() || std::fs::remove_dir(d).is_ok() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

#[test]
fn container_cgroup_v1_hybrid() {
    if !prereqs() {
        return;
    }
    let v1 = ["memory", "pids", "cpu"]
        .iter()
        .all(|c| Path::new(&format!("/sys/fs/cgroup/{c}/cgroup.procs")).exists());
    if !skip::require(
        v1,
        "root",
        &[],
        "needs cgroup v1 memory, pids and cpu at /sys/fs/cgroup/<ctrl>",
    ) {
        return;
    }
    let t = Tmp::new("cgroup");
    let root = make_root(&t.0);
    let hosts = t.0.join("hosts");
    std::fs::write(&hosts, "").unwrap();
    let test_cg = format!("pvelxc-cgtest-{}", std::process::id());
    let name = format!("ctr-{}", std::process::id());
    // The helper: the test's cgroups, but <test cgroup> in memory and pids. The container:
    // <the helper's>/<name> in every hierarchy.
    let own = cgroups("self");
    let moved = |c: &str| has(c, "memory") || has(c, "pids");
    let helper_cgs: Vec<(String, String)> = own
        .iter()
        .map(|(c, p)| {
            let p = if moved(c) {
                format!("{}/{test_cg}", p.trim_end_matches('/'))
            } else {
                p.clone()
            };
            (c.clone(), p)
        })
        .collect();
    let expected: Vec<(String, String)> = helper_cgs
        .iter()
        .map(|(c, p)| (c.clone(), format!("{}/{name}", p.trim_end_matches('/'))))
        .collect();
    let dir = |ctrl: &str, cgs: &[(String, String)]| {
        let (c, p) = cgs.iter().find(|(c, _)| has(c, ctrl)).unwrap();
        dir_of(c, p).unwrap()
    };
    let (mem_test, pids_test) = (dir("memory", &helper_cgs), dir("pids", &helper_cgs));
    let made: Vec<PathBuf> = expected.iter().filter_map(|(c, p)| dir_of(c, p)).collect();
    let mut cleanup = Cleanup {
        helper: None,
        dirs: made
            .iter()
            .cloned()
            .chain([mem_test.clone(), pids_test.clone()])
            .collect(),
    };
    std::fs::create_dir(&mem_test).unwrap();
    std::fs::create_dir(&pids_test).unwrap();

    let mut s = spec(&root, &hosts, &["sh", "-c", "echo ready; sleep 50 & wait"]);
    s.cgroup = Some(CgroupSpec {
        name: name.clone(),
        memory_limit: Some(64 << 20),
        cpu_shares: Some(512),
        cpu_quota: Some(50_000),
        cpu_period: Some(100_000),
        pids_limit: Some(50),
    });
    let f = write_json(&t.0, "c.json", &s);
    // The helper starts in the test cgroups: opened here, joined between fork and exec.
    let procs: Vec<std::fs::File> = [&mem_test, &pids_test]
        .iter()
        .map(|d| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(d.join("cgroup.procs"))
                .unwrap()
        })
        .collect();
    let fds: Vec<i32> = procs.iter().map(|f| f.as_raw_fd()).collect();
    let mut cmd = Command::new(BIN);
    cmd.args(["container", f.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    unsafe {
        cmd.pre_exec(move || {
            for fd in &fds {
                if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let h = cleanup.helper.insert(cmd.spawn().unwrap());
    let hid = h.id();
    let mut so = h.stdout.take().unwrap();
    let got = read_until(&mut so, "ready", T);
    assert!(got.contains("ready"), "stdout {got:?}");
    let c = child_of(hid);
    assert_eq!(cgroups(&hid.to_string()), helper_cgs);
    assert_eq!(cgroups(&c.to_string()), expected);
    let cpu_dir = dir("cpu", &expected);
    let read = |p: PathBuf| std::fs::read_to_string(&p).unwrap().trim().to_string();
    assert_eq!(
        read(mem_test.join(&name).join("memory.limit_in_bytes")),
        "67108864"
    );
    assert_eq!(read(pids_test.join(&name).join("pids.max")), "50");
    assert_eq!(read(cpu_dir.join("cpu.shares")), "512");
    assert_eq!(read(cpu_dir.join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read(cpu_dir.join("cpu.cfs_period_us")), "100000");
    // pids.max holds: of 60 more processes, those beyond the limit are refused.
    let p = process(&[
        "sh",
        "-c",
        // (busybox sh gives up at the first fork refused.)
        "for i in $(seq 60); do sleep 5 >/dev/null 2>&1 & done",
    ]);
    std::os::unix::fs::symlink("busybox", root.join("bin/seq")).unwrap();
    let pf = write_json(&t.0, "p.json", &p);
    let out = run(&["exec-in", &c.to_string(), pf.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("can't fork"), "{err}");
    let current: u32 = read(pids_test.join(&name).join("pids.current"))
        .parse()
        .unwrap();
    assert!((40..=50).contains(&current), "pids.current {current}");
    let events = read(pids_test.join(&name).join("pids.events"));
    let hits: u32 = events.strip_prefix("max ").unwrap().parse().unwrap();
    assert!(hits > 0, "pids.events: {events}");

    // The container's end: the helper relays 137 and removes the cgroups it made.
    kill(c, libc::SIGKILL);
    let h = cleanup.helper.as_mut().unwrap();
    assert_eq!(wait_exit(h, T).code(), Some(137));
    assert!(made.len() >= 4, "{made:?}");
    for d in &made {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}
