//! The init and exec modes run directly on the host (not as a namespace PID 1):
//! PVELXC_DIR points the init at a temp dir. Fast protocol-level checks; the real
//! LXC runs are in tests/lxc.rs.

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
    assert!(!d.join("exit").exists());
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
    let rec = ExitRecord::from_json(&std::fs::read(d.join("exit")).unwrap()).unwrap();
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
    std::fs::remove_file(d.join("exit")).unwrap();
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
    let rec = ExitRecord::from_json(&std::fs::read(d.join("exit")).unwrap()).unwrap();
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
        let _ = std::fs::remove_file(d.join("exit"));
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
    let _ = std::fs::remove_file(d.join("exit"));
    std::fs::write(d.join("process.json"), "{\"args\": []}").unwrap();
    let mut init = spawn_init(&d);
    let mut c = shim.accept(T);
    let (m, _) = c.recv(T);
    assert!(matches!(m, Msg::Error { .. }), "{m:?}");
    let (m, _) = c.recv(T);
    assert!(matches!(m, Msg::Exited { exit_code: 255, .. }), "{m:?}");
    wait_child(&mut init, T);
    let rec = ExitRecord::from_json(&std::fs::read(d.join("exit")).unwrap()).unwrap();
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
