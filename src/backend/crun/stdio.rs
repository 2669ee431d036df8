//! Running the runtime (`create`, `exec`) with the process's stdio: a console socket for a
//! terminal, pipes otherwise; and the pid files it writes.

use std::path::{Path, PathBuf};

use super::cli::{self, Runtime};
use crate::error::{Error, Result};
use crate::sys::console::ConsoleSocket;
use crate::sys::reaper;
use crate::sys::stdio::{ProcessIo, StdioPaths};

/// Run `args` (create or exec) with the process's stdio wired up: a console socket for a
/// terminal, pipes otherwise. Returns the shim's ends and, for a tty, nothing else.
pub(super) async fn spawn_with_stdio(
    rt: &Runtime,
    args: &mut Vec<std::ffi::OsString>,
    id: &str,
    stdio: &StdioPaths,
    bundle: &Path,
    tag: &str,
) -> Result<(ProcessIo, Option<u32>)> {
    if stdio.terminal {
        let sock_path = console_path(bundle, tag);
        let sock = ConsoleSocket::bind(&sock_path)?;
        args.push("--console-socket".into());
        args.push(sock.path().as_os_str().to_owned());
        args.push(id.into());
        // The runtime may fail before it ever connects: never wait on the socket alone.
        let run = rt.run(args.clone());
        let recv = sock.receive();
        tokio::pin!(run, recv);
        let master = tokio::select! {
            r = &mut run => {
                r?;
                tokio::time::timeout(std::time::Duration::from_secs(10), recv)
                    .await
                    .map_err(|_| Error::internal("the runtime sent no terminal on its console socket"))??
            }
            m = &mut recv => {
                let m = m?;
                run.await?;
                m
            }
        };
        return Ok((ProcessIo::Pty { master }, None));
    }
    args.push(id.into());
    let (mine, theirs) = stdio.pipes()?;
    let theirs = theirs
        .into_iter()
        .map(|t| t.map_or_else(std::process::Stdio::null, std::process::Stdio::from))
        .collect();
    run_with_stdio(rt, args.clone(), theirs).await?;
    Ok((ProcessIo::pipes(mine), None))
}

/// Run the runtime with the given stdio for the process it starts (it is inherited).
async fn run_with_stdio(
    rt: &Runtime,
    args: Vec<std::ffi::OsString>,
    stdio: Vec<std::process::Stdio>,
) -> Result<()> {
    let argv = rt.argv(args);
    let shown = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut it = stdio.into_iter();
    let (Some(i), Some(o), Some(e)) = (it.next(), it.next(), it.next()) else {
        return Err(Error::internal("stdio"));
    };
    let Some((prog, rest)) = argv.split_first() else {
        return Err(Error::internal("empty argv"));
    };
    let exec_fd = rt.program();
    let mut cmd = crate::sys::command::program(prog, exec_fd.as_ref());
    cmd.args(rest).stdin(i).stdout(o).stderr(e);
    let child = cmd
        .spawn()
        .map_err(|e| Error::io(format!("spawn {}", prog.to_string_lossy()), e))?;
    drop(cmd);
    drop(exec_fd);
    let code = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        reaper::watch(child.id() as i32),
    )
    .await
    .map_err(|_| Error::DeadlineExceeded(format!("`{shown}` did not finish within 60s")))?
    .map(|x| x.code)
    .unwrap_or(255);
    if code != 0 {
        let msg = std::fs::read_to_string(Path::new(&rt.log))
            .ok()
            .and_then(|t| cli::last_log_msg(&t))
            .unwrap_or_else(|| format!("exit status {code}"));
        return Err(Error::Internal(format!("{}: {msg}", rt.binary)));
    }
    Ok(())
}

fn console_path(bundle: &Path, tag: &str) -> PathBuf {
    // Keep it short (sun_path is 108 bytes): a hash of the bundle under /run/pvelxc/c.
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("{}/{tag}", bundle.display()).as_bytes());
    let name: String = h.iter().take(10).map(|b| format!("{b:02x}")).collect();
    let dir = PathBuf::from("/run/pvelxc/c");
    let _ = std::fs::create_dir_all(&dir);
    dir.join(name)
}

pub(super) fn read_pid(path: &Path) -> Result<u32> {
    let s = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    s.trim()
        .parse()
        .map_err(|_| Error::internal(format!("bad pid file {}: {s:?}", path.display())))
}
