//! `pvelxc-init container` (the built binary) run as root on the host, which plays the CT: a
//! busybox root, the runc default mounts, namespaces, signals, exit statuses, the terminal.
//! `exec-in`, `unpack` and `remove`: tests/pod_files.rs; cgroups: tests/pod_cgroup.rs.
//! Needs root and busybox-static (skipped loudly otherwise).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::undocumented_unsafe_blocks
)] // a test crate: panics carry the context

mod common;
mod pod;

use common::read_until;
use pod::*;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

#[test]
fn container_mounts_namespaces_and_exit_code() {
    if !prereqs() {
        return;
    }
    let t = Tmp::new("basic");
    let root = make_root(&t.0);
    let hosts = t.0.join("hosts");
    std::fs::write(&hosts, "10.0.0.1 pod-host\n").unwrap();
    let script = "echo pid=$$; cat /etc/hosts; echo secret=$(cat /etc/secret); \
        echo procs=$(ls /proc | grep -v '[^0-9]'); \
        if echo x >> /etc/hosts; then echo hosts=rw; else echo hosts=ro; fi; \
        if echo x > /proc/sys/kernel/hostname; then echo procsys=rw; else echo procsys=ro; fi; \
        echo kcore=$(cat /proc/kcore | wc -c); echo dev=$(ls /dev); echo pts=$(ls /dev/pts); \
        echo null > /dev/null && echo devnull=ok; echo host=$(hostname); exit 7";
    let s = spec(&root, &hosts, &["sh", "-c", script]);
    let mut s2 = s.clone();
    s2.process.args = vec![
        "sh".into(),
        "-c".into(),
        "echo uid=$(id -u):$(id -g)".into(),
    ];
    s2.process.user.uid = 1000;
    s2.process.user.gid = 1001;
    let f = write_json(&t.0, "c.json", &s);
    let out = run(&["container", f.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(7), "stderr: {err}");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let l = lines(&out.stdout);
    assert_eq!(
        l,
        [
            "pid=1",
            "10.0.0.1 pod-host",
            "secret=",
            // sh, the $(...) subshell and ls: nothing of the host.
            &l[3].clone(),
            "hosts=ro",
            "procsys=ro",
            "kcore=0",
            "dev=fd full mqueue null ptmx pts random stderr stdin stdout tty urandom zero",
            "pts=ptmx",
            "devnull=ok",
            &format!("host={}", host.trim()),
        ],
        "stderr: {err}"
    );
    let procs: Vec<u32> = l[3]
        .strip_prefix("procs=")
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(procs.contains(&1) && procs.len() <= 4, "{procs:?}");
    assert!(procs.iter().all(|p| *p < 10), "{procs:?}");
    assert!(err.contains("/etc/hosts: Read-only file system"), "{err}");
    // The hosts file itself is untouched, nothing stays mounted on the host.
    assert_eq!(
        std::fs::read_to_string(&hosts).unwrap(),
        "10.0.0.1 pod-host\n"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(t.0.to_str().unwrap()), "{mounts}");

    let f2 = write_json(&t.0, "c2.json", &s2);
    let out = run(&["container", f2.to_str().unwrap()]);
    assert_eq!(lines(&out.stdout), ["uid=1000:1001"]);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn container_exit_statuses_and_setup_errors() {
    if !prereqs() {
        return;
    }
    let t = Tmp::new("status");
    let root = make_root(&t.0);
    let hosts = t.0.join("hosts");
    std::fs::write(&hosts, "").unwrap();
    let code = |args: &[&str], f: &dyn Fn(&mut pvelxc_init::pod::ContainerSpec)| {
        let mut s = spec(&root, &hosts, args);
        f(&mut s);
        let p = write_json(&t.0, "s.json", &s);
        let out = run(&["container", p.to_str().unwrap()]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(code(&["sh", "-c", "exit 0"], &|_| {}).0, Some(0));
    let (c, e) = code(&["nonexistent"], &|_| {});
    assert_eq!(c, Some(127), "{e}");
    assert!(e.contains("executable file not found"), "{e}");
    // A shared pid namespace: the shell is not pid 1.
    let (c, e) = code(&["sh", "-c", "test $$ != 1 && exit 3"], &|s| {
        s.new_pid_ns = false
    });
    assert_eq!(c, Some(3), "{e}");
    // A missing bind source: exit 126 and one line saying what.
    let (c, e) = code(&["true"], &|s| {
        s.mounts.push(mount(
            "/x",
            pvelxc_init::pod::MountKind::Bind {
                source: "/nonexistent-source".into(),
            },
            &[],
        ))
    });
    assert_eq!(c, Some(126));
    assert_eq!(
        e,
        "pvelxc-init: container: mount /x (bind): source /nonexistent-source: \
         No such file or directory (os error 2)\n"
    );
    // Read-only root: an existing mountpoint still works, a missing one cannot be made.
    let (c, e) = code(&["sh", "-c", "touch /new 2>/dev/null || exit 9"], &|s| {
        s.readonly_root = true
    });
    assert_eq!(c, Some(9), "{e}");
    let bad = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!bad.contains(t.0.to_str().unwrap()));
    let out = run(&["container", "/nonexistent.json"]);
    assert_eq!(out.status.code(), Some(126));
    let out = run(&["container"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage:"));
}

#[test]
fn container_signals() {
    if !prereqs() {
        return;
    }
    let t = Tmp::new("signals");
    let root = make_root(&t.0);
    let hosts = t.0.join("hosts");
    std::fs::write(&hosts, "").unwrap();

    // SIGTERM to the helper reaches the container's trap.
    let s = spec(
        &root,
        &hosts,
        &[
            "sh",
            "-c",
            "trap 'echo got-term; exit 42' TERM; echo ready; sleep 30 & wait",
        ],
    );
    let f = write_json(&t.0, "term.json", &s);
    let mut h = spawn(&["container", f.to_str().unwrap()]);
    let mut so = h.stdout.take().unwrap();
    assert!(read_until(&mut so, "ready", T).contains("ready"));
    kill(h.id(), libc::SIGTERM);
    let st = wait_exit(&mut h, T);
    assert_eq!(st.code(), Some(42));
    assert!(read_until(&mut so, "got-term", T).contains("got-term"));

    // SIGKILL of the container's process: 137.
    let s = spec(&root, &hosts, &["sleep", "47"]);
    let f = write_json(&t.0, "kill.json", &s);
    let mut h = spawn(&["container", f.to_str().unwrap()]);
    let c = child_of(h.id());
    // Wait until it is the container's sleep (exec done), then kill it from the host.
    let deadline = std::time::Instant::now() + T;
    while std::fs::read(format!("/proc/{c}/cmdline")).unwrap_or_default() != b"sleep\x0047\x00" {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    kill(c, libc::SIGKILL);
    assert_eq!(wait_exit(&mut h, T).code(), Some(137));

    // SIGKILL of the helper takes the container's process with it (own or shared pid ns).
    for new_pid_ns in [true, false] {
        let mut s = spec(&root, &hosts, &["sh", "-c", "echo ready; sleep 48 & wait"]);
        s.new_pid_ns = new_pid_ns;
        let f = write_json(&t.0, "orphan.json", &s);
        let mut h = spawn(&["container", f.to_str().unwrap()]);
        let mut so = h.stdout.take().unwrap();
        assert!(read_until(&mut so, "ready", T).contains("ready"));
        let c = child_of(h.id());
        let sleeper = child_of(c);
        let (_, start) = stat(c).unwrap();
        let (_, sleeper_start) = stat(sleeper).unwrap();
        kill(h.id(), libc::SIGKILL);
        assert_eq!(wait_exit(&mut h, T).signal(), Some(libc::SIGKILL));
        assert!(gone(c, start), "container process {c} outlived its helper");
        if new_pid_ns {
            // The namespace ends with its pid 1.
            assert!(
                gone(sleeper, sleeper_start),
                "its sleep {sleeper} outlived it"
            );
        } else {
            // Shared pid namespace: its descendants outlive it (nothing kills a cgroup yet).
            assert_eq!(stat(sleeper).map(|s| s.1), Some(sleeper_start));
            kill(sleeper, libc::SIGKILL);
        }
    }
}

/// stdin a terminal that is the helper's controlling terminal (as `pct exec -t` makes it):
/// the container's shell gets it as its own.
#[test]
fn container_takes_the_terminal() {
    if !prereqs() {
        return;
    }
    let t = Tmp::new("tty");
    let root = make_root(&t.0);
    let hosts = t.0.join("hosts");
    std::fs::write(&hosts, "").unwrap();
    let s = spec(
        &root,
        &hosts,
        &[
            "sh",
            "-c",
            "read a b c d e sid tty rest < /proc/$$/stat; echo \"sid=$sid tty=$tty\"",
        ],
    );
    let f = write_json(&t.0, "tty.json", &s);
    let (master, slave) = openpty();
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["container", f.to_str().unwrap()]);
    let io = || unsafe { std::process::Stdio::from_raw_fd(libc::dup(slave.as_raw_fd())) };
    cmd.stdin(io()).stdout(io()).stderr(io());
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut h = cmd.spawn().unwrap();
    drop(slave);
    let mut m = std::fs::File::from(master);
    let out = read_until(&mut m, "tty=", T);
    let out = out + &read_until(&mut m, "\n", Duration::from_secs(2));
    let st = wait_exit(&mut h, T);
    assert_eq!(st.code(), Some(0), "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("sid="))
        .unwrap()
        .trim()
        .to_string();
    let tty: i64 = line.split("tty=").nth(1).unwrap().parse().unwrap();
    assert!(
        line.starts_with("sid=1 "),
        "its own session, as pid 1: {line}"
    );
    assert_ne!(tty, 0, "a controlling terminal: {line}");
}
