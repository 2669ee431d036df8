//! `ctr` against a [`TestEnv`]'s containerd: argv only, each invocation bounded by
//! [`CTR_TIMEOUT`]; runs of the busybox rootfs and image; task queries; and the output
//! assertions the scenarios share.

use super::{
    describe, exit_code, fixtures, mounts_under, poll_until, run_cmd, run_ok, runtime,
    shim_pids_for, stderr, stdout, BgProcess, TestEnv, BUSYBOX_IMAGE, CONTAINER_PATH, CTR_TIMEOUT,
};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

/// A script with output on both streams and a non-zero exit code.
pub const SCRIPT: &str = "echo hello; echo err >&2; exit 3";

/// `out` is what [`SCRIPT`] gives: exit code 3, `hello` on stdout, `err` on stderr.
pub fn assert_hello_err_3(what: &str, out: &Output) {
    assert_eq!(exit_code(out), 3, "{what}: exit code\n{}", describe(out));
    assert_eq!(stdout(out), "hello\n", "{what}: stdout\n{}", describe(out));
    assert!(
        stderr(out).contains("err"),
        "{what}: stderr must carry 'err'\n{}",
        describe(out)
    );
}

/// A row of `ctr task ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    pub id: String,
    pub pid: u32,
    pub status: String,
}

impl TestEnv {
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

    pub(super) fn ctr_quiet(&self, args: &[&str]) -> bool {
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

    /// The shim binary run as containerd runs its actions (`start`, `delete`) for container
    /// `id` of this env's namespace, in `dir` (the bundle).
    pub fn shim_action(&self, id: &str, action: &str, dir: &Path) -> Command {
        let mut c = Command::new(super::shim_dir().join(super::SHIM_BINARY));
        c.args(["-namespace", self.ns(), "-address"])
            .arg(self.address())
            .args(["-id", id, action])
            .current_dir(dir)
            .env(
                "TTRPC_ADDRESS",
                format!("{}.ttrpc", self.address().display()),
            );
        c
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
}
