//! `pvelxc-init`: PID 1 of a containerd-shim-pvelxc-v2 CT (no arguments), or
//! `pvelxc-init exec FILE` (apply a Process JSON and execve in place).
//! See PROTOCOL.md.

use pvelxc_init::process::{self, Prepared, Process};
use pvelxc_init::proto::{self, ExitRecord, FrameReader, Msg, PROTOCOL_VERSION};
use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where the shim's directory is mounted in the CT (PVELXC_DIR overrides, for tests).
const DEFAULT_DIR: &str = "/.pvelxc";
/// The CT-writable subdirectory of D (a small tmpfs) that holds the exit record.
const RW_DIR: &str = "rw";
/// How long the init keeps trying to reach ctl.sock at boot before giving up.
const CONNECT_DEADLINE: Duration = Duration::from_secs(60);
/// Reconnect period after the shim went away.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

fn log(msg: &str) {
    process::write_stderr(&format!("pvelxc-init: {msg}\n"));
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    let dir = PathBuf::from(std::env::var_os("PVELXC_DIR").unwrap_or_else(|| DEFAULT_DIR.into()));
    let code = match args.get(1).map(|a| a.as_bytes()) {
        None => init_main(&dir),
        Some(b"exec") if args.len() == 3 => exec_main(Path::new(&args[2])),
        Some(b"--version") => {
            println!(
                "pvelxc-init {} protocol {PROTOCOL_VERSION}",
                env!("CARGO_PKG_VERSION")
            );
            0
        }
        _ => {
            log("usage: pvelxc-init | pvelxc-init exec FILE");
            2
        }
    };
    std::process::exit(code);
}

// ---------------------------------------------------------------- exec mode

fn exec_main(file: &Path) -> i32 {
    let prepared = match std::fs::read(file)
        .map_err(|e| format!("read {}: {e}", file.display()))
        .and_then(|b| process::from_json(&b))
        .and_then(|p| process::prepare(&p))
    {
        Ok(p) => p,
        Err(e) => {
            log(&e);
            return 126;
        }
    };
    process::reset_signals();
    if let Err(e) = process::apply(&prepared) {
        e.report(process::TAG);
        return 126;
    }
    process::exec(&prepared, process::TAG)
}

// ---------------------------------------------------------------- init mode

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

fn signalfd_all() -> std::io::Result<OwnedFd> {
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

struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
}

fn open_pty(size: Option<process::ConsoleSize>) -> Result<Pty, String> {
    let err = |w: &str| format!("{w}: {}", std::io::Error::last_os_error());
    // SAFETY: plain libc pty calls; fds are wrapped immediately.
    unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if m < 0 {
            return Err(err("posix_openpt"));
        }
        let master = OwnedFd::from_raw_fd(m);
        if libc::grantpt(m) != 0 {
            return Err(err("grantpt"));
        }
        if libc::unlockpt(m) != 0 {
            return Err(err("unlockpt"));
        }
        let mut name = [0 as libc::c_char; 128];
        if libc::ptsname_r(m, name.as_mut_ptr(), name.len()) != 0 {
            return Err(err("ptsname_r"));
        }
        let s = libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if s < 0 {
            return Err(err("open pty slave"));
        }
        let slave = OwnedFd::from_raw_fd(s);
        if let Some(sz) = size {
            let ws = libc::winsize {
                ws_row: sz.height.min(u16::MAX as u32) as u16,
                ws_col: sz.width.min(u16::MAX as u32) as u16,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            if libc::ioctl(s, libc::TIOCSWINSZ, &ws) != 0 {
                return Err(err("TIOCSWINSZ"));
            }
        }
        Ok(Pty { master, slave })
    }
}

struct Init {
    dir: PathBuf,
    spec: Process,
    prepared: Prepared,
    sigfd: OwnedFd,
    sock: Option<UnixStream>,
    reader: FrameReader,
    stdio: [Option<OwnedFd>; 3],
    pty: Option<Pty>,
    child: Option<libc::pid_t>,
    next_reconnect: Instant,
}

fn init_main(dir: &Path) -> i32 {
    let sigfd = match signalfd_all() {
        Ok(f) => f,
        Err(e) => {
            log(&format!("signalfd: {e}"));
            return 255;
        }
    };
    // Container settings (read-only root, network on older Proxmox): before anything runs.
    let ct_err = match std::fs::read(dir.join("ct.json")) {
        Ok(b) => pvelxc_init::ct::CtSettings::from_json(&b)
            .and_then(|s| pvelxc_init::ct::apply(&s))
            .err(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(format!("read ct.json: {e}")),
    };
    let spec_res = std::fs::read(dir.join("process.json"))
        .map_err(|e| format!("read process.json: {e}"))
        .and_then(|b| process::from_json(&b))
        .and_then(|p| ct_err.map_or(Ok(p), Err));
    let (spec, prepared, err) = match spec_res.and_then(|s| process::prepare(&s).map(|p| (s, p))) {
        Ok((s, p)) => (s, p, None),
        Err(e) => (Process::default(), Prepared::default(), Some(e)),
    };
    let mut init = Init {
        dir: dir.to_path_buf(),
        spec,
        prepared,
        sigfd,
        sock: None,
        reader: FrameReader::new(),
        stdio: [None, None, None],
        pty: None,
        child: None,
        next_reconnect: Instant::now(),
    };
    init.connect_at_boot();
    if let Some(e) = err {
        init.fail(&e);
    }
    if init.spec.terminal {
        match open_pty(init.spec.console_size) {
            Ok(p) => init.pty = Some(p),
            Err(e) => init.fail(&e),
        }
    }
    init.greet();
    init.run()
}

impl Init {
    fn ctl_path(&self) -> PathBuf {
        self.dir.join("ctl.sock")
    }

    fn connect_at_boot(&mut self) {
        let deadline = Instant::now() + CONNECT_DEADLINE;
        let mut last = String::new();
        while Instant::now() < deadline {
            match UnixStream::connect(self.ctl_path()) {
                Ok(s) => {
                    self.sock = Some(s);
                    return;
                }
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        log(&format!("connect {}: {last}", self.ctl_path().display()));
        self.fail("could not reach the shim's ctl.sock");
    }

    /// Send a message; on failure drop the connection (we keep running).
    fn send(&mut self, msg: &Msg, fds: &[std::os::fd::BorrowedFd<'_>]) {
        if let Some(s) = &self.sock {
            if let Err(e) = proto::send_msg(s.as_fd(), msg, fds) {
                log(&format!("send to shim: {e}; will reconnect"));
                self.disconnect();
            }
        }
    }

    fn disconnect(&mut self) {
        self.sock = None;
        self.reader = FrameReader::new();
        self.next_reconnect = Instant::now() + RECONNECT_EVERY;
    }

    /// Hello (+ the pty master while not started) on a fresh connection.
    fn greet(&mut self) {
        let hello = Msg::Hello {
            version: PROTOCOL_VERSION,
            terminal: self.spec.terminal,
            // SAFETY: getpid cannot fail.
            pid: unsafe { libc::getpid() },
            started: self.child,
        };
        self.send(&hello, &[]);
        if self.child.is_none() {
            if let (Some(p), Some(s)) = (&self.pty, &self.sock) {
                if let Err(e) = proto::send_msg(s.as_fd(), &Msg::Pty, &[p.master.as_fd()]) {
                    log(&format!("send pty: {e}"));
                    self.disconnect();
                }
            }
        }
    }

    fn try_reconnect(&mut self) {
        if self.sock.is_some() || Instant::now() < self.next_reconnect {
            return;
        }
        match UnixStream::connect(self.ctl_path()) {
            Ok(s) => {
                self.sock = Some(s);
                self.greet();
            }
            Err(_) => self.next_reconnect = Instant::now() + RECONNECT_EVERY,
        }
    }

    fn write_exit_file(&self, rec: &ExitRecord) {
        // rw/ is the only directory of D the CT can write (PROTOCOL.md).
        let rw = self.dir.join(RW_DIR);
        let tmp = rw.join(".exit.tmp");
        let res = rec.to_json().map_err(std::io::Error::from).and_then(|b| {
            let _ = std::fs::remove_file(&tmp);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            f.write_all(&b)?;
            f.sync_all()?;
            std::fs::rename(&tmp, rw.join("exit"))
        });
        if let Err(e) = res {
            log(&format!("write exit file: {e}"));
        }
    }

    /// Write the exit file, tell the shim, exit (ending the CT).
    fn finish(&mut self, rec: ExitRecord) -> ! {
        self.write_exit_file(&rec);
        if let Some(e) = &rec.error {
            self.send(&Msg::Error { msg: e.clone() }, &[]);
        }
        self.send(
            &Msg::Exited {
                pid: rec.pid,
                exit_code: rec.exit_code,
                signal: rec.signal,
                time_ns: rec.time_ns,
            },
            &[],
        );
        std::process::exit(rec.exit_code & 0xff)
    }

    fn fail(&mut self, msg: &str) -> ! {
        log(msg);
        self.finish(ExitRecord {
            pid: 0,
            exit_code: 255,
            signal: None,
            time_ns: now_ns(),
            error: Some(msg.to_string()),
        })
    }

    fn killed_before_start(&mut self, sig: libc::c_int) -> ! {
        self.finish(ExitRecord {
            pid: 0,
            exit_code: 128 + sig,
            signal: Some(sig),
            time_ns: now_ns(),
            error: None,
        })
    }

    fn run(&mut self) -> ! {
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: self.sigfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.sock.as_ref().map(|s| s.as_raw_fd()).unwrap_or(-1),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let timeout = if self.sock.is_some() {
                -1
            } else {
                RECONNECT_EVERY.as_millis() as libc::c_int
            };
            // SAFETY: two valid pollfds (fd -1 is ignored by poll).
            let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    log(&format!("poll: {e}"));
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
            if fds[0].revents != 0 {
                self.on_signals();
            }
            if fds[1].revents != 0 {
                self.on_socket();
            }
            self.try_reconnect();
        }
    }

    fn on_signals(&mut self) {
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
    fn deliver(&mut self, sig: libc::c_int, all: bool, from_kernel: bool) {
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

    fn on_socket(&mut self) {
        let Some(s) = &self.sock else { return };
        match proto::recv_into(s.as_fd(), &mut self.reader) {
            Ok(0) => {
                log("shim closed ctl.sock; will reconnect");
                self.disconnect();
                return;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => {
                log(&format!("read ctl.sock: {e}; will reconnect"));
                self.disconnect();
                return;
            }
        }
        loop {
            match self.reader.next_msg() {
                Ok(Some((msg, fds))) => self.on_msg(msg, fds),
                Ok(None) => return,
                Err(e) => {
                    log(&format!("protocol error: {e}; reconnecting"));
                    self.disconnect();
                    return;
                }
            }
        }
    }

    fn on_msg(&mut self, msg: Msg, fds: Vec<OwnedFd>) {
        match msg {
            Msg::Stdio {
                stdin,
                stdout,
                stderr,
            } if self.child.is_none() => {
                let mut it = fds.into_iter();
                let mut take = |present: bool| if present { it.next() } else { None };
                self.stdio = [take(stdin), take(stdout), take(stderr)];
            }
            Msg::Start if self.child.is_none() => match self.spawn() {
                Ok(pid) => {
                    self.child = Some(pid);
                    self.send(&Msg::Started { pid }, &[]);
                }
                Err(e) => self.fail(&e),
            },
            Msg::Start => {
                if let Some(pid) = self.child {
                    self.send(&Msg::Started { pid }, &[]);
                }
            }
            Msg::Signal { signo, all } => self.deliver(signo, all, false),
            other => log(&format!("ignoring unexpected message {other:?}")),
        }
    }

    fn spawn(&mut self) -> Result<libc::pid_t, String> {
        let devnull = File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| format!("open /dev/null: {e}"))?;
        let src: [RawFd; 3] = match &self.pty {
            Some(p) => [p.slave.as_raw_fd(); 3],
            None => {
                let pick = |o: &Option<OwnedFd>| {
                    o.as_ref()
                        .map(|f| f.as_raw_fd())
                        .unwrap_or(devnull.as_raw_fd())
                };
                [
                    pick(&self.stdio[0]),
                    pick(&self.stdio[1]),
                    pick(&self.stdio[2]),
                ]
            }
        };
        let tty = self.pty.as_ref().map(|p| p.slave.as_raw_fd());
        // Exec barrier: an O_CLOEXEC pipe whose write end the child holds until execve
        // (or _exit). Started is only sent once the child is in its own session and
        // runs the target program, so signals the shim sends after Started (including
        // to the process group) always reach it.
        let mut pfd = [0 as libc::c_int; 2];
        // SAFETY: pipe2 into a local array.
        if unsafe { libc::pipe2(pfd.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(format!("pipe2: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: fresh fds from pipe2, owned from here on.
        let (barrier_r, barrier_w) =
            unsafe { (OwnedFd::from_raw_fd(pfd[0]), OwnedFd::from_raw_fd(pfd[1])) };
        // SAFETY: single-threaded process; the child only runs child_main and exits.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(format!("fork: {}", std::io::Error::last_os_error()));
        }
        if pid == 0 {
            drop(barrier_r);
            let code = child_main(&self.prepared, src, tty);
            // SAFETY: leave without running the parent's atexit/destructors.
            unsafe { libc::_exit(code) };
        }
        drop(barrier_w);
        let mut byte = [0u8; 1];
        loop {
            // SAFETY: read into a local buffer; returns 0 once every write end is closed.
            let n = unsafe {
                libc::read(
                    barrier_r.as_raw_fd(),
                    byte.as_mut_ptr() as *mut libc::c_void,
                    1,
                )
            };
            if n >= 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                break;
            }
        }
        drop(barrier_r);
        // Parent: the child owns the stdio now.
        self.stdio = [None, None, None];
        self.pty = None;
        drop(devnull);
        Ok(pid)
    }
}

/// Runs in the forked child: stdio/tty, the Process, execve. Returns an exit code
/// only on failure. Async-signal-safe (no allocation), like `pvelxc_guest::run`.
fn child_main(p: &Prepared, src: [RawFd; 3], tty: Option<RawFd>) -> i32 {
    process::reset_signals();
    // SAFETY: plain syscalls on fds the parent owns and keeps open across fork.
    unsafe {
        if libc::setsid() < 0 {
            process::Failure::last("setsid").report(process::TAG);
            return 126;
        }
        if let Some(t) = tty {
            if libc::ioctl(t, libc::TIOCSCTTY, 0) != 0 {
                process::Failure::last("TIOCSCTTY").report(process::TAG);
                return 126;
            }
        }
        // Move sources above 2 first so dup2 never clobbers a source.
        let mut hi = [0; 3];
        for i in 0..3 {
            hi[i] = libc::fcntl(src[i], libc::F_DUPFD_CLOEXEC, 10);
            if hi[i] < 0 {
                process::Failure::last("dup stdio").report(process::TAG);
                return 126;
            }
        }
        for (i, h) in hi.iter().enumerate() {
            if libc::dup2(*h, i as libc::c_int) < 0 {
                process::Failure::last("dup2 stdio").report(process::TAG);
                return 126;
            }
        }
    }
    if let Err(e) = process::apply(p) {
        e.report(process::TAG);
        return 126;
    }
    process::exec(p, process::TAG)
}
