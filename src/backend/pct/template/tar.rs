//! Running GNU tar (or any packer argv) under a deadline: never a shell, stdout discarded,
//! stderr kept up to [`STDERR_MAX`] bytes. On timeout the process gets SIGTERM, then SIGKILL
//! after a grace period; the caller removes whatever it had half-written.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;

use crate::error::{Error, Result};
use crate::sys::fdio::FdIo;
use crate::sys::reaper;

/// Kept of the packer's stderr; the rest is read and dropped.
pub const STDERR_MAX: usize = 64 * 1024;
/// Between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(5);

/// `tar --create --sparse --numeric-owner --file OUT --directory SRC .` (GNU tar).
pub fn pack_argv(src: &Path, out: &Path) -> Vec<OsString> {
    vec![
        "tar".into(),
        "--create".into(),
        "--sparse".into(),
        "--numeric-owner".into(),
        "--file".into(),
        out.as_os_str().to_owned(),
        "--directory".into(),
        src.as_os_str().to_owned(),
        ".".into(),
    ]
}

/// Exit code and (bounded) stderr of a finished run.
#[derive(Debug)]
pub struct Finished {
    pub code: u32,
    pub stderr: String,
}

/// Run `argv` to completion within `timeout`; on timeout TERM, `grace`, KILL, and a
/// `DeadlineExceeded` error that says which signal ended it.
pub async fn run(argv: &[OsString], timeout: Duration, grace: Duration) -> Result<Finished> {
    let Some((prog, args)) = argv.split_first() else {
        return Err(Error::internal("empty command"));
    };
    let shown = prog.to_string_lossy().into_owned();
    let (err_r, err_w) = crate::sys::fdio::pipe().map_err(|e| Error::io("pipe", e))?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(err_w));
    let child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::precondition(format!("{shown}: executable not found"))
        }
        _ => Error::io(format!("spawn {shown}"), e),
    })?;
    drop(cmd); // our copy of the write end
    let pid = Pid::from_raw(child.id() as i32);
    let mut exit = reaper::watch(pid.as_raw());
    let read_err = async move {
        let mut kept = Vec::new();
        if let Ok(mut io) = FdIo::new(err_r) {
            let mut buf = vec![0u8; 8192];
            while let Ok(n) = io.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let room = STDERR_MAX.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
        String::from_utf8_lossy(&kept).into_owned()
    };
    let work = async {
        let (stderr, code) = tokio::join!(read_err, &mut exit);
        Finished {
            code: code.map(|x| x.code).unwrap_or(255),
            stderr,
        }
    };
    if let Ok(done) = tokio::time::timeout(timeout, work).await {
        return Ok(done);
    }
    let _ = kill(pid, Signal::SIGTERM);
    let how = if tokio::time::timeout(grace, &mut exit).await.is_ok() {
        "SIGTERM"
    } else {
        let _ = kill(pid, Signal::SIGKILL);
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut exit).await;
        "SIGKILL after SIGTERM was ignored"
    };
    Err(Error::DeadlineExceeded(format!(
        "{shown} did not finish within {}s; killed ({how})",
        timeout.as_secs_f64()
    )))
}
