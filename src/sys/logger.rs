//! containerd's binary logging protocol (`binary:///path/to/logger?key=value`), as nerdctl and
//! `ctr run --log-uri binary://…` use it.
//!
//! The shim starts the logger with the container's stdout pipe as fd 3, its stderr pipe as fd 4
//! and the write end of a "ready" pipe as fd 5; the environment is exactly `CONTAINER_ID` and
//! `CONTAINER_NAMESPACE`; the arguments are the URI's query pairs (`key value ...`, in the
//! order written); stdin/stdout/stderr are /dev/null. The logger says it is ready by writing a
//! byte to fd 5 or closing it; the shim waits for that (bounded) before the process runs. The
//! logger sees EOF on fds 3 and 4 when the container's output ends; when the process is
//! deleted it gets SIGTERM, and SIGKILL [`EXIT_GRACE`] later if it is still there.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::error::{Error, Result};
use crate::sys::fdio::{self, FdIo};
use crate::sys::reaper;

/// How long a logger may take to say it is ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a logger may take to exit after SIGTERM (containerd's shim allows 12 s).
pub const EXIT_GRACE: Duration = Duration::from_secs(12);

/// A parsed `binary://` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggerUri {
    pub path: PathBuf,
    pub args: Vec<String>,
}

/// Parse `binary:///abs/path?k=v&k2=v2` (percent-escapes decoded, `+` is a space, as Go's
/// url.Query does). The path must be absolute and the binary is not looked up on PATH.
pub fn parse(uri: &str) -> Result<LoggerUri> {
    let rest = uri
        .strip_prefix("binary://")
        .ok_or_else(|| Error::invalid(format!("{uri}: not a binary:// URI")))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let path = decode(path, false).map_err(|e| Error::invalid(format!("{uri}: {e}")))?;
    if !path.starts_with('/') {
        return Err(Error::invalid(format!(
            "{uri}: the logger must be an absolute path (binary:///path/to/logger)"
        )));
    }
    let mut args = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        args.push(decode(k, true).map_err(|e| Error::invalid(format!("{uri}: {e}")))?);
        args.push(decode(v, true).map_err(|e| Error::invalid(format!("{uri}: {e}")))?);
    }
    Ok(LoggerUri {
        path: PathBuf::from(path),
        args,
    })
}

fn decode(s: &str, plus_is_space: bool) -> std::result::Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad escape in {s:?}"))?;
                out.push(hex);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    let s = String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))?;
    if s.contains('\0') {
        return Err("a NUL byte".into());
    }
    Ok(s)
}

/// A started logger: the write ends the container's output goes to.
pub struct Logger {
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub pid: u32,
}

/// Start the logger of `uri` for container `id` in `namespace` and wait until it is ready.
pub async fn start(uri: &str, id: &str, namespace: &str) -> Result<Logger> {
    let u = parse(uri)?;
    let io = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| Error::io(what, e)
    };
    let (out_r, out_w) = fdio::pipe().map_err(io("pipe"))?;
    let (err_r, err_w) = fdio::pipe().map_err(io("pipe"))?;
    let (ready_r, ready_w) = fdio::pipe().map_err(io("pipe"))?;
    let fds = [out_r.as_raw_fd(), err_r.as_raw_fd(), ready_w.as_raw_fd()];
    let mut cmd = Command::new(&u.path);
    cmd.args(&u.args)
        .env_clear()
        .env("CONTAINER_ID", id)
        .env("CONTAINER_NAMESPACE", namespace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: only dup2 (async-signal-safe) runs between fork and exec; dup2 onto 3, 4, 5
    // clears close-on-exec there. The sources are first moved above 5 so that no dup2
    // overwrites a source that is still to be copied.
    unsafe {
        cmd.pre_exec(move || {
            let mut high = [0; 3];
            for (i, fd) in fds.iter().enumerate() {
                let h = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10);
                if h < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                high[i] = h;
            }
            for (i, h) in high.iter().enumerate() {
                if libc::dup2(*h, 3 + i as libc::c_int) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| Error::precondition(format!("start the logger {}: {e}", u.path.display())))?;
    let pid = child.id();
    drop(child); // the shim's reaper collects it
    drop((out_r, err_r, ready_w));
    let exit = reaper::watch(pid as i32);
    let logger = u.path.display().to_string();
    // Log how it ended, whenever it does (and claim the exit from the reaper).
    tokio::spawn(async move {
        if let Ok(e) = exit.await {
            if e.code != 0 {
                log::warn!("logger {logger} (pid {pid}) exited {}", e.code);
            }
        }
    });
    let mut r = FdIo::new(ready_r).map_err(io("ready pipe"))?;
    let mut b = [0u8; 1];
    match tokio::time::timeout(READY_TIMEOUT, r.read(&mut b)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            kill(pid);
            return Err(Error::io(
                format!("read the ready pipe of {}", u.path.display()),
                e,
            ));
        }
        Err(_) => {
            kill(pid);
            return Err(Error::DeadlineExceeded(format!(
                "the logger {} did not say it was ready within {} s",
                u.path.display(),
                READY_TIMEOUT.as_secs()
            )));
        }
    }
    Ok(Logger {
        stdout: out_w,
        stderr: err_w,
        pid,
    })
}

pub fn kill(pid: u32) {
    if let Ok(p) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// The process is being deleted: SIGTERM the logger now (its input is closed, so it can flush
/// and exit), SIGKILL it if it is still there after [`EXIT_GRACE`] — as containerd's own shim
/// does.
pub fn terminate(pid: u32) {
    let Ok(p) = i32::try_from(pid) else {
        return;
    };
    if !alive(pid) {
        return;
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(p),
        nix::sys::signal::Signal::SIGTERM,
    );
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + EXIT_GRACE;
        while tokio::time::Instant::now() < deadline {
            if !alive(pid) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        log::warn!(
            "logger pid {pid} still running {} s after SIGTERM: killed",
            EXIT_GRACE.as_secs()
        );
        kill(pid);
    });
}

/// Whether `pid` still exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        let u = parse(
            "binary:///usr/bin/nerdctl?_NERDCTL_INTERNAL_LOGGING=%2Fvar%2Flib%2Fnerdctl%2F1935db59",
        )
        .expect("parse");
        assert_eq!(u.path, PathBuf::from("/usr/bin/nerdctl"));
        assert_eq!(
            u.args,
            ["_NERDCTL_INTERNAL_LOGGING", "/var/lib/nerdctl/1935db59"]
        );
        let u = parse("binary:///opt/log%20ger?b=2&a=x+y&flag").expect("parse");
        assert_eq!(u.path, PathBuf::from("/opt/log ger"));
        assert_eq!(u.args, ["b", "2", "a", "x y", "flag", ""]);
        assert_eq!(
            parse("binary:///l").expect("bare").args,
            Vec::<String>::new()
        );
        for bad in [
            "binary://relative/logger",
            "binary:///l?a=%zz",
            "binary:///l?a=%00",
            "binary:///l%ff",
            "file:///l",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
