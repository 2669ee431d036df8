//! Pure encode/decode of [`Msg`] (no I/O).

use std::fmt;

use super::{Msg, ProcInfo, Process, Rlimit, Stats, Stream};

// Message type bytes. Host → guest 1..=63, guest → host 64..
const T_PING: u8 = 1;
const T_RUN: u8 = 2;
const T_EXEC: u8 = 3;
const T_STDIN: u8 = 4;
const T_CLOSE_STDIN: u8 = 5;
const T_SIGNAL: u8 = 6;
const T_RESIZE: u8 = 7;
const T_PIDS: u8 = 8;
const T_STATS: u8 = 9;
const T_SHUTDOWN: u8 = 10;
const T_READY: u8 = 64;
const T_PONG: u8 = 65;
const T_STARTED: u8 = 66;
const T_OK: u8 = 67;
const T_ERROR: u8 = 68;
const T_OUTPUT: u8 = 69;
const T_EOF: u8 = 70;
const T_EXIT: u8 = 71;
const T_PIDS_REPLY: u8 = 72;
const T_STATS_REPLY: u8 = 73;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Truncated,
    UnknownType(u8),
    BadStream(u8),
    BadUtf8,
    Empty,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("truncated message"),
            DecodeError::UnknownType(t) => write!(f, "unknown message type {t}"),
            DecodeError::BadStream(s) => write!(f, "bad stream number {s}"),
            DecodeError::BadUtf8 => f.write_str("string is not UTF-8"),
            DecodeError::Empty => f.write_str("empty frame"),
        }
    }
}

impl std::error::Error for DecodeError {}

struct Enc(Vec<u8>);

impl Enc {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }
    fn bytes(&mut self, b: &[u8]) {
        self.len(b.len());
        self.0.extend_from_slice(b);
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
    fn strs(&mut self, v: &[String]) {
        self.len(v.len());
        v.iter().for_each(|s| self.str(s));
    }
    fn process(&mut self, p: &Process) {
        self.strs(&p.args);
        self.strs(&p.env);
        self.str(&p.cwd);
        self.u32(p.uid);
        self.u32(p.gid);
        self.len(p.additional_gids.len());
        p.additional_gids.iter().for_each(|g| self.u32(*g));
        self.u8(u8::from(p.terminal));
        match p.console_size {
            Some((r, c)) => {
                self.u8(1);
                self.u16(r);
                self.u16(c);
            }
            None => self.u8(0),
        }
        self.len(p.rlimits.len());
        for r in &p.rlimits {
            self.str(&r.kind);
            self.u64(r.soft);
            self.u64(r.hard);
        }
    }
    fn stats(&mut self, s: &Stats) {
        self.u64(s.mem_total_bytes);
        self.u64(s.mem_available_bytes);
        self.u64(s.mem_used_bytes);
        self.u64(s.cpu_user_ns);
        self.u64(s.cpu_system_ns);
        self.u64(s.cpu_idle_ns);
        self.u32(s.processes);
        self.u64(s.uptime_ms);
    }
}

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
    fn bytes(&mut self) -> Result<Vec<u8>, DecodeError> {
        let n = self.count(1)?;
        Ok(self.take(n)?.to_vec())
    }
    fn str(&mut self) -> Result<String, DecodeError> {
        String::from_utf8(self.bytes()?).map_err(|_| DecodeError::BadUtf8)
    }
    fn strs(&mut self) -> Result<Vec<String>, DecodeError> {
        let n = self.count(4)?;
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
        let n = self.count(4)?;
        let additional_gids = (0..n).map(|_| self.u32()).collect::<Result<_, _>>()?;
        let terminal = self.u8()? != 0;
        let console_size = match self.u8()? {
            0 => None,
            _ => Some((self.u16()?, self.u16()?)),
        };
        let n = self.count(20)?;
        let rlimits = (0..n)
            .map(|_| {
                Ok(Rlimit {
                    kind: self.str()?,
                    soft: self.u64()?,
                    hard: self.u64()?,
                })
            })
            .collect::<Result<_, DecodeError>>()?;
        Ok(Process {
            args,
            env,
            cwd,
            uid,
            gid,
            additional_gids,
            terminal,
            console_size,
            rlimits,
        })
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

/// Encodes a message as a complete frame (length prefix included).
pub fn encode(msg: &Msg) -> Vec<u8> {
    let mut e = Enc(vec![0, 0, 0, 0]);
    match msg {
        Msg::Ping { req } => {
            e.u8(T_PING);
            e.u32(*req);
        }
        Msg::Run { req, id, process } | Msg::Exec { req, id, process } => {
            e.u8(if matches!(msg, Msg::Run { .. }) {
                T_RUN
            } else {
                T_EXEC
            });
            e.u32(*req);
            e.str(id);
            e.process(process);
        }
        Msg::Stdin { id, data } => {
            e.u8(T_STDIN);
            e.str(id);
            e.bytes(data);
        }
        Msg::CloseStdin { req, id } => {
            e.u8(T_CLOSE_STDIN);
            e.u32(*req);
            e.str(id);
        }
        Msg::Signal { req, id, signo } => {
            e.u8(T_SIGNAL);
            e.u32(*req);
            e.str(id);
            e.i32(*signo);
        }
        Msg::Resize {
            req,
            id,
            rows,
            cols,
        } => {
            e.u8(T_RESIZE);
            e.u32(*req);
            e.str(id);
            e.u16(*rows);
            e.u16(*cols);
        }
        Msg::Pids { req } => {
            e.u8(T_PIDS);
            e.u32(*req);
        }
        Msg::Stats { req } => {
            e.u8(T_STATS);
            e.u32(*req);
        }
        Msg::Shutdown { req } => {
            e.u8(T_SHUTDOWN);
            e.u32(*req);
        }
        Msg::Ready { version, kernel } => {
            e.u8(T_READY);
            e.u32(*version);
            e.str(kernel);
        }
        Msg::Pong { req } => {
            e.u8(T_PONG);
            e.u32(*req);
        }
        Msg::Started { req, id, pid } => {
            e.u8(T_STARTED);
            e.u32(*req);
            e.str(id);
            e.u32(*pid);
        }
        Msg::Ok { req } => {
            e.u8(T_OK);
            e.u32(*req);
        }
        Msg::Error { req, message } => {
            e.u8(T_ERROR);
            e.u32(*req);
            e.str(message);
        }
        Msg::Output { id, stream, data } => {
            e.u8(T_OUTPUT);
            e.str(id);
            e.u8(*stream as u8);
            e.bytes(data);
        }
        Msg::Eof { id, stream } => {
            e.u8(T_EOF);
            e.str(id);
            e.u8(*stream as u8);
        }
        Msg::Exit { id, status } => {
            e.u8(T_EXIT);
            e.str(id);
            e.i32(*status);
        }
        Msg::PidsReply { req, procs } => {
            e.u8(T_PIDS_REPLY);
            e.u32(*req);
            e.len(procs.len());
            for p in procs {
                e.u32(p.pid);
                e.u32(p.ppid);
                e.str(&p.id);
                e.str(&p.comm);
            }
        }
        Msg::StatsReply { req, stats } => {
            e.u8(T_STATS_REPLY);
            e.u32(*req);
            e.stats(stats);
        }
    }
    let body_len = u32::try_from(e.0.len() - 4).unwrap_or(u32::MAX);
    e.0[..4].copy_from_slice(&body_len.to_le_bytes());
    e.0
}

/// Decodes a frame body (type byte + payload, without the length prefix). Trailing bytes are ignored
/// so that later protocol versions can append fields.
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
            let n = d.count(16)?;
            let procs = (0..n).map(|_| d.proc_info()).collect::<Result<_, _>>()?;
            Msg::PidsReply { req, procs }
        }
        T_STATS_REPLY => Msg::StatsReply {
            req: d.u32()?,
            stats: d.stats()?,
        },
        other => return Err(DecodeError::UnknownType(other)),
    };
    Ok(msg)
}
