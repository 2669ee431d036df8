//! Starts a process inside the rootfs with an OCI-like [`Process`] applied.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::fcntl::OFlag;
use nix::pty::{posix_openpt, ptsname_r, unlockpt};
use pvelxc_agent::proto::Process;

use super::setup::ROOTFS;

/// The agent's ends of a new process's stdio.
pub struct Spawned {
    pub pid: u32,
    pub stdin: File,
    pub stdout: File,
    /// `None` with a terminal (stderr is merged into the pty).
    pub stderr: Option<File>,
    /// The pty master, for resizes.
    pub pty: Option<File>,
}

/// Everything the child needs after fork, prepared up front (no allocation after fork).
struct Prepared {
    root: CString,
    cwd: CString,
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
    rlimits: Vec<(libc::__rlimit_resource_t, libc::rlimit)>,
    tty: bool,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn rlimit_resource(kind: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match kind {
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        _ => return None,
    })
}

fn prepare(p: &Process) -> io::Result<Prepared> {
    let cwd = if p.cwd.is_empty() {
        "/"
    } else {
        p.cwd.as_str()
    };
    let mut rlimits = Vec::new();
    for r in &p.rlimits {
        let res = rlimit_resource(&r.kind)
            .ok_or_else(|| invalid(format!("unknown rlimit {}", r.kind)))?;
        rlimits.push((
            res,
            libc::rlimit {
                rlim_cur: r.soft,
                rlim_max: r.hard,
            },
        ));
    }
    Ok(Prepared {
        root: CString::new(ROOTFS).map_err(|e| invalid(e.to_string()))?,
        cwd: CString::new(cwd).map_err(|e| invalid(format!("cwd: {e}")))?,
        uid: p.uid,
        gid: p.gid,
        groups: p.additional_gids.clone(),
        rlimits,
        tty: p.terminal,
    })
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Runs in the child between fork and exec: async-signal-safe calls only.
fn child_setup(p: &Prepared) -> io::Result<()> {
    // SAFETY: plain syscalls on data prepared before fork; no allocation, no locks.
    unsafe {
        check(libc::setsid())?;
        if p.tty {
            check(libc::ioctl(0, libc::TIOCSCTTY, 0))?;
        }
        for (res, lim) in &p.rlimits {
            check(libc::setrlimit(*res, lim))?;
        }
        check(libc::chroot(p.root.as_ptr()))?;
        check(libc::chdir(p.cwd.as_ptr()))?;
        check(libc::setgroups(p.groups.len(), p.groups.as_ptr()))?;
        check(libc::setgid(p.gid))?;
        check(libc::setuid(p.uid))?;
    }
    Ok(())
}

/// A new pty pair: (master, slave), both close-on-exec.
fn open_pty(size: Option<(u16, u16)>) -> io::Result<(File, File)> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)?;
    unlockpt(&master)?;
    let name = ptsname_r(&master)?;
    let slave = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(&name)?;
    let master = File::from(OwnedFd::from(master));
    if let Some((rows, cols)) = size {
        resize(&master, rows, cols)?;
    }
    Ok((master, slave))
}

/// Sets a pty's window size (delivers SIGWINCH to its foreground group).
pub fn resize(master: &File, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer.
    check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) })
}

fn command(p: &Process) -> io::Result<Command> {
    let (prog, rest) = p
        .args
        .split_first()
        .ok_or_else(|| invalid("empty args".into()))?;
    let mut cmd = Command::new(prog);
    cmd.args(rest).env_clear();
    for kv in &p.env {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => cmd.env(k, v),
            _ => return Err(invalid(format!("bad env entry {kv:?}"))),
        };
    }
    let prepared = prepare(p)?;
    // SAFETY: child_setup only makes async-signal-safe syscalls.
    unsafe {
        cmd.pre_exec(move || child_setup(&prepared));
    }
    Ok(cmd)
}

/// Forks and execs `p` chrooted into the rootfs. The caller must hold the process-table lock so the
/// reaper cannot collect the child before it is registered.
pub fn spawn(p: &Process) -> io::Result<Spawned> {
    let mut cmd = command(p)?;
    if p.terminal {
        let (master, slave) = open_pty(p.console_size)?;
        cmd.stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave));
        let child = cmd.spawn()?;
        drop(cmd); // closes the agent's copies of the slave
        return Ok(Spawned {
            pid: child.id(),
            stdin: master.try_clone()?,
            stdout: master.try_clone()?,
            stderr: None,
            pty: Some(master),
        });
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let pipe = |fd: Option<OwnedFd>| {
        fd.map(File::from)
            .ok_or_else(|| io::Error::other("missing pipe"))
    };
    Ok(Spawned {
        pid: child.id(),
        stdin: pipe(child.stdin.take().map(OwnedFd::from))?,
        stdout: pipe(child.stdout.take().map(OwnedFd::from))?,
        stderr: Some(pipe(child.stderr.take().map(OwnedFd::from))?),
        pty: None,
    })
}
