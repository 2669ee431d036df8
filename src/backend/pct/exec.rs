//! Exec: `pct exec VMID -- /.pvelxc/init exec /.pvelxc/exec-<id>.json` (spec written by the host into D) as the shim's own child
//! with the exec's stdio (pipes, or a host pty for terminal=true); exit code and output come
//! straight back through `pct exec` (lxc-attach). Signals go to the process itself (host pid
//! found below the `pct exec` process, in the CT's pid namespace).

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::Arc;

use oci_spec::runtime::Process;

use super::cmd::PctCommand;
use super::ctdir::{CtDir, CT_DIR};
use super::vmid::Vmid;
use crate::backend::Spawned;
use crate::error::{Error, Result};
use crate::sys::reaper;
use crate::sys::stdio::{ProcessIo, StdioPaths};

/// File-name-safe form of an exec id (ids come from clients).
pub fn safe_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if out != s {
        // Keep sanitised ids distinct.
        let mut h: u32 = 0x811c9dc5;
        for b in s.bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x01000193);
        }
        out.push_str(&format!("-{h:08x}"));
    }
    out
}

/// Spawn the exec inside the pod container whose process has the in-CT pid `into` (Some), or
/// in the CT itself (None); `dir` is the CT's host directory D (the spec goes there: the CT
/// can read it but cannot plant or replace anything in D).
pub fn spawn_in(
    pct: &str,
    vmid: Vmid,
    dir: &Arc<CtDir>,
    exec_id: &str,
    process: &Process,
    stdio: &StdioPaths,
    into: Option<u32>,
) -> Result<Spawned> {
    let name = safe_name(exec_id);
    let in_ct = dir.write_exec_spec(&name, process)?;
    let mut args = vec![OsString::from(format!("{CT_DIR}/init"))];
    match into {
        Some(pid) => args.extend(["exec-in".into(), OsString::from(pid.to_string())]),
        None => args.push("exec".into()),
    }
    args.push(in_ct.into());
    let (io, child) = ChildStdio::new(stdio, process)?;
    let (pid, exit) = match spawn_pct_exec(pct, vmid, args, child) {
        Ok(v) => v,
        Err(e) => {
            dir.remove_exec_spec(&name);
            return Err(e);
        }
    };
    let spec_dir = dir.clone();
    Ok(Spawned {
        pid,
        io,
        exit: Box::pin(async move {
            let code = exit.await.unwrap_or_else(|_| reaper::Exit::new(255));
            spec_dir.remove_exec_spec(&name);
            code
        }),
    })
}

/// The child's ends of a process's stdio, made before the process exists (a pod container's
/// are made at Create, its process spawned at Start).
pub enum ChildStdio {
    Pty(OwnedFd),
    Pipes([Option<OwnedFd>; 3]),
}

impl ChildStdio {
    /// Pipes (or a host pty for terminal=true, sized as the process asks): the shim's ends as
    /// [`ProcessIo`], the child's kept here.
    pub fn new(stdio: &StdioPaths, process: &Process) -> Result<(ProcessIo, ChildStdio)> {
        if stdio.terminal {
            let pty = nix::pty::openpty(None, None).map_err(Error::from)?;
            if let Some(cs) = process.console_size() {
                let _ = crate::sys::stdio::resize_pty(
                    &pty.master,
                    u32::try_from(cs.width()).unwrap_or(u32::MAX),
                    u32::try_from(cs.height()).unwrap_or(u32::MAX),
                );
            }
            return Ok((
                ProcessIo::Pty { master: pty.master },
                ChildStdio::Pty(pty.slave),
            ));
        }
        let (mine, theirs) = stdio.pipes()?;
        Ok((ProcessIo::pipes(mine), ChildStdio::Pipes(theirs)))
    }
}

/// `pct exec VMID -- ARGS` as the shim's child with `stdio`: its pid and exit.
pub fn spawn_pct_exec(
    pct: &str,
    vmid: Vmid,
    args: Vec<OsString>,
    stdio: ChildStdio,
) -> Result<(u32, tokio::sync::oneshot::Receiver<reaper::Exit>)> {
    let argv = PctCommand::Exec {
        vmid,
        keep_env: None,
        args,
    }
    .argv()
    .map_err(|e| Error::invalid(format!("pct exec: {e}")))?;
    let mut cmd = std::process::Command::new(pct);
    cmd.args(argv);
    match stdio {
        ChildStdio::Pty(slave) => {
            cmd.stdin(Stdio::from(dup(&slave)?))
                .stdout(Stdio::from(dup(&slave)?))
                .stderr(Stdio::from(slave));
            // SAFETY: setsid and ioctl are async-signal-safe; nothing else runs before exec.
            unsafe {
                cmd.pre_exec(|| {
                    nix::unistd::setsid().map_err(std::io::Error::from)?;
                    if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        ChildStdio::Pipes(fds) => {
            let [i, o, e] = fds.map(|f| f.map(Stdio::from).unwrap_or_else(Stdio::null));
            cmd.stdin(i).stdout(o).stderr(e);
        }
    }
    let child = cmd
        .spawn()
        .map_err(|e| Error::io(format!("spawn {pct} exec"), e))?;
    drop(cmd);
    let pid = child.id();
    Ok((pid, reaper::watch(pid as i32)))
}

fn dup(fd: &OwnedFd) -> Result<OwnedFd> {
    fd.try_clone().map_err(|e| Error::io("dup pty", e))
}

fn pid_ns(pid: u32) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
}

/// Direct children of `pid` (every thread's), from /proc.
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in rd.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out
}

/// The exec's own process(es): the first descendants of `pct exec` that live in another pid
/// namespace (the CT's). Empty while lxc-attach is still setting up.
pub fn ct_processes(pct_exec_pid: u32) -> Vec<u32> {
    let Some(mine) = pid_ns(std::process::id()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut queue = vec![pct_exec_pid];
    let mut seen = 0usize;
    while let Some(p) = queue.pop() {
        seen += 1;
        if seen > 256 {
            break;
        }
        for c in children(p) {
            match pid_ns(c) {
                Some(ns) if ns != mine => out.push(c),
                Some(_) => queue.push(c),
                None => {}
            }
        }
    }
    out
}

/// Signal an exec: its process in the CT, else (not there yet) the `pct exec` process.
pub fn kill(pct_exec_pid: u32, signal: u32) -> Result<()> {
    let sig = nix::sys::signal::Signal::try_from(signal as i32)
        .map_err(|_| Error::invalid(format!("invalid signal {signal}")))?;
    let mut targets = ct_processes(pct_exec_pid);
    if targets.is_empty() {
        targets.push(pct_exec_pid);
    }
    let mut res = Ok(());
    for p in targets {
        if let Err(e) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p as i32), sig) {
            res = Err(if e == nix::errno::Errno::ESRCH {
                Error::NotFound("process already finished".into())
            } else {
                Error::from(e)
            });
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(safe_name("e1"), "e1");
        assert!(safe_name("a/b").starts_with("a_b-"));
        assert_ne!(safe_name("a/b"), safe_name("a.b"));
    }
}
