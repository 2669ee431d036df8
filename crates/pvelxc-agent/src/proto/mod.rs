//! Wire protocol between the host ([`crate::host`]) and the guest agent.
//!
//! Every frame is `len: u32 LE` (number of bytes that follow, at most [`MAX_FRAME`]) followed by
//! `type: u8` and the message body. Integers are little-endian; strings and byte strings are
//! `u32 LE length + bytes`; lists are `u32 LE count + items`; options are `u8 0|1 + value`.
//!
//! Host requests carry a request number `req` (non-zero); the guest answers each with exactly one
//! reply carrying the same `req`: [`Msg::Pong`], [`Msg::Started`], [`Msg::Ok`], [`Msg::Error`],
//! [`Msg::PidsReply`] or [`Msg::StatsReply`]. [`Msg::Stdin`] is fire-and-forget. The guest also
//! sends unsolicited events: [`Msg::Ready`] (once, first frame), [`Msg::Output`], [`Msg::Eof`],
//! [`Msg::Exit`]. For one process, all its `Output`/`Eof` frames precede its `Exit` unless a
//! descendant keeps the output open longer than a grace period.
//!
//! The guest is untrusted: [`decode`] checks every length and count against the bytes present
//! before allocating (lists at most [`MAX_ITEMS`]), rejects out-of-range values
//! ([`DecodeError::Invalid`]: `Exit.status` outside 0..=[`MAX_EXIT_STATUS`], `Started.pid` 0) and
//! cleans host-bound free text with [`clean_text`]. [`FrameReader`] and [`read_frame`] allocate as
//! bytes arrive, never by a declared length.

mod check;
mod codec;
mod enc;
mod frame;
mod reader;

pub use check::MAX_EXIT_STATUS;
pub use codec::{decode, DecodeError, MAX_ITEMS};
pub use enc::encode;
pub use frame::{read_frame, write_frame, FrameError};
pub use pvelxc_guest::caps::Capabilities;
pub use pvelxc_guest::text::{clean_text, MAX_TEXT};
pub use reader::{FrameReader, HEADER_LEN};

/// Largest frame body accepted (16 MiB).
pub const MAX_FRAME: u32 = 16 << 20;

/// Protocol version announced in [`Msg::Ready`]. 2: [`Process`] carries
/// `no_new_privileges`, `umask`, `oom_score_adj` and `capabilities` (appended after
/// `rlimits`; a version-1 peer's `Process` without them decodes with their defaults, and
/// a version-1 guest ignores them as trailing bytes).
pub const PROTOCOL_VERSION: u32 = 2;

/// OCI-like process description (mirrors the OCI runtime spec's `process` object). The
/// guest applies it with `pvelxc_guest` (the same code as pvelxc-init in a CT): see
/// [`Process::to_oci`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Process {
    /// argv; `args[0]` is looked up in the process's `PATH` when it has no `/`.
    pub args: Vec<String>,
    /// `KEY=value` strings; the environment is exactly this.
    pub env: Vec<String>,
    /// Working directory inside the rootfs (absolute); empty means `/`.
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// Run on a new pseudo-terminal (stdout carries the merged output, stderr is unused).
    pub terminal: bool,
    /// Initial terminal size (rows, cols) when `terminal`.
    pub console_size: Option<(u16, u16)>,
    pub rlimits: Vec<Rlimit>,
    /// OCI `noNewPrivileges`: `PR_SET_NO_NEW_PRIVS` before exec. (Version 2.)
    pub no_new_privileges: bool,
    /// OCI `user.umask`; `None` keeps the agent's (0022). (Version 2.)
    pub umask: Option<u32>,
    /// OCI `oomScoreAdj`, written to `/proc/self/oom_score_adj` (best effort). (Version 2.)
    pub oom_score_adj: Option<i32>,
    /// OCI `capabilities` (names per set); `None` leaves them as the uid switch makes
    /// them (all for uid 0). (Version 2.)
    pub capabilities: Option<Capabilities>,
}

impl Process {
    /// The same process as the shared OCI subset type (config.json shape). `cwd` empty
    /// becomes `/` (the guest chroots into the rootfs, which does not move the cwd).
    pub fn to_oci(&self) -> pvelxc_guest::Process {
        pvelxc_guest::Process {
            terminal: self.terminal,
            console_size: self.console_size.map(|(r, c)| pvelxc_guest::ConsoleSize {
                height: u32::from(r),
                width: u32::from(c),
            }),
            user: pvelxc_guest::User {
                uid: self.uid,
                gid: self.gid,
                umask: self.umask,
                additional_gids: self.additional_gids.clone(),
            },
            args: self.args.clone(),
            env: self.env.clone(),
            cwd: if self.cwd.is_empty() {
                "/".into()
            } else {
                self.cwd.clone()
            },
            rlimits: self
                .rlimits
                .iter()
                .map(|r| pvelxc_guest::Rlimit {
                    kind: r.kind.clone(),
                    hard: r.hard,
                    soft: r.soft,
                })
                .collect(),
            no_new_privileges: self.no_new_privileges,
            oom_score_adj: self.oom_score_adj,
            capabilities: self.capabilities.clone(),
        }
    }
}

/// One `RLIMIT_*` entry, `kind` as in OCI (`"RLIMIT_NOFILE"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rlimit {
    pub kind: String,
    pub soft: u64,
    pub hard: u64,
}

/// Standard streams of a guest process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdin = 0,
    Stdout = 1,
    Stderr = 2,
}

impl Stream {
    pub fn from_u8(v: u8) -> Option<Stream> {
        match v {
            0 => Some(Stream::Stdin),
            1 => Some(Stream::Stdout),
            2 => Some(Stream::Stderr),
            _ => None,
        }
    }
}

/// A guest process as listed by [`Msg::PidsReply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    /// The agent id (`Run`/`Exec` id) when the pid is one the agent started, else empty.
    pub id: String,
    /// `comm` from `/proc/<pid>/stat`.
    pub comm: String,
}

/// Guest-wide resource figures from `/proc/meminfo` and `/proc/stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub mem_total_bytes: u64,
    pub mem_available_bytes: u64,
    /// `MemTotal - MemAvailable`.
    pub mem_used_bytes: u64,
    pub cpu_user_ns: u64,
    pub cpu_system_ns: u64,
    pub cpu_idle_ns: u64,
    /// Number of user processes (agent and kernel threads excluded).
    pub processes: u32,
    pub uptime_ms: u64,
}

/// All messages. Host → guest: `Ping` … `Shutdown`; guest → host: `Ready` … `StatsReply`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Ping {
        req: u32,
    },
    /// Start the container's main process.
    Run {
        req: u32,
        id: String,
        process: Process,
    },
    /// Start an extra process in the running container.
    Exec {
        req: u32,
        id: String,
        process: Process,
    },
    Stdin {
        id: String,
        data: Vec<u8>,
    },
    CloseStdin {
        req: u32,
        id: String,
    },
    Signal {
        req: u32,
        id: String,
        signo: i32,
    },
    Resize {
        req: u32,
        id: String,
        rows: u16,
        cols: u16,
    },
    Pids {
        req: u32,
    },
    Stats {
        req: u32,
    },
    /// Kill everything, sync, power the VM off.
    Shutdown {
        req: u32,
    },

    Ready {
        version: u32,
        kernel: String,
    },
    Pong {
        req: u32,
    },
    Started {
        req: u32,
        id: String,
        pid: u32,
    },
    Ok {
        req: u32,
    },
    Error {
        req: u32,
        message: String,
    },
    Output {
        id: String,
        stream: Stream,
        data: Vec<u8>,
    },
    Eof {
        id: String,
        stream: Stream,
    },
    /// Exit status: the exit code, or 128 + signal number when killed by a signal.
    Exit {
        id: String,
        status: i32,
    },
    PidsReply {
        req: u32,
        procs: Vec<ProcInfo>,
    },
    StatsReply {
        req: u32,
        stats: Stats,
    },
}

impl Msg {
    /// The request number of a reply (or request), if it has one.
    pub fn req(&self) -> Option<u32> {
        match self {
            Msg::Ping { req }
            | Msg::Run { req, .. }
            | Msg::Exec { req, .. }
            | Msg::CloseStdin { req, .. }
            | Msg::Signal { req, .. }
            | Msg::Resize { req, .. }
            | Msg::Pids { req }
            | Msg::Stats { req }
            | Msg::Shutdown { req }
            | Msg::Pong { req }
            | Msg::Started { req, .. }
            | Msg::Ok { req }
            | Msg::Error { req, .. }
            | Msg::PidsReply { req, .. }
            | Msg::StatsReply { req, .. } => Some(*req),
            Msg::Stdin { .. }
            | Msg::Ready { .. }
            | Msg::Output { .. }
            | Msg::Eof { .. }
            | Msg::Exit { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests;
