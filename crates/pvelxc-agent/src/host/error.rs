//! Host-side errors.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug)]
pub enum VmError {
    /// The QEMU binary does not exist (or is not on `PATH`).
    QemuNotFound(PathBuf),
    /// The guest kernel is missing: run `fetch-kernel.sh`.
    KernelNotFound(PathBuf),
    InitramfsNotFound(PathBuf),
    RootfsNotFound(PathBuf),
    /// An invalid [`super::VmConfig`] value.
    Config(String),
    Io {
        what: String,
        source: io::Error,
    },
    /// QEMU exited before the agent was ready.
    QemuExited {
        status: String,
        qemu_log: String,
        console_tail: String,
    },
    /// The agent did not report Ready in time.
    BootTimeout {
        after: Duration,
        console_tail: String,
    },
    /// A request got no answer in time.
    Timeout(String),
    /// The guest answered a request with an error.
    Guest(String),
    /// An unexpected message.
    Protocol(String),
    /// The control connection is gone (VM stopped or crashed).
    Disconnected(String),
}

impl VmError {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> VmError {
        VmError::Io {
            what: what.into(),
            source,
        }
    }
}

impl fmt::Display for VmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmError::QemuNotFound(p) => write!(f, "QEMU not found: {} (install qemu-system-x86)", p.display()),
            VmError::KernelNotFound(p) => write!(
                f,
                "guest kernel not found: {} (run crates/pvelxc-agent/fetch-kernel.sh)",
                p.display()
            ),
            VmError::InitramfsNotFound(p) => write!(f, "initramfs not found: {}", p.display()),
            VmError::RootfsNotFound(p) => write!(f, "rootfs directory not found: {}", p.display()),
            VmError::Config(m) => write!(f, "invalid VM configuration: {m}"),
            VmError::Io { what, source } => write!(f, "{what}: {source}"),
            VmError::QemuExited {
                status,
                qemu_log,
                console_tail,
            } => write!(
                f,
                "QEMU exited during boot ({status})\n--- qemu output ---\n{qemu_log}\n--- serial console (tail) ---\n{console_tail}"
            ),
            VmError::BootTimeout { after, console_tail } => write!(
                f,
                "guest agent not ready after {:.1} s (boot timeout)\n--- serial console (tail) ---\n{console_tail}",
                after.as_secs_f64()
            ),
            VmError::Timeout(what) => write!(f, "timed out waiting for {what}"),
            VmError::Guest(m) => write!(f, "guest agent: {m}"),
            VmError::Protocol(m) => write!(f, "protocol error: {m}"),
            VmError::Disconnected(why) => write!(f, "guest agent connection lost: {why}"),
        }
    }
}

impl std::error::Error for VmError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            VmError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
