//! Shared by the pod mode tests: a busybox root, a spec, the helper's child, bounded waits.
//! The host plays the CT (root, busybox-static; skipped loudly otherwise).
#![allow(dead_code)]

use crate::common::skip;
use pvelxc_init::pod::{ContainerSpec, Mount, MountKind};
use pvelxc_init::process::Process;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_pvelxc-init");
pub const T: Duration = Duration::from_secs(20);

pub const APPLETS: &[&str] = &[
    "sh", "cat", "ls", "echo", "sleep", "hostname", "id", "kill", "grep", "wc", "pwd", "touch",
    "true",
];

/// Root and busybox, or a skip (suite `root`: a failure under CI).
pub fn prereqs() -> bool {
    skip::require(skip::is_root(), "root", &[], "needs root")
        && skip::require(
            Path::new("/bin/busybox").exists(),
            "root",
            &[],
            "needs /bin/busybox (apt-get install busybox-static)",
        )
}

/// A temp dir removed on drop (the containers' mounts live in their own namespaces: nothing
/// stays mounted in it).
pub struct Tmp(pub PathBuf);

impl Tmp {
    pub fn new(tag: &str) -> Tmp {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let p =
            std::env::temp_dir().join(format!("pvelxc-pod-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Tmp(p)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `<dir>/root`: bin/busybox with the applet links, etc/secret (masked), an empty proc dir.
pub fn make_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    std::fs::write(root.join("etc/secret"), "secret\n").unwrap();
    root
}

pub fn mount(dest: &str, kind: MountKind, opts: &[&str]) -> Mount {
    Mount {
        destination: dest.into(),
        kind,
        options: opts.iter().map(|s| s.to_string()).collect(),
    }
}

pub fn process(args: &[&str]) -> Process {
    Process {
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        ..Default::default()
    }
}

/// runc's default mounts (proc, /dev tmpfs, devpts, mqueue, sysfs), `hosts` bound read-only
/// on /etc/hosts, /etc/secret and /proc/kcore masked, /proc/sys read-only.
pub fn spec(root: &Path, hosts: &Path, args: &[&str]) -> ContainerSpec {
    let nse = ["nosuid", "noexec", "nodev"];
    ContainerSpec {
        root: root.display().to_string(),
        readonly_root: false,
        new_pid_ns: true,
        mounts: vec![
            mount("/proc", MountKind::Proc, &nse),
            mount(
                "/dev",
                MountKind::Tmpfs,
                &["nosuid", "strictatime", "mode=755", "size=65536k"],
            ),
            mount(
                "/dev/pts",
                MountKind::Devpts,
                &[
                    "nosuid",
                    "noexec",
                    "newinstance",
                    "ptmxmode=0666",
                    "mode=0620",
                    "gid=5",
                ],
            ),
            mount("/dev/mqueue", MountKind::Mqueue, &nse),
            mount(
                "/sys",
                MountKind::Sysfs,
                &["nosuid", "noexec", "nodev", "ro"],
            ),
            mount(
                "/etc/hosts",
                MountKind::Bind {
                    source: hosts.display().to_string(),
                },
                &["rbind", "ro"],
            ),
        ],
        masked_paths: vec![
            "/etc/secret".into(),
            "/proc/kcore".into(),
            "/nonexistent".into(),
        ],
        readonly_paths: vec!["/proc/sys".into()],
        cgroup: None,
        process: process(args),
    }
}

pub fn write_json<S: serde::Serialize>(dir: &Path, name: &str, v: &S) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec(v).unwrap()).unwrap();
    p
}

/// Run the init with `args`, stdin null, output collected; killed (and a panic) after `T`.
pub fn run(args: &[&str]) -> Output {
    let child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(T) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: plain kill of our own child.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("pvelxc-init {args:?} did not finish within {T:?}");
        }
    }
}

pub fn spawn(args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

pub fn wait_exit(c: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = c.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            let _ = c.wait();
            panic!("pid {} did not exit within {timeout:?}", c.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The helper's one child (the container's process, as the host sees it).
pub fn child_of(helper: u32) -> u32 {
    let deadline = Instant::now() + T;
    loop {
        let path = format!("/proc/{helper}/task/{helper}/children");
        let kids = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some(k) = kids.split_whitespace().next() {
            return k.parse().unwrap();
        }
        assert!(Instant::now() < deadline, "helper {helper} has no child");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// (state, start time) from /proc/PID/stat, None once the pid is gone.
pub fn stat(pid: u32) -> Option<(char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((f[0].chars().next()?, f[19].parse().ok()?))
}

/// The process that had `start` as start time is gone (or a zombie) within `T`.
pub fn gone(pid: u32, start: u64) -> bool {
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        match stat(pid) {
            Some((st, t)) if t == start && st != 'Z' && st != 'X' => {}
            _ => return true,
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

pub fn kill(pid: u32, sig: i32) {
    // SAFETY: plain kill.
    assert_eq!(
        unsafe { libc::kill(pid as i32, sig) },
        0,
        "kill {pid} {sig}"
    );
}

/// `tar --create --sparse --numeric-owner -C dir .`, as the shim makes it.
pub fn gnu_tar(dir: &Path) -> Vec<u8> {
    let out = Command::new("tar")
        .args(["--create", "--sparse", "--numeric-owner", "-C"])
        .arg(dir)
        .arg(".")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub fn lines(b: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(b)
        .lines()
        .map(String::from)
        .collect()
}

/// A pty pair (master, slave), both close-on-exec and not made anyone's terminal.
pub fn openpty() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(m >= 0);
        assert_eq!(libc::grantpt(m), 0);
        assert_eq!(libc::unlockpt(m), 0);
        let mut name = [0 as libc::c_char; 64];
        assert_eq!(libc::ptsname_r(m, name.as_mut_ptr(), name.len()), 0);
        let s = libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        assert!(s >= 0);
        (
            std::os::fd::OwnedFd::from_raw_fd(m),
            std::os::fd::OwnedFd::from_raw_fd(s),
        )
    }
}
