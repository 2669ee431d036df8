//! Wire protocol between the shim (host side) and `pvelxc-init` (PID 1 in the CT).
//!
//! Transport: a unix stream socket `ctl.sock` the shim listens on; the init connects.
//! Framing: every message is a frame `u32 big-endian length N` + `N` bytes of UTF-8
//! JSON (an object tagged by `"type"`). `N` is at most [`MAX_FRAME`]; a larger length
//! is rejected from its 4 header bytes, before anything is allocated for it.
//!
//! File descriptors travel as `SCM_RIGHTS` ancillary data on the `sendmsg` that carries
//! the first byte of their message's frame; how many a message carries is a function of
//! the message itself ([`Msg::fd_count`]). The receiver assigns the fds of one `recvmsg`
//! to the **last frame whose first byte is in that `recvmsg`** (see [`FrameReader`] for
//! why "last"); fds that arrive with no frame start, more fds than their frame takes,
//! or more than [`MAX_FDS`] at once are closed at once, and at most
//! [`MAX_PENDING_FDS`] fds are ever held. A peer therefore cannot make the receiver hold
//! many fds, nor attach stray fds to a later message.
//!
//! Everything the peer sends is validated on decode: exit codes and signal numbers must
//! be in range (else [`ProtoError::Invalid`]) and free text ([`Msg::Error`],
//! [`ExitRecord::error`]) is cut to [`MAX_TEXT`] bytes with control characters replaced
//! ([`clean_text`]) before any caller can log it.
//!
//! Pure functions ([`encode`], [`decode`], [`FrameReader`]) work on byte buffers and
//! are usable from async code; [`send_msg`], [`recv_msg`] are blocking helpers and
//! [`send_frame`], [`recv_into`] are single-syscall building blocks for non-blocking
//! sockets driven by a reactor.

mod exit;
mod reader;
mod sys;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;

pub use exit::{ExitRecord, MAX_EXIT_FILE};
pub use pvelxc_guest::text::{clean_text, MAX_TEXT};
pub use reader::{FrameReader, MAX_BUFFERED, MAX_PENDING_FDS};
pub use sys::{recv_into, recv_msg, send_frame, send_msg};

/// Protocol version sent in [`Msg::Hello`].
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest accepted frame body, in bytes.
pub const MAX_FRAME: usize = 64 * 1024;
/// Largest number of fds one message may carry (and one `recvmsg` may deliver).
pub const MAX_FDS: usize = 3;
/// Highest signal number on Linux (`SIGRTMAX`).
pub const MAX_SIGNAL: i32 = 64;
/// Length of the frame header.
pub const HEADER_LEN: usize = 4;

/// A protocol message. Direction is noted per variant; a receiver ignores messages
/// that make no sense for its side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Msg {
    /// init → shim, first message on every connection (also after a reconnect).
    Hello {
        version: u32,
        /// `process.terminal` as read from process.json.
        terminal: bool,
        /// The init's own pid as seen in the CT (1 when it is PID 1).
        pid: i32,
        /// Set on a reconnect after Start: the main process' in-CT pid.
        #[serde(default)]
        started: Option<i32>,
    },
    /// init → shim, terminal=true only: carries 1 fd, the pty master.
    Pty,
    /// shim → init, terminal=false only: carries one fd per `true` flag, in the order
    /// stdin, stdout, stderr. A `false` stream (or no Stdio message at all) is /dev/null.
    Stdio {
        stdin: bool,
        stdout: bool,
        stderr: bool,
    },
    /// shim → init: fork and exec the process (containerd's Start).
    Start,
    /// init → shim: the process runs with this in-CT pid.
    Started { pid: i32 },
    /// shim → init: deliver `signo` to the process (`all=false`) or to every process
    /// of the CT (`all=true`, `kill(-1)` from PID 1). Before Start, a signal whose
    /// default action terminates ends the init as if the process had been killed.
    Signal { signo: i32, all: bool },
    /// init → shim: the process exited. Sent after the exit file was written.
    Exited {
        pid: i32,
        /// `WEXITSTATUS`, or 128+signal when killed by a signal.
        exit_code: i32,
        /// The terminating signal, if any.
        signal: Option<i32>,
        /// CLOCK_REALTIME of the reap, in ns since the epoch.
        time_ns: u64,
    },
    /// init → shim: a fatal setup error (bad process.json, fork failed, ...). The init
    /// writes the exit file (exit_code 255, `error`) and exits after sending it.
    Error { msg: String },
}

impl Msg {
    /// How many fds travel with this message.
    pub fn fd_count(&self) -> usize {
        match self {
            Msg::Pty => 1,
            Msg::Stdio {
                stdin,
                stdout,
                stderr,
            } => usize::from(*stdin) + usize::from(*stdout) + usize::from(*stderr),
            _ => 0,
        }
    }
}

/// Framing / decoding errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtoError {
    /// Frame length above [`MAX_FRAME`].
    TooLarge(usize),
    /// Body is not a valid message.
    Json(String),
    /// A message needs more fds than were received with it.
    MissingFds { need: usize, have: usize },
    /// Caller passed the wrong number of fds for a message.
    FdCount { need: usize, given: usize },
    /// One `recvmsg` delivered more fds than any message carries (all closed), or the
    /// receiver would hold more than [`MAX_PENDING_FDS`] (the new ones closed).
    TooManyFds(usize),
    /// More than [`MAX_BUFFERED`] bytes buffered without being decoded.
    BufferFull(usize),
    /// A well-formed message with an out-of-range value (exit code, signal, pid).
    Invalid(String),
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::TooLarge(n) => write!(f, "frame of {n} bytes exceeds {MAX_FRAME}"),
            ProtoError::Json(e) => write!(f, "bad message: {e}"),
            ProtoError::MissingFds { need, have } => {
                write!(f, "message needs {need} fds, {have} received with it")
            }
            ProtoError::FdCount { need, given } => {
                write!(f, "message carries {need} fds, {given} given")
            }
            ProtoError::TooManyFds(n) => write!(f, "{n} fds received at once (closed)"),
            ProtoError::BufferFull(n) => {
                write!(f, "{n} bytes buffered without a complete frame")
            }
            ProtoError::Invalid(what) => write!(f, "invalid message: {what}"),
        }
    }
}

impl std::error::Error for ProtoError {}

impl From<ProtoError> for io::Error {
    fn from(e: ProtoError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// Encode one message into a frame (header + JSON body).
pub fn encode(msg: &Msg) -> Result<Vec<u8>, ProtoError> {
    let body = serde_json::to_vec(msg).map_err(|e| ProtoError::Json(e.to_string()))?;
    if body.len() > MAX_FRAME {
        return Err(ProtoError::TooLarge(body.len()));
    }
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decode the first frame of `buf`: `Ok(None)` if incomplete, else the message and
/// the number of bytes it used. A header declaring more than [`MAX_FRAME`] bytes is an
/// error at once (nothing is allocated for it). Decoded messages are validated and
/// their free text cleaned ([`Msg::validate`]).
pub fn decode(buf: &[u8]) -> Result<Option<(Msg, usize)>, ProtoError> {
    let Some(len) = frame_len(buf)? else {
        return Ok(None);
    };
    if buf.len() < HEADER_LEN + len {
        return Ok(None);
    }
    let msg = decode_body(&buf[HEADER_LEN..HEADER_LEN + len])?;
    Ok(Some((msg, HEADER_LEN + len)))
}

/// The body length declared by the header at the start of `buf` (`None`: fewer than
/// [`HEADER_LEN`] bytes), checked against [`MAX_FRAME`].
pub(crate) fn frame_len(buf: &[u8]) -> Result<Option<usize>, ProtoError> {
    let Some(h) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*h) as usize;
    if len > MAX_FRAME {
        return Err(ProtoError::TooLarge(len));
    }
    Ok(Some(len))
}

/// Parse and validate one frame body (the JSON, without the header).
pub(crate) fn decode_body(body: &[u8]) -> Result<Msg, ProtoError> {
    let msg: Msg = serde_json::from_slice(body).map_err(|e| ProtoError::Json(e.to_string()))?;
    msg.validate()
}

/// `exit_code` 0..=255; `signal` absent or 1..=[`MAX_SIGNAL`], and then `exit_code` is
/// 128 + signal (the init's convention).
pub(crate) fn check_exit(exit_code: i32, signal: Option<i32>) -> Result<(), ProtoError> {
    if !(0..=255).contains(&exit_code) {
        return Err(ProtoError::Invalid(format!(
            "exit code {exit_code} outside 0..=255"
        )));
    }
    match signal {
        None => Ok(()),
        Some(s) if !(1..=MAX_SIGNAL).contains(&s) => Err(ProtoError::Invalid(format!(
            "signal {s} outside 1..={MAX_SIGNAL}"
        ))),
        Some(s) if exit_code != 128 + s => Err(ProtoError::Invalid(format!(
            "exit code {exit_code} with signal {s} (expected {})",
            128 + s
        ))),
        Some(_) => Ok(()),
    }
}

fn check_pid(pid: i32, min: i32, what: &str) -> Result<(), ProtoError> {
    if pid < min {
        return Err(ProtoError::Invalid(format!("{what} pid {pid} below {min}")));
    }
    Ok(())
}

impl Msg {
    /// Check the values a peer controls and clean its free text: pids are positive (0
    /// allowed in `exited` for a process that never started), exit codes and signals
    /// as in the exit file (see [`ExitRecord::validate`]), `error.msg` through
    /// [`clean_text`]. [`decode`] applies this to every message.
    pub fn validate(self) -> Result<Msg, ProtoError> {
        match self {
            Msg::Hello { pid, started, .. } => {
                check_pid(pid, 1, "hello")?;
                if let Some(p) = started {
                    check_pid(p, 1, "hello.started")?;
                }
            }
            Msg::Started { pid } => check_pid(pid, 1, "started")?,
            Msg::Exited {
                pid,
                exit_code,
                signal,
                ..
            } => {
                check_pid(pid, 0, "exited")?;
                check_exit(exit_code, signal)?;
            }
            Msg::Error { msg } => {
                return Ok(Msg::Error {
                    msg: clean_text(&msg),
                })
            }
            Msg::Pty | Msg::Stdio { .. } | Msg::Start | Msg::Signal { .. } => {}
        }
        Ok(self)
    }
}

#[cfg(test)]
mod fd_tests;
#[cfg(test)]
mod tests;
