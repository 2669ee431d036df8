//! End to end on real LXC (no Proxmox): the static init is a CT's `lxc.init.cmd`,
//! the shim's directory is bind-mounted at /.pvelxc, and this test plays the shim.
//!
//! Needs root, lxc-start and /bin/busybox (busybox-static); skipped loudly otherwise
//! (`skip::unavailable`, suite `lxc`; a failure under `CI=true` or with `PVELXC_REQUIRE_LXC=1`).
//! The static init comes from $PVELXC_INIT_BIN, else it is built with
//! `RUSTFLAGS=-C target-feature=+crt-static cargo build --release -p pvelxc-init
//! --target x86_64-unknown-linux-gnu`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::undocumented_unsafe_blocks
)] // a test crate: panics carry the context

mod common;
use common::*;
use pvelxc_init::proto::{ExitRecord, Msg};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// CTs start one at a time (2 shared cores; LXC setup is not the thing under test).
static SERIAL: Mutex<()> = Mutex::new(());

const APPLETS: &[&str] = &[
    "sh", "echo", "tty", "sleep", "cat", "id", "stty", "ls", "grep", "true",
];

/// A skip of the LXC tests (`skip::unavailable`, suite `lxc`): a failure under `CI=true` or with
/// `PVELXC_REQUIRE_LXC` set.
fn skip_lxc(why: &str) -> bool {
    skip::unavailable("lxc", &["PVELXC_REQUIRE_LXC"], why);
    true
}

fn cannot_run() -> bool {
    if !skip::is_root() {
        return skip_lxc("not root");
    }
    if !Path::new("/usr/bin/lxc-start").exists() {
        return skip_lxc("lxc-start not installed (apt-get install lxc)");
    }
    if !Path::new("/bin/busybox").exists() {
        return skip_lxc("/bin/busybox (busybox-static) not installed");
    }
    false
}

fn run_bounded(cmd: &mut Command, timeout: Duration) -> Option<std::process::Output> {
    let mut c = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = c.try_wait() {
            return c.wait_with_output().ok();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
    None
}

fn static_init() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(build_static_init).clone()
}

fn build_static_init() -> PathBuf {
    if let Some(p) = std::env::var_os("PVELXC_INIT_BIN") {
        return PathBuf::from(p);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../../target"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = run_bounded(
        Command::new(cargo)
            .args([
                "build",
                "--release",
                "-p",
                "pvelxc-init",
                "--target",
                "x86_64-unknown-linux-gnu",
            ])
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(manifest),
        Duration::from_secs(900),
    )
    .expect("static build timed out");
    assert!(
        out.status.success(),
        "static build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    target.join("x86_64-unknown-linux-gnu/release/pvelxc-init")
}

struct Ct {
    name: String,
    root: PathBuf,
    lxcpath: PathBuf,
    d: PathBuf,
    start: Option<Child>,
}

impl Ct {
    /// Build a busybox rootfs, the /.pvelxc dir and an LXC config; does not start.
    fn new(tag: &str, unprivileged: bool, process_json: &str) -> Ct {
        let root = tempdir(&format!("lxc-{tag}"));
        let name = format!("pvinit-{tag}-{}", std::process::id());
        let lxcpath = root.join("lxc");
        let rootfs = root.join("rootfs");
        let d = root.join("d");
        for sub in [
            "bin", "sbin", "proc", "sys", "dev", "etc", "tmp", "root", ".pvelxc",
        ] {
            std::fs::create_dir_all(rootfs.join(sub)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for a in APPLETS {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a)).unwrap();
        }
        std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        std::fs::create_dir_all(lxcpath.join(&name)).unwrap();
        std::fs::create_dir_all(d.join("rw")).unwrap();
        // D's contents as the shim lays them out (see PROTOCOL.md).
        std::fs::copy(static_init(), d.join("init")).unwrap();
        std::fs::set_permissions(d.join("init"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(d.join("process.json"), process_json).unwrap();
        std::fs::set_permissions(
            d.join("process.json"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut cfg = format!(
            "lxc.uts.name = {name}\n\
             lxc.rootfs.path = dir:{rootfs}\n\
             lxc.init.cmd = /.pvelxc/init\n\
             lxc.net.0.type = empty\n\
             lxc.apparmor.profile = unconfined\n\
             lxc.autodev = 1\n\
             lxc.mount.auto = proc:mixed sys:ro cgroup:mixed\n\
             lxc.mount.entry = {d} .pvelxc none bind,create=dir 0 0\n\
             lxc.pty.max = 16\n\
             lxc.tty.max = 0\n\
             lxc.console.path = none\n",
            rootfs = rootfs.display(),
            d = d.display()
        );
        if unprivileged {
            cfg.push_str("lxc.idmap = u 0 100000 65536\nlxc.idmap = g 0 100000 65536\n");
            ensure_subids();
            let st = Command::new("chown")
                .args(["-R", "-h", "100000:100000"])
                .arg(&rootfs)
                .status()
                .unwrap();
            assert!(st.success());
            // D belongs to the CT's root (host uid 100000), mode 0700.
            std::os::unix::fs::chown(&d, Some(100000), Some(100000)).unwrap();
            std::os::unix::fs::chown(d.join("rw"), Some(100000), Some(100000)).unwrap();
        }
        std::fs::write(lxcpath.join(&name).join("config"), cfg).unwrap();
        Ct {
            name,
            root,
            lxcpath,
            d,
            start: None,
        }
    }

    fn start(&mut self) {
        let console = std::fs::File::create(self.root.join("console.log")).unwrap();
        let child = Command::new("lxc-start")
            .arg("-F")
            .arg("-n")
            .arg(&self.name)
            .arg("-P")
            .arg(&self.lxcpath)
            .arg("-o")
            .arg(self.root.join("lxc.log"))
            .args(["-l", "INFO"])
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            .spawn()
            .unwrap();
        self.start = Some(child);
    }

    fn diag(&self) -> String {
        let r = |f: &str| std::fs::read_to_string(self.root.join(f)).unwrap_or_default();
        format!(
            "--- console.log\n{}\n--- lxc.log (tail)\n{}",
            r("console.log"),
            r("lxc.log")
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        )
    }

    fn accept(&mut self, shim: &Shim) -> Conn {
        let deadline = Instant::now() + T;
        while Instant::now() < deadline {
            if poll_in(
                std::os::fd::AsRawFd::as_raw_fd(&shim.listener),
                Instant::now() + Duration::from_millis(200),
            ) {
                return shim.accept(T);
            }
            if let Some(c) = &mut self.start {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!(
                        "lxc-start exited ({st}) before init connected\n{}",
                        self.diag()
                    );
                }
            }
        }
        panic!("init did not connect\n{}", self.diag());
    }

    /// lxc-start -F returns once PID 1 is gone.
    fn wait_stopped(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        if let Some(c) = &mut self.start {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    self.start = None;
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            panic!("CT did not stop within {timeout:?}\n{}", self.diag());
        }
    }

    fn attach(&self, args: &[&str]) -> std::process::Output {
        run_bounded(
            Command::new("lxc-attach")
                .arg("-n")
                .arg(&self.name)
                .arg("-P")
                .arg(&self.lxcpath)
                .arg("--clear-env")
                .arg("--")
                .args(args),
            T,
        )
        .expect("lxc-attach timed out")
    }
}

impl Drop for Ct {
    fn drop(&mut self) {
        if let Some(mut c) = self.start.take() {
            let _ = run_bounded(
                Command::new("lxc-stop")
                    .arg("-k")
                    .arg("-n")
                    .arg(&self.name)
                    .arg("-P")
                    .arg(&self.lxcpath),
                Duration::from_secs(15),
            );
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::env::var_os("PVELXC_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

fn ensure_subids() {
    for f in ["/etc/subuid", "/etc/subgid"] {
        let cur = std::fs::read_to_string(f).unwrap_or_default();
        if !cur.lines().any(|l| l.trim() == "root:100000:65536") {
            let mut s = cur;
            if !s.is_empty() && !s.ends_with('\n') {
                s.push('\n');
            }
            s.push_str("root:100000:65536\n");
            std::fs::write(f, s).unwrap();
        }
    }
}

/// The pipe case: stdout "hello", exit code 3, exit file written.
fn pipes_case(tag: &str, unprivileged: bool) {
    if cannot_run() {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let spec = process_json(
        &[
            "sh",
            "-c",
            "echo hello; echo \"uid=$(id -u) pid=$$ foo=$FOO\" >&2; exit 3",
        ],
        false,
    );
    let mut ct = Ct::new(tag, unprivileged, &spec);
    let owner = unprivileged.then_some((100000, 100000));
    let shim = Shim::listen(&ct.d, owner, 0o600);
    ct.start();
    let mut c = ct.accept(&shim);
    let (hello, _) = c.recv(T);
    assert!(
        matches!(
            hello,
            Msg::Hello {
                pid: 1,
                terminal: false,
                ..
            }
        ),
        "{hello:?}"
    );
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
    let (started, _) = c.recv(T);
    let Msg::Started { pid } = started else {
        panic!("{started:?}\n{}", ct.diag())
    };
    assert_eq!(read_all(&mut out_r, T), "hello\n", "{}", ct.diag());
    let err = read_all(&mut err_r, T);
    assert_eq!(err, format!("uid=0 pid={pid} foo=bar baz\n"));
    let (exited, _) = c.recv(T);
    assert!(
        matches!(exited, Msg::Exited { exit_code: 3, signal: None, pid: p, .. } if p == pid),
        "{exited:?}"
    );
    // The exit file was written before Exited was sent.
    let exit = ct.d.join("rw").join("exit");
    let rec = ExitRecord::from_json(&std::fs::read(&exit).unwrap()).unwrap();
    assert_eq!((rec.exit_code, rec.signal, rec.pid), (3, None, pid));
    let uid = std::fs::metadata(&exit).unwrap().uid();
    assert_eq!(uid, if unprivileged { 100000 } else { 0 });
    ct.wait_stopped(T);
}

#[test]
fn privileged_pipes_exit_code() {
    pipes_case("priv", false);
}

#[test]
fn unprivileged_pipes_exit_code() {
    pipes_case("unpriv", true);
}

#[test]
fn privileged_terminal() {
    if cannot_run() {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let spec = process_json(&["sh", "-c", "tty; stty size; exit 0"], true);
    let mut ct = Ct::new("tty", false, &spec);
    let shim = Shim::listen(&ct.d, None, 0o600);
    ct.start();
    let mut c = ct.accept(&shim);
    let (hello, _) = c.recv(T);
    assert!(
        matches!(
            hello,
            Msg::Hello {
                terminal: true,
                pid: 1,
                ..
            }
        ),
        "{hello:?}"
    );
    let (pty, mut fds) = c.recv(T);
    assert_eq!(pty, Msg::Pty);
    let mut master = std::fs::File::from(fds.remove(0));
    c.send(&Msg::Start, &[]);
    let _ = c.recv(T);
    let out = read_until(&mut master, "30 100", T);
    assert!(out.contains("/dev/pts/0"), "{out:?}\n{}", ct.diag());
    assert!(out.contains("30 100"), "{out:?}");
    let (exited, _) = c.recv(T);
    assert!(
        matches!(exited, Msg::Exited { exit_code: 0, .. }),
        "{exited:?}"
    );
    ct.wait_stopped(T);
}

#[test]
fn unprivileged_terminal() {
    if cannot_run() {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let spec = process_json(&["sh", "-c", "tty; exit 6"], true);
    let mut ct = Ct::new("utty", true, &spec);
    let shim = Shim::listen(&ct.d, Some((100000, 100000)), 0o600);
    ct.start();
    let mut c = ct.accept(&shim);
    let _ = c.recv(T);
    let (pty, mut fds) = c.recv(T);
    assert_eq!(pty, Msg::Pty);
    let mut master = std::fs::File::from(fds.remove(0));
    c.send(&Msg::Start, &[]);
    let _ = c.recv(T);
    let out = read_until(&mut master, "/dev/pts/", T);
    assert!(out.contains("/dev/pts/"), "{out:?}\n{}", ct.diag());
    let (exited, _) = c.recv(T);
    assert!(
        matches!(exited, Msg::Exited { exit_code: 6, .. }),
        "{exited:?}"
    );
    ct.wait_stopped(T);
}

/// Exec mode through lxc-attach (what `pct exec` runs), signals to the whole CT,
/// SIGPWR (pct shutdown) translated to SIGTERM for the process.
#[test]
fn unprivileged_exec_and_signals() {
    if cannot_run() {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let spec = process_json(
        &[
            "sh",
            "-c",
            "trap 'echo got-term; exit 11' TERM; echo up; while :; do sleep 0.1; done",
        ],
        false,
    );
    let mut ct = Ct::new("uexec", true, &spec);
    let shim = Shim::listen(&ct.d, Some((100000, 100000)), 0o600);
    ct.start();
    let mut c = ct.accept(&shim);
    let _ = c.recv(T);
    let (mut out_r, out_w) = std::io::pipe().unwrap();
    c.send(
        &Msg::Stdio {
            stdin: false,
            stdout: true,
            stderr: false,
        },
        &[out_w.as_fd()],
    );
    drop(out_w);
    c.send(&Msg::Start, &[]);
    let _ = c.recv(T);
    assert_eq!(read_until(&mut out_r, "up\n", T), "up\n");

    // exec: the shim writes exec-<id>.json (readable by the CT's root) and runs the
    // init in exec mode through lxc-attach.
    let exec_json = ct.d.join("exec-e1.json");
    std::fs::write(
        &exec_json,
        serde_json::json!({
            "user": {"uid": 1000, "gid": 1000, "additionalGids": [10]},
            "args": ["sh", "-c", "echo \"exec $(id -u):$(id -g):$(id -G) $(pwd) $X\"; exit 4"],
            "env": ["PATH=/bin", "X=y"],
            "cwd": "/tmp"
        })
        .to_string(),
    )
    .unwrap();
    std::fs::set_permissions(&exec_json, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = ct.attach(&["/.pvelxc/init", "exec", "/.pvelxc/exec-e1.json"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "exec 1000:1000:1000 10 /tmp y\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(4));
    std::fs::write(&exec_json, r#"{"args":["missing-binary"]}"#).unwrap();
    let out = ct.attach(&["/.pvelxc/init", "exec", "/.pvelxc/exec-e1.json"]);
    assert_eq!(out.status.code(), Some(127));

    // Capabilities in an unprivileged CT: CAP_NET_BIND_SERVICE kept across the switch
    // to uid 1000 (ambient), everything else dropped, bounding set included.
    let nbs = "CAP_NET_BIND_SERVICE";
    std::fs::write(
        &exec_json,
        serde_json::json!({
            "user": {"uid": 1000, "gid": 1000},
            "args": ["grep", "Cap", "/proc/self/status"],
            "env": ["PATH=/bin"],
            "noNewPrivileges": true,
            "capabilities": {"bounding": [nbs], "effective": [nbs], "permitted": [nbs],
                             "inheritable": [nbs], "ambient": [nbs]}
        })
        .to_string(),
    )
    .unwrap();
    let out = ct.attach(&["/.pvelxc/init", "exec", "/.pvelxc/exec-e1.json"]);
    let caps = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{caps} {:?}", out.stderr);
    for k in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert!(
            caps.contains(&format!("{k}:\t0000000000000400")),
            "{k}: {caps}"
        );
    }
    // A `--privileged`-style spec asking for every capability: those the CT does not
    // hold are left out instead of failing the exec.
    let all: Vec<&str> = pvelxc_init::caps::CAP_NAMES.to_vec();
    std::fs::write(
        &exec_json,
        serde_json::json!({
            "args": ["grep", "CapEff", "/proc/self/status"],
            "env": ["PATH=/bin"],
            "capabilities": {"bounding": all, "effective": all, "permitted": all,
                             "inheritable": all, "ambient": all}
        })
        .to_string(),
    )
    .unwrap();
    let out = ct.attach(&["/.pvelxc/init", "exec", "/.pvelxc/exec-e1.json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A background process in the CT, then SIGPWR to the init's host pid
    // (what lxc-stop --nokill / pct shutdown does): the process gets SIGTERM.
    let info = run_bounded(
        Command::new("lxc-info")
            .args(["-p", "-H", "-n"])
            .arg(&ct.name)
            .arg("-P")
            .arg(&ct.lxcpath),
        T,
    )
    .unwrap();
    let host_pid: i32 = String::from_utf8_lossy(&info.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("lxc-info: {info:?}"));
    unsafe { libc::kill(host_pid, libc::SIGPWR) };
    assert_eq!(read_all(&mut out_r, T), "got-term\n");
    let (exited, _) = c.recv(T);
    assert!(
        matches!(exited, Msg::Exited { exit_code: 11, .. }),
        "{exited:?}"
    );
    ct.wait_stopped(T);
}

#[test]
fn privileged_kill_all() {
    if cannot_run() {
        return;
    }
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The process ignores TERM; a daemonised grandchild exists too.
    let spec = process_json(
        &["sh", "-c", "trap '' TERM; sleep 1000 & echo up; wait"],
        false,
    );
    let mut ct = Ct::new("killall", false, &spec);
    let shim = Shim::listen(&ct.d, None, 0o600);
    ct.start();
    let mut c = ct.accept(&shim);
    let _ = c.recv(T);
    let (mut out_r, out_w) = std::io::pipe().unwrap();
    c.send(
        &Msg::Stdio {
            stdin: false,
            stdout: true,
            stderr: false,
        },
        &[out_w.as_fd()],
    );
    drop(out_w);
    c.send(&Msg::Start, &[]);
    let _ = c.recv(T);
    assert_eq!(read_until(&mut out_r, "up\n", T), "up\n");
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
    ct.wait_stopped(T);
}
