//! Running external programs (crun, runc, pct, ...): argv vectors only, never a shell; exits come
//! from the shim's reaper; every call is bounded by a timeout.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::error::{Error, Result};
use crate::sys::fdio::FdIo;
use crate::sys::reaper;

#[derive(Debug, Clone)]
pub struct Output {
    pub code: u32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

/// A prepared invocation.
pub struct Cmd {
    argv: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    stdin: Option<OwnedFd>,
    timeout: Duration,
    grace: Option<Duration>,
    /// Execute this file descriptor instead of looking argv\[0\] up (which stays the name).
    exec_fd: Option<OwnedFd>,
}

impl Cmd {
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Cmd {
            argv: argv.into_iter().map(Into::into).collect(),
            envs: Vec::new(),
            stdin: None,
            timeout: Duration::from_secs(60),
            grace: None,
            exec_fd: None,
        }
    }

    /// Run the program held by `fd` (e.g. a sealed copy of the binary) with the same argv.
    pub fn exec_fd(mut self, fd: OwnedFd) -> Self {
        self.exec_fd = Some(fd);
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// On timeout, SIGTERM first and wait `g` before SIGKILL (a CLI that holds a lock gets
    /// the chance to release it).
    pub fn grace(mut self, g: Duration) -> Self {
        self.grace = Some(g);
        self
    }

    pub fn env(mut self, k: impl Into<OsString>, v: impl Into<OsString>) -> Self {
        self.envs.push((k.into(), v.into()));
        self
    }

    pub fn stdin(mut self, fd: OwnedFd) -> Self {
        self.stdin = Some(fd);
        self
    }

    pub fn display(&self) -> String {
        self.argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Run to completion, capturing stdout and stderr.
    /// [`Cmd::output`], with a non-zero exit as an internal error naming the command, its
    /// exit code and its (cleaned) stderr; stdout on success.
    pub async fn checked_stdout(self) -> Result<String> {
        let shown = self.display();
        let out = self.output().await?;
        if !out.success() {
            return Err(Error::internal(format!(
                "{shown}: exit {}: {}",
                out.code,
                pvelxc_init::proto::clean_text(out.stderr.trim())
            )));
        }
        Ok(out.stdout)
    }

    pub async fn output(self) -> Result<Output> {
        let shown = self.display();
        let Some((prog, args)) = self.argv.split_first() else {
            return Err(Error::internal("empty command"));
        };
        let (out_r, out_w) = crate::sys::fdio::pipe().map_err(|e| Error::io("pipe", e))?;
        let (err_r, err_w) = crate::sys::fdio::pipe().map_err(|e| Error::io("pipe", e))?;
        let mut cmd = program(prog, self.exec_fd.as_ref());
        cmd.args(args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::from(out_w))
            .stderr(Stdio::from(err_w))
            .stdin(match self.stdin {
                Some(fd) => Stdio::from(fd),
                None => Stdio::null(),
            });
        let child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::precondition(format!("{}: executable not found", prog.to_string_lossy()))
            }
            _ => Error::io(format!("spawn {}", prog.to_string_lossy()), e),
        })?;
        drop(cmd); // closes our copies of the write ends
        drop(self.exec_fd);
        let pid = child.id() as i32;
        let exit = reaper::watch(pid);
        let read_all = |fd: OwnedFd| async move {
            let mut s = Vec::new();
            if let Ok(mut io) = FdIo::new(fd) {
                let _ = io.read_to_end(&mut s).await;
            }
            String::from_utf8_lossy(&s).into_owned()
        };
        let work = async {
            let (o, e) = tokio::join!(read_all(out_r), read_all(err_r));
            let code = exit.await.map(|x| x.code).unwrap_or(255);
            (o, e, code)
        };
        tokio::pin!(work);
        let signal = |sig| {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        };
        match tokio::time::timeout(self.timeout, &mut work).await {
            Ok((stdout, stderr, code)) => Ok(Output {
                code,
                stdout,
                stderr,
            }),
            Err(_) => {
                let mut how = "killed";
                let mut ended = false;
                if let Some(g) = self.grace {
                    signal(nix::sys::signal::Signal::SIGTERM);
                    ended = tokio::time::timeout(g, &mut work).await.is_ok();
                    how = if ended {
                        "terminated"
                    } else {
                        "killed after SIGTERM"
                    };
                }
                if !ended {
                    signal(nix::sys::signal::Signal::SIGKILL);
                    let _ = tokio::time::timeout(Duration::from_secs(5), &mut work).await;
                }
                log::warn!(
                    "`{shown}` did not finish within {}s: {how}",
                    self.timeout.as_secs()
                );
                Err(Error::DeadlineExceeded(format!(
                    "`{shown}` did not finish within {}s ({how})",
                    self.timeout.as_secs()
                )))
            }
        }
    }
}

/// A `Command` for `prog`, or for the program in `exec_fd` with `prog` as its argv\[0\].
pub fn program(prog: &std::ffi::OsStr, exec_fd: Option<&OwnedFd>) -> Command {
    use std::os::unix::process::CommandExt;
    match exec_fd {
        Some(fd) => {
            use std::os::fd::AsRawFd;
            let mut c = Command::new(format!("/proc/self/fd/{}", fd.as_raw_fd()));
            c.arg0(prog);
            c
        }
        None => Command::new(prog),
    }
}

pub fn which(prog: &str) -> std::result::Result<std::path::PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &std::path::Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if prog.contains('/') {
        let p = std::path::PathBuf::from(prog);
        return if is_exec(&p) {
            Ok(p)
        } else {
            Err(format!("{prog} does not exist or is not executable"))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| is_exec(p))
        .ok_or_else(|| format!("{prog} not found on PATH"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn captures_output_and_code() {
        reaper::start().expect("reaper");
        let o = Cmd::new(["/bin/sh", "-c", "echo out; echo err >&2; exit 4"])
            .output()
            .await
            .expect("run");
        assert_eq!(o.stdout, "out\n");
        assert_eq!(o.stderr, "err\n");
        assert_eq!(o.code, 4);
        let e = Cmd::new(["/bin/sleep", "5"])
            .timeout(Duration::from_millis(200))
            .output()
            .await
            .expect_err("timeout");
        assert!(e.to_string().contains("did not finish"));
        let e = Cmd::new(["/nonexistent/prog"])
            .output()
            .await
            .expect_err("missing");
        assert!(e.to_string().contains("not found"));
    }

    #[test]
    fn which_finds_sh() {
        assert!(which("sh").is_ok());
        assert!(which("definitely-not-a-program-xyz").is_err());
    }
}
