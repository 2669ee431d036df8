//! Starts a process inside the rootfs with an OCI-like [`Process`] applied by
//! `pvelxc_guest` (the same prepare/apply/exec as pvelxc-init in a CT).

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
    tty: bool,
    /// The OCI process attributes, applied by the code pvelxc-init uses in a CT.
    process: pvelxc_guest::Prepared,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn prepare(p: &Process) -> io::Result<Prepared> {
    if p.args.is_empty() {
        return Err(invalid("empty args".into()));
    }
    for kv in &p.env {
        match kv.split_once('=') {
            Some((k, _)) if !k.is_empty() => {}
            _ => return Err(invalid(format!("bad env entry {kv:?}"))),
        }
    }
    Ok(Prepared {
        root: CString::new(ROOTFS).map_err(|e| invalid(e.to_string()))?,
        tty: p.terminal,
        process: pvelxc_guest::prepare(&p.to_oci()).map_err(invalid)?,
    })
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Runs in the child between fork and exec: async-signal-safe calls only. Session and
/// controlling tty, chroot into the rootfs, then the shared `apply` (rlimits,
/// oomScoreAdj, cwd, umask, capabilities, groups/gid/uid, noNewPrivileges) and `exec`
/// (PATH lookup in the rootfs). Only returns on failure, with the errno that `spawn`
/// then reports to the host.
fn child_setup(p: &Prepared) -> io::Result<()> {
    // SAFETY: plain syscalls on data prepared before fork; no allocation, no locks.
    unsafe {
        check(libc::setsid())?;
        if p.tty {
            check(libc::ioctl(0, libc::TIOCSCTTY, 0))?;
        }
        check(libc::chroot(p.root.as_ptr()))?;
    }
    pvelxc_guest::reset_signals();
    pvelxc_guest::apply(&p.process).map_err(|f| io::Error::from_raw_os_error(f.errno))?;
    let f = pvelxc_guest::try_exec(&p.process);
    Err(io::Error::from_raw_os_error(f.errno))
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
    let prepared = prepare(p)?;
    // Never exec'd by Command: child_setup execs (or fails) first.
    let mut cmd = Command::new(&prepared.process.arg0);
    // SAFETY: child_setup only makes async-signal-safe calls.
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
