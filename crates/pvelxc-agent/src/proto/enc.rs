//! Pure encode of [`Msg`] (no I/O).

use super::codec::*;
use super::{Msg, Process, Stats};

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
        // Version 2 (appended: a version-1 guest ignores trailing bytes).
        self.u8(u8::from(p.no_new_privileges));
        self.opt(p.umask, Self::u32);
        self.opt(p.oom_score_adj, Self::i32);
        self.opt(p.capabilities.as_ref(), |e, c| {
            for set in [
                &c.bounding,
                &c.effective,
                &c.inheritable,
                &c.permitted,
                &c.ambient,
            ] {
                e.strs(set);
            }
        });
    }
    fn opt<T>(&mut self, v: Option<T>, f: impl FnOnce(&mut Self, T)) {
        match v {
            Some(v) => {
                self.u8(1);
                f(self, v);
            }
            None => self.u8(0),
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
