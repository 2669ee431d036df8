//! Child processes with bounded waits: every external command is an argv vector (no shell), every
//! wait is bounded and panics naming what it waited for, and a child still running when its
//! handle drops is killed (it is our own child).

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub(super) fn argv_string(cmd: &Command) -> String {
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
