//! Starting QEMU (and virtiofsd) and waiting for the agent's Ready.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{UnixListener, UnixStream};
use tokio::process::{Child, Command};

use crate::proto::Msg;

use std::ffi::CString;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::config::{console_log, control_socket, qemu_log, serial_socket};
use super::conn::read_msg;
use super::console::{pump_console, CappedLog, LINE_QUEUE};
use super::{VmConfig, VmError};

/// The per-VM directory (sockets, console log, QEMU log); removed on drop.
pub(crate) struct RunDir(pub(crate) PathBuf);

impl RunDir {
    pub(crate) fn create(parent: &Path) -> Result<RunDir, VmError> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "pvelxc-vm-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let dir = parent.join(name);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| VmError::io(format!("creating {}", dir.display()), e))?;
        Ok(RunDir(dir))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The last `max` bytes of a file, lossily decoded.
pub(crate) fn tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// Resolves a program name on `PATH` (or checks an explicit path).
pub(crate) fn find_program(p: &Path) -> Option<PathBuf> {
    if p.components().count() > 1 {
        return p.is_file().then(|| p.to_path_buf());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(p))
        .find(|c| c.is_file())
}

/// Checks the files a boot needs; returns the resolved QEMU path.
pub(crate) fn preflight(cfg: &VmConfig) -> Result<PathBuf, VmError> {
    let qemu = find_program(&cfg.qemu).ok_or_else(|| VmError::QemuNotFound(cfg.qemu.clone()))?;
    if !cfg.kernel.is_file() {
        return Err(VmError::KernelNotFound(cfg.kernel.clone()));
    }
    if !cfg.initramfs.is_file() {
        return Err(VmError::InitramfsNotFound(cfg.initramfs.clone()));
    }
    if !cfg.rootfs_dir.is_dir() {
        return Err(VmError::RootfsNotFound(cfg.rootfs_dir.clone()));
    }
    if let Some(m) = cfg.mounts.iter().find(|m| !m.host_path.is_dir()) {
        return Err(VmError::Config(format!(
            "mount source {} is not a directory",
            m.host_path.display()
        )));
    }
    Ok(qemu)
}

/// Starts one virtiofsd per share and waits for its socket.
pub(crate) async fn start_virtiofsd(cfg: &VmConfig, dir: &Path) -> Result<Vec<Child>, VmError> {
    let shares = cfg.virtiofs_shares(dir);
    if shares.is_empty() {
        return Ok(Vec::new());
    }
    let bin = find_program(&cfg.virtiofsd)
        .ok_or_else(|| VmError::Config(format!("{} not found", cfg.virtiofsd.display())))?;
    let mut children = Vec::new();
    for (path, sock, ro) in shares {
        let mut cmd = Command::new(&bin);
        cmd.arg("--socket-path")
            .arg(&sock)
            .arg("--shared-dir")
            .arg(&path)
            .args(["--cache", "never", "--sandbox", "none"])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if ro {
            cmd.arg("--readonly");
        }
        children.push(
            cmd.spawn()
                .map_err(|e| VmError::io(format!("starting {}", bin.display()), e))?,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            if Instant::now() > deadline {
                return Err(VmError::Timeout(format!(
                    "virtiofsd socket {}",
                    sock.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(children)
}

/// Binds the control socket (QEMU connects to it, so nothing races).
pub(crate) fn bind_control(dir: &Path) -> Result<UnixListener, VmError> {
    let path = control_socket(dir);
    UnixListener::bind(&path).map_err(|e| VmError::io(format!("binding {}", path.display()), e))
}

/// Binds the serial console socket and starts the task copying it into the capped console log;
/// returns the receiver of console lines.
pub(crate) fn start_console(
    dir: &Path,
    accept_timeout: Duration,
) -> Result<(mpsc::Receiver<String>, JoinHandle<()>), VmError> {
    let sock = serial_socket(dir);
    let listener = UnixListener::bind(&sock)
        .map_err(|e| VmError::io(format!("binding {}", sock.display()), e))?;
    let path = console_log(dir);
    let log = CappedLog::create(&path)
        .map_err(|e| VmError::io(format!("creating {}", path.display()), e))?;
    let (tx, rx) = mpsc::channel(LINE_QUEUE);
    let task = tokio::spawn(pump_console(listener, log, tx, accept_timeout));
    Ok((rx, task))
}

/// Writes "0" (the writing process) into each file: runs in the child between fork and exec.
fn join_cgroups(files: &[CString]) -> std::io::Result<()> {
    for f in files {
        // SAFETY: open/write/close are async-signal-safe; the path was built before the fork.
        let fd = unsafe { libc::open(f.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: write(2) of a static byte from our fd.
        let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
        let err = std::io::Error::last_os_error();
        // SAFETY: closing the fd opened above.
        unsafe { libc::close(fd) };
        if n != 1 {
            return Err(err);
        }
    }
    Ok(())
}

/// Starts QEMU (in `cfg.cgroup_procs` before its first instruction); its stdout and stderr go
/// through pipes into the capped `qemu.log` (the returned tasks end at QEMU's exit).
pub(crate) fn spawn_qemu(
    qemu: &Path,
    cfg: &VmConfig,
    dir: &Path,
) -> Result<(Child, Vec<JoinHandle<()>>), VmError> {
    let args = cfg.qemu_args(dir)?;
    let log_path = qemu_log(dir);
    let log = CappedLog::create(&log_path)
        .map_err(|e| VmError::io(format!("creating {}", log_path.display()), e))?;
    let cgroups = cfg
        .cgroup_procs
        .iter()
        .map(|p| {
            CString::new(p.as_os_str().as_encoded_bytes())
                .map_err(|_| VmError::Config(format!("cgroup path {} has a NUL", p.display())))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut cmd = Command::new(qemu);
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if !cgroups.is_empty() {
        // SAFETY: the closure only makes async-signal-safe calls (open/write/close) on data
        // allocated before the fork.
        unsafe {
            cmd.pre_exec(move || join_cgroups(&cgroups));
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| VmError::io(format!("starting {}", qemu.display()), e))?;
    let mut pumps = Vec::new();
    // Both streams share the log; QEMU writes little, and whole lines at a time.
    let shared = std::sync::Arc::new(std::sync::Mutex::new(log));
    if let Some(out) = child.stdout.take() {
        pumps.push(tokio::spawn(pump_shared(out, shared.clone())));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(tokio::spawn(pump_shared(err, shared)));
    }
    Ok((child, pumps))
}

async fn pump_shared(
    mut r: impl tokio::io::AsyncRead + Unpin,
    log: std::sync::Arc<std::sync::Mutex<CappedLog>>,
) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => log
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .write(&buf[..n]),
        }
    }
}

/// Waits for QEMU's connection and the agent's Ready, or QEMU's death, or the deadline.
pub(crate) async fn wait_ready(
    listener: &UnixListener,
    qemu: &mut Child,
    pumps: &mut Vec<JoinHandle<()>>,
    dir: &Path,
    timeout: Duration,
) -> Result<(UnixStream, ReadyInfo), VmError> {
    let console = console_log(dir);
    let handshake = async {
        let (stream, _) = listener
            .accept()
            .await
            .map_err(|e| VmError::io("accepting QEMU's control connection", e))?;
        let (mut r, w) = stream.into_split();
        match read_msg(&mut r).await {
            Ok(Msg::Ready { version, kernel }) => Ok((r, w, version, kernel)),
            Ok(other) => Err(VmError::Protocol(format!("expected Ready, got {other:?}"))),
            Err(e) => Err(VmError::Disconnected(e)),
        }
    };
    enum Outcome {
        Ready(UnixStream, ReadyInfo),
        Exited(std::io::Result<std::process::ExitStatus>),
        Failed(VmError),
    }
    let outcome = tokio::select! {
        r = tokio::time::timeout(timeout, handshake) => match r {
            Ok(Ok((r, w, version, kernel))) => match r.reunite(w) {
                Ok(stream) => Outcome::Ready(stream, ReadyInfo { version, kernel }),
                Err(e) => Outcome::Failed(VmError::Protocol(e.to_string())),
            },
            Ok(Err(e)) => Outcome::Failed(e),
            Err(_) => Outcome::Failed(VmError::BootTimeout { after: timeout, console_tail: tail(&console, 4096) }),
        },
        status = qemu.wait() => Outcome::Exited(status),
    };
    let outcome = match outcome {
        // QEMU connects before it loads the kernel, so a failing QEMU shows up as a lost connection.
        Outcome::Failed(VmError::Disconnected(why)) => {
            match tokio::time::timeout(Duration::from_secs(5), qemu.wait()).await {
                Ok(status) => Outcome::Exited(status),
                Err(_) => Outcome::Failed(VmError::Disconnected(why)),
            }
        }
        other => other,
    };
    match outcome {
        Outcome::Ready(stream, info) => Ok((stream, info)),
        Outcome::Failed(e) => Err(e),
        Outcome::Exited(status) => {
            // Let the log pumps write what QEMU said before it died.
            for p in pumps.drain(..) {
                let _ = tokio::time::timeout(Duration::from_secs(2), p).await;
            }
            Err(VmError::QemuExited {
                status: status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string()),
                qemu_log: tail(&qemu_log(dir), 4096),
                console_tail: tail(&console, 4096),
            })
        }
    }
}

/// What the agent announced in Ready.
pub(crate) struct ReadyInfo {
    pub(crate) version: u32,
    pub(crate) kernel: String,
}
