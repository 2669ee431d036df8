//! What the `container` and `exec-in` helpers share. The helper stays the `pct exec` process:
//! it forwards every signal it gets to its one child and exits with the child's status
//! (128+signal when killed). The child dies with the helper (`PR_SET_PDEATHSIG`), gets a
//! session of its own and, when stdin is a terminal, makes it its controlling terminal.

use pvelxc_init::process;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// The child the handlers forward to (0: none yet).
static CHILD: AtomicI32 = AtomicI32::new(0);

/// Signals a fault of the helper itself raises: not forwarded when the kernel sent them.
const FAULTS: [libc::c_int; 6] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGILL,
    libc::SIGTRAP,
    libc::SIGSYS,
];

extern "C" fn forward(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler; errno is saved
    // and restored around kill(2) (async-signal-safe).
    unsafe {
        if FAULTS.contains(&sig) && !info.is_null() && (*info).si_code > 0 {
            // The helper's own fault: the default action on the repeated instruction.
            libc::signal(sig, libc::SIG_DFL);
            return;
        }
        let saved = *libc::__errno_location();
        let pid = CHILD.load(Ordering::SeqCst);
        if pid > 0 {
            libc::kill(pid, sig);
        }
        *libc::__errno_location() = saved;
    }
}

/// Every catchable signal: 1..=31 but SIGKILL, SIGSTOP, SIGCHLD, and the real-time ones.
fn forwarded() -> impl Iterator<Item = libc::c_int> {
    (1..=31)
        .filter(|s| ![libc::SIGKILL, libc::SIGSTOP, libc::SIGCHLD].contains(s))
        .chain(libc::SIGRTMIN()..=libc::SIGRTMAX())
}

/// Block every signal until [`supervise`] has the child's pid (the child unblocks its own
/// with `reset_signals`).
pub fn block_signals() {
    // SAFETY: sigset manipulation on local storage.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
    }
}

/// When stdin is the helper's controlling terminal (the helper a session leader, as
/// `pct exec` makes it), let go of it so the child can take it. The SIGHUP and SIGCONT
/// this sends to the helper's own foreground group are ignored.
pub fn release_tty() {
    // SAFETY: isatty/getsid/getpid/signal/ioctl with integer arguments.
    unsafe {
        if libc::isatty(0) != 1 || libc::getsid(0) != libc::getpid() {
            return;
        }
        let hup = libc::signal(libc::SIGHUP, libc::SIG_IGN);
        let cont = libc::signal(libc::SIGCONT, libc::SIG_IGN);
        libc::ioctl(0, libc::TIOCNOTTY);
        libc::signal(libc::SIGHUP, hup);
        libc::signal(libc::SIGCONT, cont);
    }
}

/// A pipe whose write end only the helper holds: the child sees it hang up once the helper
/// is gone (read end, write end; both close-on-exec).
pub fn alive_pipe() -> Result<(OwnedFd, OwnedFd), String> {
    let mut p = [0 as libc::c_int; 2];
    // SAFETY: pipe2 into a local array.
    if unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe2: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fresh fds from pipe2, owned from here on.
    Ok(unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) })
}

/// fork(2): `Ok(0)` in the child.
pub fn fork() -> Result<libc::pid_t, String> {
    // SAFETY: the helper is single-threaded; the child only runs the pod mode's child code
    // and execs or _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    Ok(pid)
}

/// `PR_SET_PDEATHSIG` SIGKILL, then make sure the helper did not die before it took effect.
/// Again after the uid switch, which clears it.
pub fn die_with_helper(alive: &OwnedFd) -> Result<(), String> {
    // SAFETY: prctl with integer arguments; poll of one local pollfd.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
            return Err(format!(
                "prctl(PR_SET_PDEATHSIG): {}",
                std::io::Error::last_os_error()
            ));
        }
        let mut p = libc::pollfd {
            fd: alive.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        if libc::poll(&mut p, 1, 0) != 0 {
            return Err("the helper is gone".into());
        }
    }
    Ok(())
}

/// The child's first steps: default signals, unblocked; death with the helper; a session of
/// its own with stdin as controlling terminal when that is a terminal.
pub fn child_start(alive: &OwnedFd) -> Result<(), String> {
    process::reset_signals();
    die_with_helper(alive)?;
    // SAFETY: setsid/isatty/ioctl with integer arguments.
    unsafe {
        if libc::setsid() < 0 {
            return Err(format!("setsid: {}", std::io::Error::last_os_error()));
        }
        if libc::isatty(0) == 1 && libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
            return Err(format!("TIOCSCTTY: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// The child's last steps: apply the process, die with the helper again (the uid switch
/// cleared it), execve. Returns the exit code when it could not exec.
pub fn child_exec(prepared: &process::Prepared, alive: &OwnedFd, mode: &str) -> i32 {
    if let Err(e) = process::apply(prepared) {
        e.report(process::TAG);
        return 126;
    }
    if let Err(e) = die_with_helper(alive) {
        super::log(mode, &e);
        return 126;
    }
    process::exec(prepared, process::TAG)
}

/// The helper after fork: forward every signal to `child`, wait for it (EINTR-safe) and
/// return its exit code, 128+signal when a signal killed it.
pub fn supervise(child: libc::pid_t, mode: &str) -> i32 {
    CHILD.store(child, Ordering::SeqCst);
    // SAFETY: sigaction with a handler that only makes async-signal-safe calls; sigprocmask
    // and waitpid on local storage.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = forward as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        libc::sigfillset(&mut sa.sa_mask);
        for s in forwarded() {
            libc::sigaction(s, &sa, std::ptr::null_mut());
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        loop {
            let mut status: libc::c_int = 0;
            let r = libc::waitpid(child, &mut status, 0);
            if r == child {
                // Reaped: its pid may be reused, nothing more is forwarded.
                CHILD.store(0, Ordering::SeqCst);
                return process::decode_wait_status(status).0;
            }
            let e = std::io::Error::last_os_error();
            if r < 0 && e.raw_os_error() != Some(libc::EINTR) {
                super::log(mode, &format!("waitpid: {e}"));
                return 255;
            }
        }
    }
}
