//! One test per OCI process field: a real child runs through `prepare` (before fork),
//! `apply` and `exec` (after fork, from this multi-threaded test process) and reports
//! what it got: `/proc/self/status` (Cap*, NoNewPrivs, Umask, Groups),
//! `/proc/self/oom_score_adj`, `ulimit`, `id`, `pwd`, `env`. Needs root and
//! /bin/busybox (busybox-static); skips loudly otherwise.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::undocumented_unsafe_blocks
)] // a test crate: panics carry the context

#[path = "../../../tests/common/skip.rs"]
mod skip;

use pvelxc_guest::caps::{Capabilities, CAP_NAMES};
use pvelxc_guest::{apply, exec, prepare, reset_signals, status, Process, Rlimit, User};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const BB: &str = "/bin/busybox";
const PATH: &str = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";

fn ready() -> bool {
    skip::require(
        skip::is_root(),
        "root",
        &[],
        "needs root (setuid, capabilities)",
    ) && skip::require(
        std::path::Path::new(BB).exists(),
        "root",
        &[],
        "needs /bin/busybox: apt-get install busybox-static",
    )
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 into a local array; both fds owned from here on.
    unsafe {
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    }
}

struct Ran {
    code: i32,
    out: String,
    err: String,
}

/// Fork; the child applies `p` and execs it with stdout/stderr on pipes.
fn run(p: &Process) -> Ran {
    let prepared = prepare(p).unwrap();
    let (out_r, out_w) = pipe();
    let (err_r, err_w) = pipe();
    // SAFETY: the child only makes async-signal-safe calls (dup2, apply, exec, _exit).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        // SAFETY: plain syscalls in the child; dup2 clears O_CLOEXEC on 1 and 2.
        unsafe {
            libc::dup2(out_w.as_raw_fd(), 1);
            libc::dup2(err_w.as_raw_fd(), 2);
            reset_signals();
            let code = match apply(&prepared) {
                Ok(()) => exec(&prepared, "fields"),
                Err(f) => {
                    f.report("fields");
                    126
                }
            };
            libc::_exit(code);
        }
    }
    drop((out_w, err_w));
    let mut out = String::new();
    std::fs::File::from(out_r).read_to_string(&mut out).unwrap();
    let mut err = String::new();
    std::fs::File::from(err_r).read_to_string(&mut err).unwrap();
    let mut st = 0;
    // SAFETY: waits for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut st, 0) }, pid);
    Ran {
        code: status::decode_wait_status(st).0,
        out,
        err,
    }
}

fn process(args: &[&str]) -> Process {
    Process {
        args: args.iter().map(|a| a.to_string()).collect(),
        env: vec![PATH.into()],
        cwd: "/".into(),
        ..Default::default()
    }
}

/// `name:\tvalue` of /proc/self/status as the exec'd program sees it.
fn status_of(p: &Process, key: &str) -> String {
    let mut p = p.clone();
    p.args = [BB, "cat", "/proc/self/status"].map(String::from).to_vec();
    let r = run(&p);
    assert_eq!(r.code, 0, "{}", r.err);
    r.out
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("{key} in {}", r.out))
        .trim()
        .to_string()
}

fn sh(p: &Process, script: &str) -> String {
    let mut p = p.clone();
    p.args = [BB, "sh", "-c", script].map(String::from).to_vec();
    let r = run(&p);
    assert_eq!(r.code, 0, "{script}: {}", r.err);
    r.out.trim().to_string()
}

#[test]
fn args_and_path_lookup() {
    if !ready() {
        return;
    }
    // args[0] without a slash: found on the spec's PATH; args passed as they are.
    let r = run(&process(&["busybox", "echo", "a b", "c"]));
    assert_eq!((r.code, r.out.as_str()), (0, "a b c\n"), "{}", r.err);
    for (args, code, msg) in [
        (
            vec!["no-such-cmd"],
            127,
            "executable file not found in $PATH",
        ),
        (vec!["/nonexistent/x"], 127, "No such file or directory"),
        (vec!["/etc/passwd"], 126, "Permission denied"),
    ] {
        let r = run(&process(&args));
        assert_eq!(r.code, code, "{args:?}: {}", r.err);
        assert!(r.err.contains(msg), "{args:?}: {}", r.err);
        assert!(r.err.starts_with("fields: exec: \""), "{}", r.err);
    }
}

#[test]
fn env_is_exactly_the_spec_env() {
    if !ready() {
        return;
    }
    let mut p = process(&[BB, "env"]);
    p.env.push("FOO=bar baz".into());
    let r = run(&p);
    assert_eq!(r.code, 0, "{}", r.err);
    let mut got: Vec<&str> = r.out.lines().collect();
    got.sort();
    assert_eq!(got, vec!["FOO=bar baz", PATH]);
}

#[test]
fn cwd() {
    if !ready() {
        return;
    }
    let mut p = process(&[BB, "pwd"]);
    p.cwd = "/tmp".into();
    assert_eq!(run(&p).out, "/tmp\n");
    p.cwd = "/no/such/dir".into();
    let r = run(&p);
    assert_eq!(r.code, 126);
    assert!(
        r.err.contains("chdir /no/such/dir: No such file"),
        "{}",
        r.err
    );
}

#[test]
fn user_uid_gid_additional_gids() {
    if !ready() {
        return;
    }
    let mut p = process(&[]);
    p.user = User {
        uid: 1000,
        gid: 1001,
        additional_gids: vec![5, 6],
        ..Default::default()
    };
    assert_eq!(sh(&p, "id -u; id -g"), "1000\n1001");
    let mut groups: Vec<String> = sh(&p, "id -G").split(' ').map(String::from).collect();
    groups.sort();
    assert_eq!(groups, vec!["1001", "5", "6"]);
    assert_eq!(status_of(&p, "Groups"), "5 6");
    assert_eq!(status_of(&p, "Uid"), "1000\t1000\t1000\t1000");
}

#[test]
fn umask() {
    if !ready() {
        return;
    }
    let mut p = process(&[]);
    p.user.umask = Some(0o027);
    assert_eq!(status_of(&p, "Umask"), "0027");
    assert_eq!(sh(&p, "umask"), "0027");
}

#[test]
fn no_new_privileges() {
    if !ready() {
        return;
    }
    let mut p = process(&[]);
    p.no_new_privileges = true;
    assert_eq!(status_of(&p, "NoNewPrivs"), "1");
    p.no_new_privileges = false;
    assert_eq!(status_of(&p, "NoNewPrivs"), "0");
}

#[test]
fn oom_score_adj() {
    if !ready() {
        return;
    }
    let mut p = process(&[BB, "cat", "/proc/self/oom_score_adj"]);
    p.oom_score_adj = Some(567);
    assert_eq!(run(&p).out, "567\n");
}

#[test]
fn rlimits() {
    if !ready() {
        return;
    }
    let mut p = process(&[]);
    p.rlimits = vec![Rlimit {
        kind: "RLIMIT_NOFILE".into(),
        hard: 456,
        soft: 123,
    }];
    assert_eq!(sh(&p, "ulimit -n; ulimit -Hn"), "123\n456");
    assert_eq!(status_of(&p, "Umask"), "0022"); // nothing else changed
}

const NBS: &str = "CAP_NET_BIND_SERVICE";

#[test]
fn capabilities_kept_across_the_uid_switch() {
    if !ready() {
        return;
    }
    let nbs = vec![NBS.to_string()];
    let mut p = process(&[]);
    p.user.uid = 1000;
    p.user.gid = 1000;
    p.capabilities = Some(Capabilities {
        bounding: nbs.clone(),
        effective: nbs.clone(),
        inheritable: nbs.clone(),
        permitted: nbs.clone(),
        ambient: nbs,
    });
    for k in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_of(&p, k), "0000000000000400", "{k}");
    }
    // Without `capabilities` a non-root uid has none.
    p.capabilities = None;
    assert_eq!(status_of(&p, "CapEff"), "0000000000000000");
}

#[test]
fn capabilities_of_root_clipped_to_the_spec() {
    if !ready() {
        return;
    }
    let mut p = process(&[]);
    p.capabilities = Some(Capabilities {
        bounding: vec!["CAP_KILL".into(), NBS.into()],
        effective: vec!["CAP_KILL".into()],
        permitted: vec!["CAP_KILL".into()],
        ..Default::default()
    });
    assert_eq!(status_of(&p, "CapBnd"), "0000000000000420");
    // execve as uid 0 gives back the whole bounding set (root's implicit file caps):
    // what the bounding set allows is what root keeps, as under runc.
    assert_eq!(status_of(&p, "CapPrm"), "0000000000000420");
    assert_eq!(status_of(&p, "CapEff"), "0000000000000420");
    // Every name is known to prepare; an unknown one is an error before fork.
    p.args = vec![BB.into()];
    let all: Vec<String> = CAP_NAMES.iter().map(|s| s.to_string()).collect();
    p.capabilities = Some(Capabilities {
        bounding: all,
        ..Default::default()
    });
    assert!(prepare(&p).is_ok());
    p.capabilities = Some(Capabilities {
        ambient: vec!["CAP_FLY".into()],
        ..Default::default()
    });
    assert!(prepare(&p).unwrap_err().contains("CAP_FLY"));
}
