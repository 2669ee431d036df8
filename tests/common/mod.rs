//! Integration-test harness: a private containerd per test, fixtures cached under
//! `target/fixtures/`, `ctr` helpers with bounded timeouts, an event watcher and a pty runner.
//!
//! Rules kept here:
//! * every external command is an argv vector (no shell);
//! * every wait is bounded and panics with a message saying what it waited for;
//! * a `TestEnv` never talks to the system containerd and removes everything it created on Drop.
//!
//! Environment knobs:
//! * `PVELXC_TEST_RUNTIME` — runtime under test (default `io.containerd.pvelxc.v2`); set it to
//!   `io.containerd.runc.v2` to run the same tests against the stock shim.
//! * `PVELXC_SHIM_DIR` — directory holding `containerd-shim-pvelxc-v2` (default: the directory of
//!   the binary cargo built for this test run, i.e. `target/release` under `--release`).
//! * `PVELXC_TEST_KEEP=1` — keep the env dir (containerd log, config) of a test for debugging.
//!
//! Skips go through [`skip`] (`SKIP: <test>: <reason>` on stderr, appended to `$PVELXC_SKIP_LOG`,
//! a failure under `CI=true` unless `PVELXC_SKIP_SUITES` names the suite).
#![allow(dead_code)]

pub mod pve;
pub mod skip;
pub mod vm;

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Our runtime name.
pub const OUR_RUNTIME: &str = "io.containerd.pvelxc.v2";
/// The stock Go shim.
pub const STOCK_RUNTIME: &str = "io.containerd.runc.v2";
/// Our shim binary name.
pub const SHIM_BINARY: &str = "containerd-shim-pvelxc-v2";
/// The image every `TestEnv::import_busybox` provides.
pub const BUSYBOX_IMAGE: &str = "localhost/test/busybox:latest";
/// PATH given to `--rootfs` containers (a `--rootfs` spec has no env).
pub const CONTAINER_PATH: &str = "PATH=/bin:/sbin:/usr/bin:/usr/sbin";
/// Default bound for one `ctr` invocation.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(60);

const FIXTURE_VERSION: &str = "v1";

// ---------------------------------------------------------------------------------------------
// Runtime selection
// ---------------------------------------------------------------------------------------------

/// The runtime under test: `$PVELXC_TEST_RUNTIME` or `io.containerd.pvelxc.v2`.
pub fn runtime() -> String {
    match std::env::var("PVELXC_TEST_RUNTIME") {
        Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => OUR_RUNTIME.to_string(),
    }
}

/// True when the runtime under test is ours (by name or by a path to our binary).
pub fn testing_our_runtime() -> bool {
    let r = runtime();
    r == OUR_RUNTIME || r.ends_with(SHIM_BINARY)
}

/// Binary name containerd resolves for the runtime under test
/// (`io.containerd.X.vN` -> `containerd-shim-X-vN`, or the basename of a path).
pub fn expected_shim_binary() -> String {
    let r = runtime();
    if r.contains('/') {
        return Path::new(&r)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or(r);
    }
    let parts: Vec<&str> = r.split('.').collect();
    match parts.as_slice() {
        [.., name, version] => format!("containerd-shim-{name}-{version}"),
        _ => r,
    }
}

/// For tests of behaviour only our shim provides: returns true (after printing and recording a
/// `not-applicable` skip, see [`skip`]) when another runtime is under test.
pub fn skip_unless_our_runtime() -> bool {
    if testing_our_runtime() {
        return false;
    }
    skip::not_applicable(&format!(
        "needs {OUR_RUNTIME}, PVELXC_TEST_RUNTIME={}",
        runtime()
    ));
    true
}

// ---------------------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------------------

/// Directory holding the shim binary (put first on containerd's PATH).
pub fn shim_dir() -> PathBuf {
    if let Ok(d) = std::env::var("PVELXC_SHIM_DIR") {
        if !d.is_empty() {
            return PathBuf::from(d);
        }
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_containerd-shim-pvelxc-v2"));
    match bin.parent() {
        Some(p) => p.to_path_buf(),
        None => workspace_dir().join("target").join("release"),
    }
}

/// The workspace (root crate) directory.
pub fn workspace_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The cargo target directory used for this build.
pub fn target_dir() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_containerd-shim-pvelxc-v2"));
    // <target>/<profile>/containerd-shim-pvelxc-v2
    bin.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| workspace_dir().join("target"))
}

/// Where fixtures are cached.
pub fn fixtures_dir() -> PathBuf {
    target_dir().join("fixtures").join(FIXTURE_VERSION)
}

// ---------------------------------------------------------------------------------------------
// Running commands with bounded waits
// ---------------------------------------------------------------------------------------------

fn argv_string(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Poll `f` every 20–100 ms until it returns `Some`, or panic after `timeout` naming `what`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut delay = Duration::from_millis(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

/// Like `wait_until` but returns `None` instead of panicking.
pub fn poll_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        thread::sleep(Duration::from_millis(25));
    }
}

/// A child process whose stdout/stderr are captured by background threads, so its output can be
/// inspected while it runs. Killed (it is our own child) on Drop if still running.
pub struct BgProcess {
    child: Child,
    argv: String,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<thread::JoinHandle<()>>,
    status: Option<ExitStatus>,
}

fn capture<R: Read + Send + 'static>(mut r: R, buf: Arc<Mutex<Vec<u8>>>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf
                    .lock()
                    .expect("capture lock")
                    .extend_from_slice(&chunk[..n]),
            }
        }
    })
}

impl BgProcess {
    /// Spawn `cmd` with stdout/stderr captured; `stdin` data (if any) is written then closed,
    /// otherwise stdin is /dev/null.
    pub fn spawn(mut cmd: Command, stdin: Option<Vec<u8>>) -> BgProcess {
        let argv = argv_string(&cmd);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn `{argv}`: {e}"));
        if let Some(data) = stdin {
            let mut si = child.stdin.take().expect("piped stdin");
            thread::spawn(move || {
                let _ = si.write_all(&data);
                // dropping closes stdin -> EOF
            });
        }
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            capture(child.stdout.take().expect("piped stdout"), stdout.clone()),
            capture(child.stderr.take().expect("piped stderr"), stderr.clone()),
        ];
        BgProcess {
            child,
            argv,
            stdout,
            stderr,
            readers,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout_now(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().expect("stdout lock")).into_owned()
    }

    pub fn stderr_now(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().expect("stderr lock")).into_owned()
    }

    /// Wait (bounded) until stdout contains `needle`; panics if the process exits first.
    pub fn wait_stdout_contains(&mut self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        loop {
            if self.stdout_now().contains(needle) {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                // give the reader a moment to drain
                thread::sleep(Duration::from_millis(50));
                if self.stdout_now().contains(needle) {
                    return;
                }
                panic!(
                    "`{}` exited ({st}) before printing {needle:?}\nstdout: {}\nstderr: {}",
                    self.argv,
                    self.stdout_now(),
                    self.stderr_now()
                );
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {needle:?} from `{}`\nstdout: {}\nstderr: {}",
                    self.argv,
                    self.stdout_now(),
                    self.stderr_now()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Returns the exit status if it has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Wait (bounded) for exit; on timeout kill it and panic.
    pub fn finish(mut self, timeout: Duration) -> Output {
        let start = Instant::now();
        let status = loop {
            if let Some(st) = self.try_status() {
                break st;
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "`{}` did not finish within {timeout:?}\nstdout: {}\nstderr: {}",
                    self.argv,
                    self.stdout_now(),
                    self.stderr_now()
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        // Output pipes may be held open by grandchildren; bound the drain.
        let drain_deadline = Instant::now() + Duration::from_secs(5);
        for h in self.readers.drain(..) {
            while !h.is_finished() && Instant::now() < drain_deadline {
                thread::sleep(Duration::from_millis(5));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
        Output {
            status,
            stdout: self.stdout.lock().expect("stdout lock").clone(),
            stderr: self.stderr.lock().expect("stderr lock").clone(),
        }
    }

    /// Kill (SIGKILL) and reap, ignoring errors.
    pub fn kill(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }
}

impl Drop for BgProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Run `cmd` to completion with a bound; stdin is /dev/null unless `stdin` is given.
pub fn run_cmd(cmd: Command, stdin: Option<Vec<u8>>, timeout: Duration) -> Output {
    BgProcess::spawn(cmd, stdin).finish(timeout)
}

/// Run an argv; panic unless it succeeds.
pub fn run_ok(argv: &[&str]) -> Output {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]);
    let out = run_cmd(cmd, None, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "`{}` failed ({}):\nstdout: {}\nstderr: {}",
        argv.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Describe an Output for assertion messages.
pub fn describe(o: &Output) -> String {
    format!(
        "status: {}\nstdout: {:?}\nstderr: {:?}",
        o.status,
        stdout(o),
        stderr(o)
    )
}

/// Exit code, or 128+signal when killed by a signal.
pub fn exit_code(o: &Output) -> i32 {
    o.status
        .code()
        .or_else(|| o.status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

// ---------------------------------------------------------------------------------------------
// /proc helpers
// ---------------------------------------------------------------------------------------------

/// A process exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            // state is the field after the ")" closing the comm
            let state = s
                .rfind(')')
                .and_then(|i| s[i + 1..].split_whitespace().next())
                .unwrap_or("?");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

/// argv of a process, empty when gone.
pub fn cmdline(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn all_pids() -> Vec<u32> {
    let mut v = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            if let Some(p) = e.file_name().to_str().and_then(|s| s.parse().ok()) {
                v.push(p);
            }
        }
    }
    v
}

fn ppid(pid: u32) -> Option<u32> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let i = s.rfind(')')?;
    s[i + 1..].split_whitespace().nth(1)?.parse().ok()
}

/// Pids of shim processes (any `containerd-shim-*` binary) serving the containerd at `address`.
pub fn shim_pids_for(address: &Path) -> Vec<u32> {
    let addr = address.to_string_lossy();
    all_pids()
        .into_iter()
        .filter(|p| {
            let argv = cmdline(*p);
            let is_shim = argv
                .first()
                .map(|a0| {
                    Path::new(a0)
                        .file_name()
                        .map(|f| f.to_string_lossy().starts_with("containerd-shim"))
                        .unwrap_or(false)
                })
                .unwrap_or(false);
            is_shim && argv.windows(2).any(|w| w[0] == "-address" && w[1] == addr) && pid_alive(*p)
        })
        .collect()
}

/// VmRSS of a process in kB.
pub fn vm_rss_kb(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Mount points (as in /proc/self/mountinfo) at or under `dir`.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().trim_end_matches('/').to_string();
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|m| m.replace("\\040", " "))
        .filter(|m| m == &prefix || m.starts_with(&format!("{prefix}/")))
        .collect()
}

fn send_signal(pid: u32, sig: i32) {
    // SAFETY: plain kill(2) on a pid we own.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// SIGKILL a process (which the caller started, directly or through its private containerd).
pub fn kill_pid(pid: u32) {
    send_signal(pid, libc::SIGKILL);
}

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// Fixture paths, built once per machine (cached under target/fixtures) and once per process.
pub struct Fixtures {
    /// A busybox-static rootfs (read it, copy it: `TestEnv::rootfs()` gives a private copy).
    pub rootfs: PathBuf,
    /// OCI layout tarball of the busybox image (for `ctr image import`).
    pub image_tar: PathBuf,
}

struct FileLock(fs::File);

impl FileLock {
    fn acquire(path: &Path) -> FileLock {
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("cannot open lock file {}: {e}", path.display()));
        // SAFETY: flock on an fd we own; blocks until the other test binary is done building.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock {} failed", path.display());
        FileLock(f)
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: unlocking an fd we own.
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

fn busybox_binary() -> PathBuf {
    for c in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(c).is_file() {
            return PathBuf::from(c);
        }
    }
    which("busybox").expect("busybox not found: install busybox-static (scripts/setup.sh)")
}

fn build_rootfs(dest: &Path) {
    let _ = fs::remove_dir_all(dest);
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "etc", "tmp", "root", "run",
        "var",
    ] {
        fs::create_dir_all(dest.join(d)).expect("mkdir rootfs dir");
    }
    let bb = busybox_binary();
    fs::copy(&bb, dest.join("bin/busybox")).expect("copy busybox into rootfs");
    let d = dest.to_str().expect("utf8 rootfs path");
    run_ok(&["chroot", d, "/bin/busybox", "--install", "-s"]);
    fs::write(
        dest.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .expect("write passwd");
    fs::write(dest.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").expect("write group");
    fs::write(dest.join("etc/hostname"), "busybox\n").expect("write hostname");
    // /tmp must be writable by everyone, as usual
    run_ok(&["chmod", "1777", dest.join("tmp").to_str().expect("utf8")]);
}

fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn build_image_tar(rootfs: &Path, work: &Path, dest_tar: &Path) {
    let _ = fs::remove_dir_all(work);
    fs::create_dir_all(work).expect("mkdir image work dir");
    let img = work.join("img");
    let bundle = work.join("bundle");
    let img_tag = format!("{}:latest", img.display());
    run_ok(&["umoci", "init", "--layout", img.to_str().expect("utf8")]);
    run_ok(&["umoci", "new", "--image", &img_tag]);
    run_ok(&[
        "umoci",
        "unpack",
        "--image",
        &img_tag,
        bundle.to_str().expect("utf8"),
    ]);
    let src = format!("{}/.", rootfs.display());
    let dst = format!("{}/rootfs/", bundle.display());
    run_ok(&["cp", "-a", &src, &dst]);
    run_ok(&[
        "umoci",
        "repack",
        "--image",
        &img_tag,
        bundle.to_str().expect("utf8"),
    ]);
    run_ok(&[
        "umoci",
        "config",
        "--image",
        &img_tag,
        "--config.cmd",
        "/bin/sh",
        "--config.env",
        CONTAINER_PATH,
        "--architecture",
        oci_arch(),
        "--os",
        "linux",
    ]);
    let tmp_tar = dest_tar.with_extension("tar.tmp");
    run_ok(&[
        "tar",
        "-cf",
        tmp_tar.to_str().expect("utf8"),
        "-C",
        img.to_str().expect("utf8"),
        ".",
    ]);
    fs::rename(&tmp_tar, dest_tar).expect("rename image tar");
    let _ = fs::remove_dir_all(work);
}

/// Build (once, under a file lock shared by all test binaries) and return the fixtures.
pub fn fixtures() -> &'static Fixtures {
    static FIX: OnceLock<Fixtures> = OnceLock::new();
    FIX.get_or_init(|| {
        let dir = fixtures_dir();
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let _lock = FileLock::acquire(&dir.join(".lock"));
        let rootfs = dir.join("busybox-rootfs");
        let rootfs_done = dir.join("busybox-rootfs.done");
        if !rootfs_done.exists() {
            let tmp = dir.join("busybox-rootfs.tmp");
            build_rootfs(&tmp);
            let _ = fs::remove_dir_all(&rootfs);
            fs::rename(&tmp, &rootfs).expect("rename rootfs fixture");
            fs::write(&rootfs_done, "ok\n").expect("write marker");
        }
        let image_tar = dir.join("busybox-oci.tar");
        if !image_tar.exists() {
            build_image_tar(&rootfs, &dir.join("image-work"), &image_tar);
        }
        Fixtures { rootfs, image_tar }
    })
}

// ---------------------------------------------------------------------------------------------
// TestEnv
// ---------------------------------------------------------------------------------------------

static ENV_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Builder for a `TestEnv`.
#[derive(Default)]
pub struct TestEnvBuilder {
    envs: Vec<(OsString, OsString)>,
    wrap: Vec<OsString>,
    extra_config: String,
    cri: bool,
}

impl TestEnvBuilder {
    /// Pass an environment variable to containerd (and so to the shims), e.g. PVELXC_CONFIG.
    pub fn env(mut self, key: impl Into<OsString>, val: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), val.into()));
        self
    }

    /// Pass these variables through from the test's own environment when set.
    pub fn passthrough(mut self, keys: &[&str]) -> Self {
        for k in keys {
            if let Some(v) = std::env::var_os(k) {
                self.envs.push((OsString::from(k), v));
            }
        }
        self
    }

    /// Start containerd as `WRAP... containerd ...` (e.g. inside a `pve-shape` host shape);
    /// the wrapper must exec containerd so its pid is containerd's.
    pub fn wrap(mut self, argv: Vec<OsString>) -> Self {
        self.wrap = argv;
        self
    }

    /// Append raw TOML to the generated config.toml (plugin sections).
    pub fn extra_config(mut self, toml: &str) -> Self {
        self.extra_config.push_str(toml);
        self.extra_config.push('\n');
        self
    }

    /// Keep the CRI plugin enabled (disabled by default: faster start, no CNI side effects).
    pub fn with_cri(mut self) -> Self {
        self.cri = true;
        self
    }

    pub fn start(self) -> TestEnv {
        TestEnv::start_with(self)
    }
}

/// A private containerd with its own root/state/socket and a unique namespace.
pub struct TestEnv {
    dir: PathBuf,
    root: PathBuf,
    state: PathBuf,
    sock: PathBuf,
    config: PathBuf,
    ns: String,
    envs: Vec<(OsString, OsString)>,
    wrap: Vec<OsString>,
    containerd: Option<Child>,
    rootfs_counter: AtomicU32,
    image_imported: std::cell::Cell<bool>,
    ctr_tokens: Mutex<HashSet<String>>,
}

impl TestEnv {
    /// Start a private containerd with defaults (env PVELXC_CONFIG / PVE_DOUBLE_ROOT passed through).
    pub fn new() -> TestEnv {
        Self::builder().start()
    }

    pub fn builder() -> TestEnvBuilder {
        TestEnvBuilder::default().passthrough(&["PVELXC_CONFIG", "PVE_DOUBLE_ROOT", "RUST_LOG"])
    }

    fn start_with(b: TestEnvBuilder) -> TestEnv {
        let n = ENV_COUNTER.fetch_add(1, Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let ns = format!("pvt-{}-{}-{:x}", std::process::id(), n, nanos & 0xffff);
        // Short path: unix socket paths are limited to 108 bytes.
        let dir = tempfile::Builder::new()
            .prefix("pvt-")
            .tempdir_in("/tmp")
            .expect("create temp dir for containerd")
            .keep();
        let root = dir.join("root");
        let state = dir.join("state");
        let sock = dir.join("c.sock");
        let config = dir.join("config.toml");
        for d in [&root, &state] {
            fs::create_dir_all(d).expect("mkdir root/state");
        }
        let mut disabled = vec!["io.containerd.internal.v1.opt"];
        if !b.cri {
            disabled.push("io.containerd.grpc.v1.cri");
        }
        let disabled = disabled
            .iter()
            .map(|p| format!("{p:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let cfg = format!(
            "version = 2\nroot = {root:?}\nstate = {state:?}\ndisabled_plugins = [{disabled}]\n\n\
             [grpc]\n  address = {sock:?}\n\n[ttrpc]\n  address = \"\"\n\n[debug]\n  level = \"info\"\n\n{extra}",
            root = root.display().to_string(),
            state = state.display().to_string(),
            sock = sock.display().to_string(),
            extra = b.extra_config,
        );
        fs::write(&config, cfg).expect("write containerd config");
        let mut env = TestEnv {
            dir,
            root,
            state,
            sock,
            config,
            ns,
            envs: b.envs,
            wrap: b.wrap,
            containerd: None,
            rootfs_counter: AtomicU32::new(0),
            image_imported: std::cell::Cell::new(false),
            ctr_tokens: Mutex::new(HashSet::new()),
        };
        env.start_containerd();
        env
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn state(&self) -> &Path {
        &self.state
    }
    /// containerd's gRPC socket.
    pub fn address(&self) -> &Path {
        &self.sock
    }
    pub fn config_path(&self) -> &Path {
        &self.config
    }
    /// This env's namespace (unique).
    pub fn ns(&self) -> &str {
        &self.ns
    }
    /// The runtime under test.
    pub fn runtime(&self) -> String {
        runtime()
    }

    /// containerd's log so far.
    pub fn containerd_log(&self) -> String {
        fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.containerd_log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Start containerd on this env's root/state (also used after `stop_containerd`).
    pub fn start_containerd(&mut self) {
        assert!(self.containerd.is_none(), "containerd already running");
        let _ = fs::remove_file(&self.sock);
        let _ = fs::remove_file(self.sock.with_extension("sock.ttrpc"));
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))
            .expect("open containerd log");
        let mut path = OsString::from(shim_dir());
        path.push(":");
        path.push(
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        );
        let mut cmd = match self.wrap.split_first() {
            Some((prog, args)) => {
                let mut c = Command::new(prog);
                c.args(args).arg("containerd");
                c
            }
            None => Command::new("containerd"),
        };
        cmd.arg("--config")
            .arg(&self.config)
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        // Own process group: a Ctrl-C on the test run must not race our cleanup.
        cmd.process_group(0);
        let mut child = cmd
            .spawn()
            .expect("cannot spawn containerd (is it installed? run scripts/setup.sh)");
        let start = Instant::now();
        loop {
            if self.sock.exists() && self.ctr_quiet(&["version"]) {
                break;
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "containerd exited ({st}) before its socket {} was ready; log:\n{}",
                    self.sock.display(),
                    self.log_tail()
                );
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "containerd socket {} not ready after 20s; log:\n{}",
                    self.sock.display(),
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        self.containerd = Some(child);
    }

    /// Stop containerd with SIGTERM (bounded; SIGKILL after 15s). Shims keep running.
    pub fn stop_containerd(&mut self) {
        if let Some(mut child) = self.containerd.take() {
            send_signal(child.id(), libc::SIGTERM);
            let start = Instant::now();
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if start.elapsed() > Duration::from_secs(15) {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Stop and start containerd again on the same root/state.
    pub fn restart_containerd(&mut self) {
        self.stop_containerd();
        self.start_containerd();
    }

    pub fn containerd_pid(&self) -> Option<u32> {
        self.containerd.as_ref().map(|c| c.id())
    }

    /// A `ctr --address <sock> -n <ns> args...` Command (not yet run).
    ///
    /// `run` and `task exec` get `--fifo-dir <env dir>/fifo` so no IO fifo outlives the env, and
    /// every argument is remembered so Drop can remove stale shim sockets of killed shims.
    pub fn ctr_command(&self, args: &[&str]) -> Command {
        {
            let mut seen = self.ctr_tokens.lock().expect("tokens lock");
            for a in args {
                seen.insert(a.to_string());
                if let Some((_, v)) = a.rsplit_once('=') {
                    seen.insert(v.to_string());
                }
            }
        }
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(&self.sock).arg("-n").arg(&self.ns);
        let fifo_at = match args {
            ["run", ..] => Some(1),
            ["task" | "tasks" | "t", "exec", ..] => Some(2),
            _ => None,
        };
        match fifo_at {
            Some(i) if !args.iter().any(|a| a.starts_with("--fifo-dir")) => {
                cmd.args(&args[..i])
                    .arg("--fifo-dir")
                    .arg(self.dir.join("fifo"))
                    .args(&args[i..]);
            }
            _ => {
                cmd.args(args);
            }
        }
        cmd
    }

    /// Shim socket path containerd 1.6 derives for a grouping id (sha256 of address/ns/id).
    pub fn shim_socket_path(&self, grouping: &str) -> PathBuf {
        use sha2::Digest;
        let path = format!("{}/{}/{}", self.sock.display(), self.ns, grouping);
        let d = sha2::Sha256::digest(path.as_bytes());
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        PathBuf::from("/run/containerd/s").join(hex)
    }

    /// Run ctr (stdin /dev/null, bounded by CTR_TIMEOUT).
    pub fn ctr(&self, args: &[&str]) -> Output {
        run_cmd(self.ctr_command(args), None, CTR_TIMEOUT)
    }

    /// Run ctr with `stdin` piped in (then closed).
    pub fn ctr_stdin(&self, stdin: &[u8], args: &[&str]) -> Output {
        run_cmd(self.ctr_command(args), Some(stdin.to_vec()), CTR_TIMEOUT)
    }

    /// Run ctr and panic (with output and containerd log tail) unless it succeeds.
    pub fn ctr_ok(&self, args: &[&str]) -> Output {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {} failed:\n{}\ncontainerd log tail:\n{}",
            args.join(" "),
            describe(&out),
            self.log_tail()
        );
        out
    }

    fn ctr_quiet(&self, args: &[&str]) -> bool {
        let mut cmd = self.ctr_command(args);
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .stdin(Stdio::null());
        match cmd.spawn() {
            Ok(mut c) => {
                let start = Instant::now();
                loop {
                    if let Ok(Some(st)) = c.try_wait() {
                        return st.success();
                    }
                    if start.elapsed() > Duration::from_secs(5) {
                        let _ = c.kill();
                        let _ = c.wait();
                        return false;
                    }
                    thread::sleep(Duration::from_millis(10));
                }
            }
            Err(_) => false,
        }
    }

    /// Spawn ctr in the background (stdin /dev/null, output captured).
    pub fn ctr_spawn(&self, args: &[&str]) -> BgProcess {
        BgProcess::spawn(self.ctr_command(args), None)
    }

    /// A fresh private copy of the busybox rootfs fixture (removed with the env).
    pub fn rootfs(&self) -> PathBuf {
        let n = self.rootfs_counter.fetch_add(1, Ordering::SeqCst);
        let dest = self.dir.join(format!("rootfs{n}"));
        fs::create_dir_all(&dest).expect("mkdir rootfs copy");
        let src = format!("{}/.", fixtures().rootfs.display());
        run_ok(&["cp", "-a", &src, dest.to_str().expect("utf8")]);
        dest
    }

    /// argv for `ctr run --runtime R --env PATH --rootfs <fresh copy> <flags> <id> <cmd>`.
    fn rootfs_run_args(&self, flags: &[&str], id: &str, cmd: &[&str]) -> (Vec<String>, PathBuf) {
        let rootfs = self.rootfs();
        let mut args: Vec<String> = vec!["run".into(), "--runtime".into(), runtime()];
        args.push("--env".into());
        args.push(CONTAINER_PATH.into());
        args.extend(flags.iter().map(|s| s.to_string()));
        args.push("--rootfs".into());
        args.push(rootfs.display().to_string());
        args.push(id.into());
        args.extend(cmd.iter().map(|s| s.to_string()));
        (args, rootfs)
    }

    /// `ctr run --rm --runtime R --rootfs <fresh copy> [flags] id cmd...` (stdin /dev/null).
    pub fn run_rootfs(&self, id: &str, flags: &[&str], cmd: &[&str]) -> Output {
        let mut f = vec!["--rm"];
        f.extend_from_slice(flags);
        let (args, _) = self.rootfs_run_args(&f, id, cmd);
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ctr(&a)
    }

    /// `ctr run --rm` on a fresh rootfs copy that `edit` changed first.
    pub fn run_rootfs_edited(&self, id: &str, edit: impl FnOnce(&Path), cmd: &[&str]) -> Output {
        let (args, rootfs) = self.rootfs_run_args(&["--rm"], id, cmd);
        edit(&rootfs);
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ctr(&a)
    }

    /// The pids `ctr task ps` lists for a task.
    pub fn task_pids(&self, id: &str) -> Vec<u32> {
        stdout(&self.ctr(&["task", "ps", id]))
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    }

    /// `ctr run -d ...` on a fresh rootfs copy; waits until the task is RUNNING.
    /// Returns (rootfs dir, container pid).
    pub fn run_rootfs_detached(&self, id: &str, flags: &[&str], cmd: &[&str]) -> (PathBuf, u32) {
        let mut f = vec!["-d"];
        f.extend_from_slice(flags);
        let (args, rootfs) = self.rootfs_run_args(&f, id, cmd);
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ctr_ok(&a);
        let t = self.wait_task_status(id, "RUNNING", Duration::from_secs(30));
        (rootfs, t.pid)
    }

    /// Import the busybox fixture image as `localhost/test/busybox:latest` (idempotent).
    pub fn import_busybox(&self) {
        if self.image_imported.get() {
            return;
        }
        let tar = fixtures().image_tar.display().to_string();
        self.ctr_ok(&[
            "image",
            "import",
            "--base-name",
            "localhost/test/busybox",
            &tar,
        ]);
        let ls = self.ctr_ok(&["image", "ls", "-q"]);
        assert!(
            stdout(&ls).lines().any(|l| l.trim() == BUSYBOX_IMAGE),
            "image import did not produce {BUSYBOX_IMAGE}; images: {}",
            stdout(&ls)
        );
        self.image_imported.set(true);
    }

    /// `ctr run --rm --runtime R [flags] localhost/test/busybox:latest id cmd...`.
    pub fn run_image(&self, id: &str, flags: &[&str], cmd: &[&str]) -> Output {
        self.import_busybox();
        let rt = runtime();
        let mut args: Vec<&str> = vec!["run", "--rm", "--runtime", &rt];
        args.extend_from_slice(flags);
        args.push(BUSYBOX_IMAGE);
        args.push(id);
        args.extend_from_slice(cmd);
        self.ctr(&args)
    }

    /// `ctr run -d` of the image; waits until RUNNING; returns the container pid.
    pub fn run_image_detached(&self, id: &str, flags: &[&str], cmd: &[&str]) -> u32 {
        self.import_busybox();
        let rt = runtime();
        let mut args: Vec<&str> = vec!["run", "-d", "--runtime", &rt];
        args.extend_from_slice(flags);
        args.push(BUSYBOX_IMAGE);
        args.push(id);
        args.extend_from_slice(cmd);
        self.ctr_ok(&args);
        self.wait_task_status(id, "RUNNING", Duration::from_secs(30))
            .pid
    }

    /// Tasks as listed by `ctr task ls`.
    pub fn tasks(&self) -> Vec<TaskInfo> {
        let out = self.ctr(&["task", "ls"]);
        stdout(&out)
            .lines()
            .skip(1)
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                if f.len() < 3 {
                    return None;
                }
                Some(TaskInfo {
                    id: f[0].to_string(),
                    pid: f[1].parse().unwrap_or(0),
                    status: f[2].to_string(),
                })
            })
            .collect()
    }

    /// The task `id`, if listed.
    pub fn task(&self, id: &str) -> Option<TaskInfo> {
        self.tasks().into_iter().find(|t| t.id == id)
    }

    /// Wait (bounded) until `ctr task ls` shows `id` with `status` (RUNNING, PAUSED, STOPPED...).
    pub fn wait_task_status(&self, id: &str, status: &str, timeout: Duration) -> TaskInfo {
        let mut last = None;
        let r = poll_until(timeout, || {
            let t = self.task(id);
            last = t.clone();
            t.filter(|t| t.status == status)
        });
        r.unwrap_or_else(|| {
            panic!(
                "task {id} not {status} within {timeout:?}; last seen: {last:?}\ncontainerd log tail:\n{}",
                self.log_tail()
            )
        })
    }

    /// Exit code of a stopped task, read from `ctr task rm` (which deletes it):
    /// ctr 1.6 warns "task ID exit with non-zero exit code N" and prints nothing for 0.
    pub fn task_rm_exit_code(&self, id: &str) -> i32 {
        let out = self.ctr_ok(&["task", "rm", id]);
        let err = stderr(&out);
        match err.split("non-zero exit code ").nth(1) {
            Some(rest) => rest
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("cannot parse exit code from {err:?}")),
            None => 0,
        }
    }

    /// Shim processes serving this env's containerd.
    pub fn shim_pids(&self) -> Vec<u32> {
        shim_pids_for(&self.sock)
    }

    /// Mounts left under this env's root and state dirs.
    pub fn leftover_mounts(&self) -> Vec<String> {
        let mut m = mounts_under(&self.root);
        m.extend(mounts_under(&self.state));
        m
    }

    /// Start `ctr events` in the background and wait until it is subscribed.
    pub fn events(&self) -> EventWatcher {
        let proc = self.ctr_spawn(&["events"]);
        let w = EventWatcher {
            proc,
            ns: self.ns.clone(),
        };
        // Probe: namespace label updates publish /namespaces/update in our namespace.
        let mut n = 0u32;
        wait_until("ctr events to subscribe", Duration::from_secs(20), || {
            n += 1;
            let label = format!("pvelxc.test.probe={n}");
            self.ctr(&["namespaces", "label", &self.ns, &label]);
            poll_until(Duration::from_millis(300), || {
                w.proc
                    .stdout_now()
                    .contains("/namespaces/update")
                    .then_some(())
            })
        });
        w
    }

    fn cleanup(&mut self) {
        if self.containerd.is_some() {
            let nss = stdout(&self.ctr(&["namespaces", "ls", "-q"]));
            for ns in nss.lines().map(str::trim).filter(|s| !s.is_empty()) {
                let ctr = |args: &[&str]| {
                    let mut cmd = Command::new("ctr");
                    cmd.arg("--address").arg(&self.sock).arg("-n").arg(ns);
                    cmd.args(args);
                    let p = BgProcess::spawn(cmd, None);
                    // never panic in Drop: bounded, errors ignored
                    let mut p = p;
                    let start = Instant::now();
                    while p.try_status().is_none() && start.elapsed() < Duration::from_secs(20) {
                        thread::sleep(Duration::from_millis(10));
                    }
                    let out = p.stdout_now();
                    p.kill();
                    out
                };
                let tasks = ctr(&["task", "ls", "-q"]);
                for t in tasks.lines().map(str::trim).filter(|s| !s.is_empty()) {
                    ctr(&["task", "kill", "-a", "-s", "SIGKILL", t]);
                    ctr(&["task", "rm", "-f", t]);
                }
                let cs = ctr(&["containers", "ls", "-q"]);
                for c in cs.lines().map(str::trim).filter(|s| !s.is_empty()) {
                    ctr(&["containers", "rm", c]);
                }
            }
        }
        self.stop_containerd();
        // Shims of tasks we could not delete: kill them and their children.
        let shims = self.shim_pids();
        if !shims.is_empty() {
            let set: HashSet<u32> = shims.iter().copied().collect();
            for p in all_pids() {
                if ppid(p).map(|pp| set.contains(&pp)).unwrap_or(false) {
                    kill_pid(p);
                }
            }
            for s in &shims {
                kill_pid(*s);
            }
            let _ = poll_until(Duration::from_secs(5), || {
                shims.iter().all(|s| !pid_alive(*s)).then_some(())
            });
        }
        // Unmount anything left, deepest first.
        let mut mounts = mounts_under(&self.dir);
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            if let Ok(c) = std::ffi::CString::new(m) {
                // SAFETY: umount2 on a path under our own temp dir.
                unsafe {
                    libc::umount2(c.as_ptr(), libc::MNT_DETACH);
                }
            }
        }
        // Stale shim sockets (a SIGKILLed shim cannot remove its own).
        let tokens: Vec<String> = self
            .ctr_tokens
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default();
        for t in tokens {
            let p = self.shim_socket_path(&t);
            if p.exists() {
                let _ = fs::remove_file(&p);
            }
        }
        // Per-namespace runtime state dirs (/run/containerd/runc/<ns>, /run/pvelxc/crun/<ns>...),
        // up to two levels under /run: our ns name is unique to this env.
        let mut bases = vec![PathBuf::from("/run")];
        if let Ok(rd) = fs::read_dir("/run") {
            bases.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
        for base in bases {
            if let Ok(rd) = fs::read_dir(&base) {
                for e in rd.flatten() {
                    let d = e.path().join(&self.ns);
                    if d.is_dir() {
                        let _ = fs::remove_dir_all(&d);
                    }
                }
            }
        }
        if std::env::var_os("PVELXC_TEST_KEEP").is_some() {
            eprintln!("PVELXC_TEST_KEEP: leaving {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// A row of `ctr task ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    pub id: String,
    pub pid: u32,
    pub status: String,
}

/// `ctr events` running in the background.
pub struct EventWatcher {
    proc: BgProcess,
    ns: String,
}

/// One event line: topic and JSON payload.
#[derive(Debug, Clone)]
pub struct Event {
    pub topic: String,
    pub payload: String,
}

impl EventWatcher {
    /// Events of our namespace seen so far, in order.
    pub fn events(&self) -> Vec<Event> {
        // "2026-11-26 00:22:34.29 +0000 UTC <ns> <topic> <json>"
        self.proc
            .stdout_now()
            .lines()
            .filter_map(|l| {
                let toks: Vec<&str> = l.splitn(7, ' ').collect();
                let utc = toks.iter().position(|t| *t == "UTC")?;
                let ns = toks.get(utc + 1)?;
                let topic = toks.get(utc + 2)?;
                if *ns != self.ns {
                    return None;
                }
                let payload = l
                    .split_once(&format!(" {topic} "))
                    .map(|(_, p)| p.to_string())
                    .unwrap_or_default();
                Some(Event {
                    topic: topic.to_string(),
                    payload,
                })
            })
            .collect()
    }

    pub fn topics(&self) -> Vec<String> {
        self.events().into_iter().map(|e| e.topic).collect()
    }

    /// Wait (bounded) until an event with `topic` whose payload contains `payload_has` shows up.
    pub fn wait_for(&self, topic: &str, payload_has: &str, timeout: Duration) -> Event {
        poll_until(timeout, || {
            self.events()
                .into_iter()
                .find(|e| e.topic == topic && e.payload.contains(payload_has))
        })
        .unwrap_or_else(|| {
            panic!(
                "no event {topic} (payload containing {payload_has:?}) within {timeout:?}; seen: {:#?}",
                self.topics()
            )
        })
    }

    /// Assert that `expected` topics appear in this order (as a subsequence) among events whose
    /// payload contains `payload_has`, waiting (bounded) for the last ones to arrive.
    pub fn assert_order(&self, expected: &[&str], payload_has: &str, timeout: Duration) {
        let check = || {
            let evs: Vec<Event> = self
                .events()
                .into_iter()
                .filter(|e| e.payload.contains(payload_has))
                .collect();
            let mut i = 0;
            for e in &evs {
                if i < expected.len() && e.topic == expected[i] {
                    i += 1;
                }
            }
            (i == expected.len()).then_some(())
        };
        if poll_until(timeout, check).is_none() {
            let seen: Vec<String> = self
                .events()
                .into_iter()
                .filter(|e| e.payload.contains(payload_has))
                .map(|e| e.topic)
                .collect();
            panic!("events not in the expected order\nexpected (subsequence): {expected:?}\nseen: {seen:#?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// PTY: run a command with a real controlling terminal whose size we control
// ---------------------------------------------------------------------------------------------

/// A child running on a pty we own (the child is session leader with the pty as its
/// controlling terminal, like a user's shell).
pub struct PtySession {
    child: Child,
    argv: String,
    master: OwnedFd,
    buf: Arc<Mutex<Vec<u8>>>,
    reader: Option<thread::JoinHandle<()>>,
}

fn winsize(rows: u16, cols: u16) -> libc::winsize {
    libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

impl PtySession {
    /// Spawn `cmd` on a new pty of `rows`x`cols`.
    pub fn spawn(mut cmd: Command, rows: u16, cols: u16) -> PtySession {
        let argv = argv_string(&cmd);
        let mut master: libc::c_int = -1;
        let mut slave: libc::c_int = -1;
        let ws = winsize(rows, cols);
        // SAFETY: openpty writes two fds; termios NULL = defaults.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &ws,
            )
        };
        assert_eq!(rc, 0, "openpty failed: {}", std::io::Error::last_os_error());
        // SAFETY: fresh fds from openpty, owned from here on.
        let master = unsafe { OwnedFd::from_raw_fd(master) };
        // SAFETY: as above, the other fresh fd of the pair.
        let slave = unsafe { OwnedFd::from_raw_fd(slave) };
        // SAFETY: set close-on-exec on the master so the child does not inherit it.
        unsafe {
            libc::fcntl(master.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC);
        }
        cmd.stdin(Stdio::from(slave.try_clone().expect("dup slave")))
            .stdout(Stdio::from(slave.try_clone().expect("dup slave")))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn `{argv}` on a pty: {e}"));
        let buf = Arc::new(Mutex::new(Vec::new()));
        let reader_fd = master.try_clone().expect("dup master");
        let b2 = buf.clone();
        let reader = thread::spawn(move || {
            let mut f = fs::File::from(reader_fd);
            let mut chunk = [0u8; 4096];
            loop {
                match f.read(&mut chunk) {
                    Ok(0) | Err(_) => break, // EIO once every slave fd is closed
                    Ok(n) => b2.lock().expect("pty buf").extend_from_slice(&chunk[..n]),
                }
            }
        });
        PtySession {
            child,
            argv,
            master,
            buf,
            reader: Some(reader),
        }
    }

    /// Output so far (raw, with \r\n).
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().expect("pty buf")).into_owned()
    }

    /// Type into the terminal.
    pub fn write(&self, data: &[u8]) {
        let mut f = fs::File::from(self.master.try_clone().expect("dup master"));
        f.write_all(data).expect("write to pty master");
    }

    /// Resize the terminal; the kernel sends SIGWINCH to the foreground process group.
    pub fn set_size(&self, rows: u16, cols: u16) {
        let ws = winsize(rows, cols);
        // SAFETY: TIOCSWINSZ with a valid winsize on our master fd.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ as _, &ws) };
        assert_eq!(rc, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
    }

    /// Wait (bounded) until the output contains `needle`.
    pub fn wait_output_contains(&mut self, needle: &str, timeout: Duration) {
        let start = Instant::now();
        loop {
            if self.output().contains(needle) {
                return;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                thread::sleep(Duration::from_millis(100));
                if self.output().contains(needle) {
                    return;
                }
                panic!(
                    "`{}` exited ({st}) before printing {needle:?}; output: {:?}",
                    self.argv,
                    self.output()
                );
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {needle:?} from `{}`; output: {:?}",
                    self.argv,
                    self.output()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait (bounded) for exit; returns (exit code or 128+signal, output).
    pub fn finish(mut self, timeout: Duration) -> (i32, String) {
        let start = Instant::now();
        let st = loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                break st;
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "`{}` (on a pty) did not finish within {timeout:?}; output: {:?}",
                    self.argv,
                    self.output()
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        if let Some(r) = self.reader.take() {
            let deadline = Instant::now() + Duration::from_secs(3);
            while !r.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
        }
        let code = st
            .code()
            .or_else(|| st.signal().map(|s| 128 + s))
            .unwrap_or(-1);
        (code, self.output())
    }
}

impl Drop for PtySession {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Run `cmd` on a pty of the given size to completion (bounded).
pub fn run_in_pty(cmd: Command, rows: u16, cols: u16, timeout: Duration) -> (i32, String) {
    PtySession::spawn(cmd, rows, cols).finish(timeout)
}
