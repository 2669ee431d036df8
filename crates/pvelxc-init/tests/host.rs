//! The init and exec modes run directly on the host (not as a namespace PID 1):
//! PVELXC_DIR points the init at a temp dir. Fast protocol-level checks; the real
//! LXC runs are in tests/lxc.rs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::undocumented_unsafe_blocks
)] // a test crate: panics carry the context

mod common;
use common::*;
use pvelxc_init::proto::{ExitRecord, Msg};
use std::fs::File;
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_pvelxc-init");

fn spawn_init(dir: &std::path::Path) -> Child {
    Command::new(BIN)
        .env("PVELXC_DIR", dir)
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_child(c: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = c.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            panic!("init did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn pipes_start_exit_code() {
    let d = tempdir("host-pipes");
    std::fs::write(
        d.join("process.json"),
        process_json(
            &[
                "sh",
                "-c",
                "read x; echo hello $x \"$FOO\"; echo oops >&2; exit 3",
            ],
            false,
        ),
    )
    .unwrap();
    let shim = Shim::listen(&d, None, 0o600);
    let mut init = spawn_init(&d);
    let mut c = shim.accept(T);
    let (hello, _) = c.recv(T);
    assert!(
        matches!(
            hello,
            Msg::Hello {
                terminal: false,
                version: 1,
                started: None,
                ..
            }
        ),
        "{hello:?}"
    );
    let (in_r, mut in_w) = std::io::pipe().unwrap();
    let (mut out_r, out_w) = std::io::pipe().unwrap();
    let (mut err_r, err_w) = std::io::pipe().unwrap();
    c.send(
        &Msg::Stdio {
            stdin: true,
            stdout: true,
            stderr: true,
        },
        &[in_r.as_fd(), out_w.as_fd(), err_w.as_fd()],
    );
    drop((in_r, out_w, err_w));
    // Nothing runs before Start.
    std::thread::sleep(Duration::from_millis(100));
    assert!(!d.join("rw").join("exit").exists());
    c.send(&Msg::Start, &[]);
    let (started, _) = c.recv(T);
    let Msg::Started { pid } = started else {
        panic!("{started:?}")
    };
    use std::io::Write;
    in_w.write_all(b"world\n").unwrap();
    drop(in_w);
    let out = read_all(&mut out_r, T);
    let err = read_all(&mut err_r, T);
    assert_eq!(out, "hello world bar baz\n");
    assert_eq!(err, "oops\n");
    let (exited, _) = c.recv(T);
    match exited {
        Msg::Exited {
            pid: p,
            exit_code,
            signal,
            ..
        } => {
            assert_eq!((p, exit_code, signal), (pid, 3, None));
        }
        other => panic!("{other:?}"),
    }
    let rec = ExitRecord::from_json(&std::fs::read(d.join("rw").join("exit")).unwrap()).unwrap();
    assert_eq!((rec.exit_code, rec.signal, rec.pid), (3, None, pid));
    assert_eq!(wait_child(&mut init, T).code(), Some(3));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn signal_forwarding_and_default_stdio() {
    let d = tempdir("host-sig");
    std::fs::write(
        d.join("process.json"),
        process_json(
            &[
                "sh",
                "-c",
                &format!(
                    "trap 'exit 42' USR1; : > {}/ready; while :; do sleep 0.05; done",
                    d.display()
                ),
            ],
            false,
        ),
    )
    .unwrap();
    let shim = Shim::listen(&d, None, 0o600);
    let mut init = spawn_init(&d);
    let mut c = shim.accept(T);
    let _ = c.recv(T);
    // No Stdio message: /dev/null for all three.
    c.send(&Msg::Start, &[]);
    let (started, _) = c.recv(T);
    let Msg::Started { pid } = started else {
        panic!("{started:?}")
    };
    assert!(wait_file(&d.join("ready"), T).is_some());
    // A signal sent to the init itself is forwarded to the process.
    unsafe { libc::kill(init.id() as i32, libc::SIGUSR1) };
    let (exited, _) = c.recv(T);
    assert!(
        matches!(exited, Msg::Exited { exit_code: 42, signal: None, pid: p, .. } if p == pid),
        "{exited:?}"
    );
    assert_eq!(wait_child(&mut init, T).code(), Some(42));

    // Signal message → killed → 128+sig.
    std::fs::remove_file(d.join("rw").join("exit")).unwrap();
    std::fs::write(
        d.join("process.json"),
        process_json(&["sleep", "100"], false),
    )
    .unwrap();
    let mut init = spawn_init(&d);
    let mut c = shim.accept(T);
    let _ = c.recv(T);
    c.send(&Msg::Start, &[]);
    let _ = c.recv(T);
    c.send(
        &Msg::Signal {
            signo: 9,
            all: true,
        },
        &[],
    );
    let (exited, _) = c.recv(T);
    assert!(
        matches!(
            exited,
            Msg::Exited {
                exit_code: 137,
                signal: Some(9),
                ..
            }
        ),
        "{exited:?}"
    );
    wait_child(&mut init, T);
    let rec = ExitRecord::from_json(&std::fs::read(d.join("rw").join("exit")).unwrap()).unwrap();
    assert_eq!((rec.exit_code, rec.signal), (137, Some(9)));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn signal_before_start_and_exec_failures() {
    let d = tempdir("host-pre");
    std::fs::write(d.join("process.json"), process_json(&["/bin/true"], false)).unwrap();
    let shim = Shim::listen(&d, None, 0o600);
    let mut init = spawn_init(&d);
    let mut c = shim.accept(T);
    let _ = c.recv(T);
    c.send(
        &Msg::Signal {
            signo: 15,
            all: false,
        },
        &[],
    );
    let (exited, _) = c.recv(T);
    assert!(
        matches!(
            exited,
            Msg::Exited {
                exit_code: 143,
                signal: Some(15),
                pid: 0,
                ..
            }
        ),
        "{exited:?}"
    );
    wait_child(&mut init, T);

    // Missing command → 127, message on the process' stderr.
    for (args, code, msg) in [
        (vec!["no-such-cmd"], 127, "executable file not found"),
        (vec!["/nonexistent/x"], 127, "No such file"),
        (vec!["/etc/passwd"], 126, "Permission denied"),
    ] {
        let _ = std::fs::remove_file(d.join("rw").join("exit"));
        std::fs::write(d.join("process.json"), process_json(&args, false)).unwrap();
        let mut init = spawn_init(&d);
        let mut c = shim.accept(T);
        let _ = c.recv(T);
        let (mut err_r, err_w) = std::io::pipe().unwrap();
        c.send(
            &Msg::Stdio {
                stdin: false,
                stdout: false,
                stderr: true,
            },
            &[err_w.as_fd()],
        );
        drop(err_w);
        c.send(&Msg::Start, &[]);
        let _ = c.recv(T);
        let (exited, _) = c.recv(T);
        assert!(
            matches!(exited, Msg::Exited { exit_code: c2, .. } if c2 == code),
            "{args:?} {exited:?}"
        );
        let e = read_all(&mut err_r, T);
        assert!(e.contains(msg), "{args:?}: {e}");
        wait_child(&mut init, T);
    }

    // Bad process.json: exit file with an error, Error + Exited(255).
    let _ = std::fs::remove_file(d.join("rw").join("exit"));
    std::fs::write(d.join("process.json"), "{\"args\": []}").unwrap();
    let mut init = spawn_init(&d);
    let mut c = shim.accept(T);
    let (m, _) = c.recv(T);
    assert!(matches!(m, Msg::Error { .. }), "{m:?}");
    let (m, _) = c.recv(T);
    assert!(matches!(m, Msg::Exited { exit_code: 255, .. }), "{m:?}");
    wait_child(&mut init, T);
    let rec = ExitRecord::from_json(&std::fs::read(d.join("rw").join("exit")).unwrap()).unwrap();
    assert!(rec.error.unwrap().contains("args"));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn reconnects_after_shim_restart() {
    let d = tempdir("host-reconnect");
    std::fs::write(
        d.join("process.json"),
        process_json(
            &[
                "sh",
                "-c",
                "trap 'exit 7' TERM; while :; do sleep 0.05; done",
            ],
            false,
        ),
    )
    .unwrap();
    let shim = Shim::listen(&d, None, 0o600);
    let mut init = spawn_init(&d);
    let mut c = shim.accept(T);
    let _ = c.recv(T);
    c.send(&Msg::Start, &[]);
    let (started, _) = c.recv(T);
    let Msg::Started { pid } = started else {
        panic!()
    };
    // The shim "crashes": connection and listener go away, then come back.
    drop(c);
    drop(shim);
    std::thread::sleep(Duration::from_millis(300));
    let shim = Shim::listen(&d, None, 0o600);
    let mut c = shim.accept(Duration::from_secs(5));
    let (hello, _) = c.recv(T);
    assert!(
        matches!(hello, Msg::Hello { started: Some(p), .. } if p == pid),
        "{hello:?}"
    );
    c.send(
        &Msg::Signal {
            signo: 15,
            all: false,
        },
        &[],
    );
    let (exited, _) = c.recv(T);
    assert!(
        matches!(exited, Msg::Exited { exit_code: 7, .. }),
        "{exited:?}"
    );
    wait_child(&mut init, T);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn terminal_mode() {
    let d = tempdir("host-tty");
    std::fs::write(
        d.join("process.json"),
        process_json(&["sh", "-c", "tty; stty size; exit 5"], true),
    )
    .unwrap();
    let shim = Shim::listen(&d, None, 0o600);
    let mut init = spawn_init(&d);
    let mut c = shim.accept(T);
    let (hello, _) = c.recv(T);
    assert!(matches!(hello, Msg::Hello { terminal: true, .. }));
    let (pty, mut fds) = c.recv(T);
    assert_eq!(pty, Msg::Pty);
    let mut master = File::from(fds.remove(0));
    c.send(&Msg::Start, &[]);
    let _ = c.recv(T);
    let out = read_until(&mut master, "100", T);
    assert!(out.contains("/dev/pts/"), "{out:?}");
    assert!(out.contains("30 100"), "{out:?}");
    let (exited, _) = c.recv(T);
    assert!(
        matches!(exited, Msg::Exited { exit_code: 5, .. }),
        "{exited:?}"
    );
    wait_child(&mut init, T);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn exec_mode_applies_process() {
    let d = tempdir("host-exec");
    let spec = serde_json::json!({
        "user": {"uid": 65534, "gid": 65534, "additionalGids": [100, 200], "umask": 0o27},
        "args": ["sh", "-c", "echo \"$(id -u):$(id -g):$(id -G):$(umask):$(ulimit -n):$(pwd):$FOO:$HOME\"; grep NoNewPrivs /proc/self/status; exit 9"],
        "env": ["PATH=/usr/bin:/bin", "FOO=x y"],
        "cwd": "/tmp",
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 200, "soft": 100}],
        "noNewPrivileges": true
    });
    let f = d.join("exec-1.json");
    std::fs::write(&f, spec.to_string()).unwrap();
    let out = Command::new(BIN)
        .arg("exec")
        .arg(&f)
        .env("HOME", "/should-not-leak")
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(9),
        "{s} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        s.starts_with("65534:65534:65534 100 200:0027:100:/tmp:x y:\n"),
        "{s}"
    );
    assert!(s.contains("NoNewPrivs:\t1"), "{s}");

    for (args, code) in [(vec!["nope-nope"], 127), (vec!["/etc/hostname"], 126)] {
        std::fs::write(&f, serde_json::json!({"args": args}).to_string()).unwrap();
        let out = Command::new(BIN).arg("exec").arg(&f).output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("pvelxc-init: exec"));
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// The `Cap*:` lines of /proc/self/status as the exec'd program sees them.
fn cap_lines(out: &[u8]) -> std::collections::HashMap<String, String> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| l.split_once(":\t"))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn busybox() -> Option<&'static str> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

/// busybox, or None after a skip (`skip::unavailable`, suite `root`: fails under CI).
fn host_prereqs() -> Option<&'static str> {
    if !skip::require(skip::is_root(), "root", &[], "needs root") {
        return None;
    }
    let bb = busybox();
    skip::require(
        bb.is_some(),
        "root",
        &[],
        "needs busybox (/bin/busybox or /usr/bin/busybox: apt-get install busybox-static)",
    );
    bb
}

const NBS: &str = "CAP_NET_BIND_SERVICE";
const NBS_MASK: &str = "0000000000000400"; // 1 << 10

#[test]
fn exec_mode_capabilities() {
    let Some(bb) = host_prereqs() else {
        return;
    };
    let d = tempdir("host-caps");
    let f = d.join("exec-caps.json");
    let run = |caps: serde_json::Value, uid: u32| {
        let mut spec = serde_json::json!({
            "user": {"uid": uid, "gid": uid},
            "args": [bb, "grep", "Cap", "/proc/self/status"],
            "env": ["PATH=/usr/bin:/bin"],
            "cwd": "/",
            "noNewPrivileges": true
        });
        if !caps.is_null() {
            spec["capabilities"] = caps;
        }
        std::fs::write(&f, spec.to_string()).unwrap();
        let out = Command::new(BIN).arg("exec").arg(&f).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        (out.status.code(), cap_lines(&out.stdout), err)
    };
    let all_nbs = serde_json::json!({
        "bounding": [NBS], "effective": [NBS], "permitted": [NBS],
        "inheritable": [NBS], "ambient": [NBS]
    });

    // uid 1000 with CAP_NET_BIND_SERVICE in every set: survives the uid switch and
    // the execve (ambient), even with no_new_privs.
    let (code, c, err) = run(all_nbs.clone(), 1000);
    assert_eq!(code, Some(0), "{err}");
    for k in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(c.get(k).map(String::as_str), Some(NBS_MASK), "{k}: {c:?}");
    }

    // Same without ambient: a non-root execve without file caps ends with nothing
    // but the inheritable set.
    let mut no_amb = all_nbs.clone();
    no_amb["ambient"] = serde_json::json!([]);
    let (code, c, err) = run(no_amb, 1000);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(c["CapEff"], "0000000000000000", "{c:?}");
    assert_eq!(c["CapPrm"], "0000000000000000", "{c:?}");
    assert_eq!(c["CapAmb"], "0000000000000000", "{c:?}");
    assert_eq!(c["CapInh"], NBS_MASK, "{c:?}");

    // No `capabilities` at all: today's behaviour (setuid clears every set, the
    // bounding set is untouched).
    let (code, c, err) = run(serde_json::Value::Null, 1000);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(c["CapEff"], "0000000000000000", "{c:?}");
    assert_eq!(c["CapAmb"], "0000000000000000", "{c:?}");
    assert_ne!(c["CapBnd"], NBS_MASK, "{c:?}");

    // uid 0: the bounding set limits what root gets back at execve.
    let root_caps = serde_json::json!({
        "bounding": ["CAP_KILL", NBS], "effective": ["CAP_KILL", NBS],
        "permitted": ["CAP_KILL", NBS]
    });
    let (code, c, err) = run(root_caps, 0);
    assert_eq!(code, Some(0), "{err}");
    for k in ["CapPrm", "CapEff", "CapBnd"] {
        assert_eq!(c[k], "0000000000000420", "{k}: {c:?}"); // 1<<5 | 1<<10
    }
    assert_eq!(c["CapAmb"], "0000000000000000", "{c:?}");

    // Every capability asked for (a `--privileged` spec): the ones this process does
    // not hold (here: not in its bounding set) are left out rather than failing.
    let all = pvelxc_init::caps::CAP_NAMES.to_vec();
    let every = serde_json::json!({
        "bounding": all, "effective": all, "permitted": all,
        "inheritable": all, "ambient": all
    });
    let own = cap_lines(&std::fs::read("/proc/self/status").unwrap());
    let own_bnd = u64::from_str_radix(&own["CapBnd"], 16).unwrap() & ((1u64 << 41) - 1);
    let (code, c, err) = run(every, 1000);
    assert_eq!(code, Some(0), "{err}");
    for k in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(c[k], format!("{own_bnd:016x}"), "{k}: {c:?}");
    }

    // Unknown name: clear error, 126, nothing exec'd.
    let (code, c, err) = run(serde_json::json!({"ambient": ["CAP_FLY"]}), 1000);
    assert_eq!(code, Some(126));
    assert!(c.is_empty(), "{c:?}");
    assert!(err.contains("unknown capability \"CAP_FLY\""), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn init_mode_capabilities() {
    let Some(bb) = host_prereqs() else {
        return;
    };
    let d = tempdir("host-init-caps");
    let spec = serde_json::json!({
        "user": {"uid": 1000, "gid": 1000},
        "args": [bb, "grep", "Cap", "/proc/self/status"],
        "env": ["PATH=/usr/bin:/bin"],
        "cwd": "/",
        "noNewPrivileges": true,
        "capabilities": {
            "bounding": [NBS], "effective": [NBS], "permitted": [NBS],
            "inheritable": [NBS], "ambient": [NBS]
        }
    });
    std::fs::write(d.join("process.json"), spec.to_string()).unwrap();
    let shim = Shim::listen(&d, None, 0o600);
    let mut init = spawn_init(&d);
    let mut c = shim.accept(T);
    let _hello = c.recv(T);
    let (mut out_r, out_w) = std::io::pipe().unwrap();
    let (mut err_r, err_w) = std::io::pipe().unwrap();
    c.send(
        &Msg::Stdio {
            stdin: false,
            stdout: true,
            stderr: true,
        },
        &[out_w.as_fd(), err_w.as_fd()],
    );
    drop((out_w, err_w));
    c.send(&Msg::Start, &[]);
    let out = read_all(&mut out_r, T);
    let err = read_all(&mut err_r, T);
    let caps = cap_lines(out.as_bytes());
    for k in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(
            caps.get(k).map(String::as_str),
            Some(NBS_MASK),
            "{k}: {out} {err}"
        );
    }
    assert_eq!(wait_child(&mut init, T).code(), Some(0), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}
