//! Signals: every one but the faults arrives on a signalfd; the init forwards them to the
//! process (or ends the CT when none runs yet) and reaps its children.

use pvelxc_init::process;
use pvelxc_init::proto::ExitRecord;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::Init;
use crate::{log, now_ns};

/// Signals the init never blocks: the unblockable ones, synchronous faults, and
/// SIGPIPE (std ignores it; blocking it would queue the init's own EPIPE signals and
/// forward them to the process).
const UNBLOCKED: [libc::c_int; 8] = [
    libc::SIGPIPE,
    libc::SIGKILL,
    libc::SIGSTOP,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGTRAP,
];

pub(super) fn signalfd_all() -> std::io::Result<OwnedFd> {
    // SAFETY: sigset manipulation on local storage, then signalfd/sigprocmask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        for s in UNBLOCKED {
            libc::sigdelset(&mut set, s);
        }
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// Signals whose default action terminates a process (so a signal delivered
/// before Start ends the container, as it would end a waiting `runc init`).
fn terminates_by_default(s: libc::c_int) -> bool {
    !matches!(
        s,
        libc::SIGCHLD
            | libc::SIGCONT
            | libc::SIGWINCH
            | libc::SIGURG
            | libc::SIGSTOP
            | libc::SIGTSTP
            | libc::SIGTTIN
            | libc::SIGTTOU
    ) && s > 0
}

impl Init {
    pub(super) fn on_signals(&mut self) {
        loop {
            // SAFETY: signalfd_siginfo is plain old data; all-zero is a valid value.
            let mut si: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
            // SAFETY: reads at most one signalfd_siginfo into the local above.
            let n = unsafe {
                libc::read(
                    self.sigfd.as_raw_fd(),
                    &mut si as *mut _ as *mut libc::c_void,
                    std::mem::size_of::<libc::signalfd_siginfo>(),
                )
            };
            if n != std::mem::size_of::<libc::signalfd_siginfo>() as isize {
                break;
            }
            let sig = si.ssi_signo as libc::c_int;
            if sig == libc::SIGCHLD {
                self.reap();
            } else {
                self.deliver(sig, false, true);
            }
        }
        // A SIGCHLD may have been coalesced with other signals: reap anyway.
        self.reap();
    }

    /// Deliver a signal to the process (or all processes of the CT).
    pub(super) fn deliver(&mut self, sig: libc::c_int, all: bool, from_kernel: bool) {
        // `pct shutdown` sends lxc.signal.halt (SIGPWR) to init: the application
        // should see SIGTERM, as with `docker stop`. LXC 5 sends SIGRTMIN+3 (systemd's halt)
        // instead when init blocks that signal, which this init does (signalfd).
        let sig = if from_kernel && (sig == libc::SIGPWR || sig == libc::SIGRTMIN() + 3) {
            libc::SIGTERM
        } else {
            sig
        };
        match self.child {
            Some(pid) => {
                // SAFETY: plain kill. kill(-1) is only safe when we are a
                // namespace's PID 1; otherwise signal the child's session group.
                let target = if !all {
                    pid
                } else if unsafe { libc::getpid() } == 1 {
                    -1
                } else {
                    -pid
                };
                // SAFETY: kill(2) takes plain integers; no memory is involved.
                if unsafe { libc::kill(target, sig) } != 0 {
                    let e = std::io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::ESRCH) {
                        log(&format!("kill({target}, {sig}): {e}"));
                    }
                }
            }
            None if terminates_by_default(sig) => self.killed_before_start(sig),
            None => {}
        }
    }

    fn reap(&mut self) {
        loop {
            let mut status: libc::c_int = 0;
            // SAFETY: plain waitpid.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                return;
            }
            if Some(pid) == self.child {
                let (exit_code, signal) = process::decode_wait_status(status);
                self.finish(ExitRecord {
                    pid,
                    exit_code,
                    signal,
                    time_ns: now_ns(),
                    error: None,
                });
            }
        }
    }
}
