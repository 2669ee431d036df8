//! Host side: launch a micro-VM running the guest agent and drive it (tokio).
//!
//! ```no_run
//! # async fn demo() -> Result<(), pvelxc_agent::host::VmError> {
//! use pvelxc_agent::host::{Vm, VmConfig};
//! use pvelxc_agent::proto::Process;
//! let vm = Vm::start(VmConfig::new("/var/cache/pvelxc/vm/vmlinux", "/tmp/initramfs.cpio", "/srv/rootfs")).await?;
//! let mut io = vm.run("ctr", &Process { args: vec!["/bin/true".into()], ..Default::default() }).await?;
//! let out = io.stdout.read_to_end().await;
//! let status = vm.wait("ctr").await?;
//! vm.shutdown().await?;
//! # let _ = (out, status); Ok(()) }
//! ```

mod config;
mod conn;
#[cfg(test)]
mod conn_tests;
mod console;
mod error;
mod launch;
pub mod mapped;
mod stream;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::process::Child;
use tokio::task::JoinHandle;

pub use crate::bootparams::Share;
pub use config::{host_tsc_khz, Accel, ExtraMount, ShareSecurity, VmConfig, DEFAULT_QBOOT};
pub use conn::{OUTPUT_CHUNK, OUTPUT_QUEUE};
pub use console::{LINE_QUEUE, LOG_CAP, MAX_LINE};
pub use error::VmError;
pub use stream::{OutputStream, ProcessIo, StdinSink};

use crate::proto::{Msg, ProcInfo, Process, Stats};
use conn::{Conn, REQUEST_TIMEOUT};
use launch::RunDir;

/// How long [`Vm::shutdown`] waits for QEMU to exit after the agent powers off.
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(15);

/// A running micro-VM with its agent connection. Dropping it kills QEMU and removes its directory.
pub struct Vm {
    conn: Arc<Conn>,
    qemu: tokio::sync::Mutex<Option<Child>>,
    qemu_pid: Option<u32>,
    helpers: tokio::sync::Mutex<Vec<Child>>,
    reader: JoinHandle<()>,
    /// Console and QEMU-log pumps (aborted on drop).
    pumps: Vec<JoinHandle<()>>,
    console_lines: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<String>>>,
    boot_time: Duration,
    kernel: String,
    protocol: u32,
    // Last: removed after QEMU is killed.
    dir: RunDir,
}

/// QEMU's memory use, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QemuMemory {
    pub rss_bytes: u64,
    pub peak_rss_bytes: u64,
}

impl Vm {
    /// Boots a VM and waits (at most `cfg.boot_timeout`) for the agent's Ready.
    pub async fn start(cfg: VmConfig) -> Result<Vm, VmError> {
        let started = Instant::now();
        let qemu_bin = launch::preflight(&cfg)?;
        if cfg.share == Share::NineP
            && cfg.security == ShareSecurity::MappedXattr
            && cfg.prepare_rootfs
        {
            let root = cfg.rootfs_dir.clone();
            let owner = cfg.qemu_user;
            tokio::task::spawn_blocking(move || mapped::prepare(&root, owner))
                .await
                .map_err(|e| VmError::Config(format!("rootfs preparation task: {e}")))??;
        }
        let dir = RunDir::create(&cfg.state_dir)?;
        let listener = launch::bind_control(&dir.0)?;
        let (lines, console_task) = launch::start_console(&dir.0, cfg.boot_timeout)?;
        let helpers = launch::start_virtiofsd(&cfg, &dir.0).await?;
        let (mut qemu, mut pumps) = match launch::spawn_qemu(&qemu_bin, &cfg, &dir.0) {
            Ok(v) => v,
            Err(e) => {
                console_task.abort();
                return Err(e);
            }
        };
        let qemu_pid = qemu.id();
        let ready =
            launch::wait_ready(&listener, &mut qemu, &mut pumps, &dir.0, cfg.boot_timeout).await;
        let (stream, ready) = match ready {
            Ok(r) => r,
            Err(e) => {
                let _ = qemu.kill().await;
                console_task.abort();
                for p in pumps {
                    p.abort();
                }
                return Err(e);
            }
        };
        pumps.push(console_task);
        drop(listener);
        let _ = std::fs::remove_file(config::control_socket(&dir.0));
        let _ = std::fs::remove_file(config::serial_socket(&dir.0));
        let (r, w) = stream.into_split();
        let conn = Conn::new(w);
        let reader = tokio::spawn(conn.clone().read_loop(r));
        Ok(Vm {
            conn,
            qemu: tokio::sync::Mutex::new(Some(qemu)),
            qemu_pid,
            helpers: tokio::sync::Mutex::new(helpers),
            reader,
            pumps,
            console_lines: std::sync::Mutex::new(Some(lines)),
            boot_time: started.elapsed(),
            kernel: ready.kernel,
            protocol: ready.version,
            dir,
        })
    }

    /// Launch-to-Ready time.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// Bytes received from the guest and still held by the host: undecoded frame bytes
    /// plus output queued for [`OutputStream`]s (bounded; see [`OUTPUT_QUEUE`]).
    pub fn buffered_bytes(&self) -> usize {
        self.conn.buffered_bytes()
    }

    /// Guest kernel release and agent protocol version from Ready.
    pub fn guest_info(&self) -> (&str, u32) {
        (&self.kernel, self.protocol)
    }

    pub fn qemu_pid(&self) -> Option<u32> {
        self.qemu_pid
    }

    /// The per-VM directory (sockets and logs).
    pub fn run_dir(&self) -> &Path {
        &self.dir.0
    }

    /// The capped serial console log (`console.log`, rotated to `console.log.old` at
    /// [`LOG_CAP`]).
    pub fn console_log(&self) -> PathBuf {
        config::console_log(&self.dir.0)
    }

    /// The guest console's lines (each cut at [`MAX_LINE`]), once: a bounded queue of
    /// [`LINE_QUEUE`] lines; lines arriving while it is full are dropped. Guest-controlled text.
    pub fn take_console_lines(&self) -> Option<tokio::sync::mpsc::Receiver<String>> {
        self.console_lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// QEMU's resident and peak resident memory.
    pub fn qemu_memory(&self) -> Option<QemuMemory> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.qemu_pid?)).ok()?;
        let kib = |key: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(key))?;
            line.split_whitespace().nth(1)?.parse().ok()
        };
        Some(QemuMemory {
            rss_bytes: kib("VmRSS:")? * 1024,
            peak_rss_bytes: kib("VmHWM:")? * 1024,
        })
    }

    /// Round trip to the agent.
    pub async fn ping(&self) -> Result<Duration, VmError> {
        let t = Instant::now();
        match self
            .conn
            .request(|req| Msg::Ping { req }, REQUEST_TIMEOUT)
            .await?
        {
            Msg::Pong { .. } => Ok(t.elapsed()),
            other => Err(VmError::Protocol(format!("expected Pong, got {other:?}"))),
        }
    }

    /// Starts the container's main process (once per VM) under `id`.
    pub async fn run(&self, id: &str, process: &Process) -> Result<ProcessIo, VmError> {
        self.conn.start(id, process, true).await
    }

    /// Starts an extra process under `id`.
    pub async fn exec(&self, id: &str, process: &Process) -> Result<ProcessIo, VmError> {
        self.conn.start(id, process, false).await
    }

    pub async fn write_stdin(&self, id: &str, data: &[u8]) -> Result<(), VmError> {
        self.conn.write_stdin(id, data).await
    }

    pub async fn close_stdin(&self, id: &str) -> Result<(), VmError> {
        self.conn.close_stdin(id).await
    }

    pub async fn signal(&self, id: &str, signo: i32) -> Result<(), VmError> {
        self.conn
            .ack(|req| Msg::Signal {
                req,
                id: id.to_string(),
                signo,
            })
            .await
    }

    /// Resizes the terminal of a `terminal: true` process.
    pub async fn resize(&self, id: &str, rows: u16, cols: u16) -> Result<(), VmError> {
        self.conn
            .ack(|req| Msg::Resize {
                req,
                id: id.to_string(),
                rows,
                cols,
            })
            .await
    }

    /// Waits for `id` to exit: its exit code, or 128 + signal.
    pub async fn wait(&self, id: &str) -> Result<i32, VmError> {
        self.conn.wait(id).await
    }

    /// The exit status of `id`, if it has exited.
    pub fn exit_status(&self, id: &str) -> Option<i32> {
        self.conn.exit_status(id)
    }

    /// The guest's user processes.
    pub async fn pids(&self) -> Result<Vec<ProcInfo>, VmError> {
        match self
            .conn
            .request(|req| Msg::Pids { req }, REQUEST_TIMEOUT)
            .await?
        {
            Msg::PidsReply { procs, .. } => Ok(procs),
            other => Err(VmError::Protocol(format!(
                "expected PidsReply, got {other:?}"
            ))),
        }
    }

    /// Guest memory and CPU figures.
    pub async fn stats(&self) -> Result<Stats, VmError> {
        match self
            .conn
            .request(|req| Msg::Stats { req }, REQUEST_TIMEOUT)
            .await?
        {
            Msg::StatsReply { stats, .. } => Ok(stats),
            other => Err(VmError::Protocol(format!(
                "expected StatsReply, got {other:?}"
            ))),
        }
    }

    /// Asks the agent to power off, waits for QEMU to exit (kills it after a timeout), and removes the
    /// sockets. Idempotent.
    pub async fn shutdown(&self) -> Result<(), VmError> {
        let mut guard = self.qemu.lock().await;
        let Some(mut qemu) = guard.take() else {
            return Ok(());
        };
        let _ = self
            .conn
            .request(|req| Msg::Shutdown { req }, Duration::from_secs(5))
            .await;
        let exited = tokio::time::timeout(POWEROFF_TIMEOUT, qemu.wait()).await;
        let result = match exited {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(VmError::io("waiting for QEMU", e)),
            Err(_) => {
                let _ = qemu.kill().await;
                Err(VmError::Timeout(
                    "QEMU to exit after power-off (killed)".into(),
                ))
            }
        };
        for mut h in self.helpers.lock().await.drain(..) {
            let _ = h.kill().await;
        }
        self.reader.abort();
        let _ = std::fs::remove_dir_all(&self.dir.0);
        result
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.reader.abort();
        for p in &self.pumps {
            p.abort();
        }
        let children = self
            .qemu
            .get_mut()
            .take()
            .into_iter()
            .chain(self.helpers.get_mut().drain(..));
        for mut c in children {
            let _ = c.start_kill();
            // Reap promptly so no zombie or half-dead QEMU outlives the handle.
            for _ in 0..100 {
                if !matches!(c.try_wait(), Ok(None)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
