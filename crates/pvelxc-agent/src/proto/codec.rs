//! Pure decode of [`Msg`] (no I/O) and the message type bytes; encoding is in `enc.rs`.

use std::fmt;

use super::check::checked;
use super::{Capabilities, Msg, ProcInfo, Process, Rlimit, Stats, Stream};

/// Most items in one list (args, env, gids, rlimits, processes) a decoder accepts.
pub const MAX_ITEMS: usize = 1 << 17;

// Message type bytes. Host → guest 1..=63, guest → host 64..
pub(super) const T_PING: u8 = 1;
pub(super) const T_RUN: u8 = 2;
pub(super) const T_EXEC: u8 = 3;
pub(super) const T_STDIN: u8 = 4;
pub(super) const T_CLOSE_STDIN: u8 = 5;
pub(super) const T_SIGNAL: u8 = 6;
pub(super) const T_RESIZE: u8 = 7;
pub(super) const T_PIDS: u8 = 8;
pub(super) const T_STATS: u8 = 9;
pub(super) const T_SHUTDOWN: u8 = 10;
pub(super) const T_READY: u8 = 64;
pub(super) const T_PONG: u8 = 65;
pub(super) const T_STARTED: u8 = 66;
pub(super) const T_OK: u8 = 67;
pub(super) const T_ERROR: u8 = 68;
pub(super) const T_OUTPUT: u8 = 69;
pub(super) const T_EOF: u8 = 70;
pub(super) const T_EXIT: u8 = 71;
pub(super) const T_PIDS_REPLY: u8 = 72;
pub(super) const T_STATS_REPLY: u8 = 73;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Truncated,
    UnknownType(u8),
    BadStream(u8),
    BadUtf8,
    Empty,
    /// A list longer than [`MAX_ITEMS`].
    TooMany(usize),
    /// A well-formed message with an out-of-range value (exit status, pid).
    Invalid(String),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("truncated message"),
            DecodeError::UnknownType(t) => write!(f, "unknown message type {t}"),
            DecodeError::BadStream(s) => write!(f, "bad stream number {s}"),
            DecodeError::BadUtf8 => f.write_str("string is not UTF-8"),
            DecodeError::Empty => f.write_str("empty frame"),
            DecodeError::TooMany(n) => write!(f, "list of {n} items exceeds {MAX_ITEMS}"),
            DecodeError::Invalid(what) => write!(f, "invalid message: {what}"),
        }
    }
}

impl std::error::Error for DecodeError {}

struct Dec<'a> {
    buf: &'a [u8],
}

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.arr::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.arr()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    /// A count of items each at least `min_item` bytes long, checked against the remaining input.
    fn count(&mut self, min_item: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item) > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        Ok(n)
    }
    /// A list's item count: as [`Dec::count`], and at most [`MAX_ITEMS`].
    fn list(&mut self, min_item: usize) -> Result<usize, DecodeError> {
        let n = self.count(min_item)?;
        if n > MAX_ITEMS {
            return Err(DecodeError::TooMany(n));
        }
        Ok(n)
    }
    fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let n = self.count(1)?;
        Ok(self.take(n)?.to_vec())
    }
    fn str(&mut self) -> Result<String, DecodeError> {
        String::from_utf8(self.bytes()?).map_err(|_| DecodeError::BadUtf8)
    }
    fn strs(&mut self) -> Result<Vec<String>, DecodeError> {
        let n = self.list(4)?;
        (0..n).map(|_| self.str()).collect()
    }
    fn stream(&mut self) -> Result<Stream, DecodeError> {
        let v = self.u8()?;
        Stream::from_u8(v).ok_or(DecodeError::BadStream(v))
    }
    fn process(&mut self) -> Result<Process, DecodeError> {
        let args = self.strs()?;
        let env = self.strs()?;
        let cwd = self.str()?;
        let uid = self.u32()?;
        let gid = self.u32()?;
        let n = self.list(4)?;
        let additional_gids = (0..n).map(|_| self.u32()).collect::<Result<_, _>>()?;
        let terminal = self.u8()? != 0;
        let console_size = match self.u8()? {
            0 => None,
            _ => Some((self.u16()?, self.u16()?)),
        };
        let n = self.list(20)?;
        let rlimits = (0..n)
            .map(|_| {
                Ok(Rlimit {
                    kind: self.str()?,
                    soft: self.u64()?,
                    hard: self.u64()?,
                })
            })
            .collect::<Result<_, DecodeError>>()?;
        let mut p = Process {
            args,
            env,
            cwd,
            uid,
            gid,
            additional_gids,
            terminal,
            console_size,
            rlimits,
            ..Process::default()
        };
        // Version 2 fields, absent from a version-1 host's Process (always the last item of
        // its message): defaults then.
        if !self.buf.is_empty() {
            p.no_new_privileges = self.u8()? != 0;
            p.umask = self.opt(Self::u32)?;
            p.oom_score_adj = self.opt(Self::i32)?;
            p.capabilities = self.opt(|d| {
                Ok(Capabilities {
                    bounding: d.strs()?,
                    effective: d.strs()?,
                    inheritable: d.strs()?,
                    permitted: d.strs()?,
                    ambient: d.strs()?,
                })
            })?;
        }
        Ok(p)
    }
    fn opt<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            _ => f(self).map(Some),
        }
    }
    fn stats(&mut self) -> Result<Stats, DecodeError> {
        Ok(Stats {
            mem_total_bytes: self.u64()?,
            mem_available_bytes: self.u64()?,
            mem_used_bytes: self.u64()?,
            cpu_user_ns: self.u64()?,
            cpu_system_ns: self.u64()?,
            cpu_idle_ns: self.u64()?,
            processes: self.u32()?,
            uptime_ms: self.u64()?,
        })
    }
    fn proc_info(&mut self) -> Result<ProcInfo, DecodeError> {
        Ok(ProcInfo {
            pid: self.u32()?,
            ppid: self.u32()?,
            id: self.str()?,
            comm: self.str()?,
        })
    }
}

/// Decodes a frame body (type byte + payload, without the length prefix). Trailing bytes are ignored
/// so that later protocol versions can append fields. Lengths and counts are checked against the
/// bytes present before anything is allocated; the result is validated and its free text cleaned
/// (exit status 0..=255, started pid ≥ 1; see `check.rs`).
pub fn decode(body: &[u8]) -> Result<Msg, DecodeError> {
    let (&ty, rest) = body.split_first().ok_or(DecodeError::Empty)?;
    let mut d = Dec { buf: rest };
    let msg = match ty {
        T_PING => Msg::Ping { req: d.u32()? },
        T_RUN => Msg::Run {
            req: d.u32()?,
            id: d.str()?,
            process: d.process()?,
        },
        T_EXEC => Msg::Exec {
            req: d.u32()?,
            id: d.str()?,
            process: d.process()?,
        },
        T_STDIN => Msg::Stdin {
            id: d.str()?,
            data: d.bytes()?,
        },
        T_CLOSE_STDIN => Msg::CloseStdin {
            req: d.u32()?,
            id: d.str()?,
        },
        T_SIGNAL => Msg::Signal {
            req: d.u32()?,
            id: d.str()?,
            signo: d.i32()?,
        },
        T_RESIZE => Msg::Resize {
            req: d.u32()?,
            id: d.str()?,
            rows: d.u16()?,
            cols: d.u16()?,
        },
        T_PIDS => Msg::Pids { req: d.u32()? },
        T_STATS => Msg::Stats { req: d.u32()? },
        T_SHUTDOWN => Msg::Shutdown { req: d.u32()? },
        T_READY => Msg::Ready {
            version: d.u32()?,
            kernel: d.str()?,
        },
        T_PONG => Msg::Pong { req: d.u32()? },
        T_STARTED => Msg::Started {
            req: d.u32()?,
            id: d.str()?,
            pid: d.u32()?,
        },
        T_OK => Msg::Ok { req: d.u32()? },
        T_ERROR => Msg::Error {
            req: d.u32()?,
            message: d.str()?,
        },
        T_OUTPUT => Msg::Output {
            id: d.str()?,
            stream: d.stream()?,
            data: d.bytes()?,
        },
        T_EOF => Msg::Eof {
            id: d.str()?,
            stream: d.stream()?,
        },
        T_EXIT => Msg::Exit {
            id: d.str()?,
            status: d.i32()?,
        },
        T_PIDS_REPLY => {
            let req = d.u32()?;
            let n = d.list(16)?;
            let procs = (0..n).map(|_| d.proc_info()).collect::<Result<_, _>>()?;
            Msg::PidsReply { req, procs }
        }
        T_STATS_REPLY => Msg::StatsReply {
            req: d.u32()?,
            stats: d.stats()?,
        },
        other => return Err(DecodeError::UnknownType(other)),
    };
    checked(msg)
}
