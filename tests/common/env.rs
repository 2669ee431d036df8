//! [`TestEnv`]: a private containerd per test, with its own root, state, socket (under
//! `/tmp/pvt-*`) and a unique namespace. It never talks to the system containerd, and on Drop
//! deletes every task and container it finds, stops containerd, kills the shims it left, unmounts
//! and removes everything (bounded, never panicking). `ctr` helpers are in [`super::ctr`].

use super::procfs::{all_pids, ppid, send_signal};
use super::{kill_pid, mounts_under, pid_alive, poll_until, runtime, shim_dir, stdout, BgProcess};
use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

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
    pub(super) dir: PathBuf,
    pub(super) root: PathBuf,
    pub(super) state: PathBuf,
    pub(super) sock: PathBuf,
    pub(super) config: PathBuf,
    pub(super) ns: String,
    pub(super) envs: Vec<(OsString, OsString)>,
    pub(super) wrap: Vec<OsString>,
    pub(super) containerd: Option<Child>,
    pub(super) rootfs_counter: AtomicU32,
    pub(super) image_imported: std::cell::Cell<bool>,
    pub(super) ctr_tokens: Mutex<HashSet<String>>,
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

    pub(super) fn log_tail(&self) -> String {
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
