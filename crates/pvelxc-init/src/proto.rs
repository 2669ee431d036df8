//! Wire protocol between the shim (host side) and `pvelxc-init` (PID 1 in the CT).
//!
//! Transport: a unix stream socket `ctl.sock` the shim listens on; the init connects.
//! Framing: every message is a frame `u32 big-endian length N` + `N` bytes of UTF-8
//! JSON (an object tagged by `"type"`). `N` is at most [`MAX_FRAME`].
//! File descriptors travel as `SCM_RIGHTS` ancillary data attached to the first byte
//! of the frame of the message that carries them; how many a message carries is a
//! function of the message itself ([`Msg::fd_count`]), so the receiver never has to
//! rely on how the kernel splits a stream into `recvmsg` calls: it queues every fd it
//! receives and hands the first `fd_count()` of the queue to each decoded message.
//!
//! Pure functions ([`encode`], [`decode`], [`FrameReader`]) work on byte buffers and
//! are usable from async code; [`send_msg`], [`recv_msg`] are blocking helpers and
//! [`send_frame`], [`recv_into`] are single-syscall building blocks for non-blocking
//! sockets driven by a reactor.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Protocol version sent in [`Msg::Hello`].
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest accepted frame body, in bytes.
pub const MAX_FRAME: usize = 64 * 1024;
/// Largest number of fds one message may carry.
pub const MAX_FDS: usize = 3;
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

/// The content of the exit file (`<dir>/exit`), written atomically (tmp + rename).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// In-CT pid of the process (0 if it never started).
    #[serde(default)]
    pub pid: i32,
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub time_ns: u64,
    /// Set when the init failed before/while starting the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ExitRecord {
    pub fn to_json(&self) -> Result<Vec<u8>, ProtoError> {
        let mut v = serde_json::to_vec(self).map_err(|e| ProtoError::Json(e.to_string()))?;
        v.push(b'\n');
        Ok(v)
    }
    pub fn from_json(b: &[u8]) -> Result<Self, ProtoError> {
        serde_json::from_slice(b).map_err(|e| ProtoError::Json(e.to_string()))
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
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtoError::TooLarge(n) => write!(f, "frame of {n} bytes exceeds {MAX_FRAME}"),
            ProtoError::Json(e) => write!(f, "bad message: {e}"),
            ProtoError::MissingFds { need, have } => {
                write!(f, "message needs {need} fds, {have} received")
            }
            ProtoError::FdCount { need, given } => {
                write!(f, "message carries {need} fds, {given} given")
            }
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
/// the number of bytes it used.
pub fn decode(buf: &[u8]) -> Result<Option<(Msg, usize)>, ProtoError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_FRAME {
        return Err(ProtoError::TooLarge(len));
    }
    if buf.len() < HEADER_LEN + len {
        return Ok(None);
    }
    let msg = serde_json::from_slice(&buf[HEADER_LEN..HEADER_LEN + len])
        .map_err(|e| ProtoError::Json(e.to_string()))?;
    Ok(Some((msg, HEADER_LEN + len)))
}

/// Reassembles frames and fds from a stream.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    fds: VecDeque<OwnedFd>,
}

impl FrameReader {
    pub fn new() -> Self {
        Self::default()
    }
    /// Append received bytes.
    pub fn push_bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    /// Append a received fd (in arrival order).
    pub fn push_fd(&mut self, fd: OwnedFd) {
        self.fds.push_back(fd);
    }
    /// Bytes buffered but not yet decoded.
    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }
    /// Next complete message with its fds, or `Ok(None)` if more bytes are needed.
    pub fn next_msg(&mut self) -> Result<Option<(Msg, Vec<OwnedFd>)>, ProtoError> {
        let Some((msg, used)) = decode(&self.buf)? else {
            return Ok(None);
        };
        let need = msg.fd_count();
        if self.fds.len() < need {
            return Err(ProtoError::MissingFds {
                need,
                have: self.fds.len(),
            });
        }
        self.buf.drain(..used);
        let fds = self.fds.drain(..need).collect();
        Ok(Some((msg, fds)))
    }
}

fn cvt(r: isize) -> io::Result<usize> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// One `sendmsg` of `bytes` with `fds` as SCM_RIGHTS (MSG_NOSIGNAL). Returns bytes
/// written; fds are sent iff the return value is > 0. Works on non-blocking sockets
/// (returns `WouldBlock`).
pub fn send_frame(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
    if fds.len() > MAX_FDS {
        return Err(ProtoError::FdCount {
            need: MAX_FDS,
            given: fds.len(),
        }
        .into());
    }
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // u64 alignment is enough for cmsghdr on Linux.
    let mut cbuf = [0u64; 8];
    // SAFETY: plain zeroed C struct.
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    if !raw.is_empty() {
        let data_len = std::mem::size_of_val(raw.as_slice()) as u32;
        // SAFETY: CMSG_* are pure arithmetic / pointer helpers over our buffer, which
        // is large enough for MAX_FDS ints (checked above).
        unsafe {
            mh.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
            mh.msg_controllen = libc::CMSG_SPACE(data_len) as usize;
            let c = libc::CMSG_FIRSTHDR(&mh);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(data_len) as usize;
            std::ptr::copy_nonoverlapping(
                raw.as_ptr() as *const u8,
                libc::CMSG_DATA(c),
                data_len as usize,
            );
        }
    }
    loop {
        // SAFETY: mh points to live buffers for the duration of the call.
        let r = unsafe { libc::sendmsg(sock.as_raw_fd(), &mh, libc::MSG_NOSIGNAL) };
        match cvt(r) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// One `recvmsg` into `reader` (bytes and fds, fds get O_CLOEXEC). Returns the
/// number of bytes read; 0 means EOF. Works on non-blocking sockets.
pub fn recv_into(sock: BorrowedFd<'_>, reader: &mut FrameReader) -> io::Result<usize> {
    let mut data = [0u8; 8192];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut cbuf = [0u64; 32];
    // SAFETY: plain zeroed C struct.
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    mh.msg_controllen = std::mem::size_of_val(&cbuf);
    let n = loop {
        // SAFETY: buffers outlive the call.
        let r = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut mh, libc::MSG_CMSG_CLOEXEC) };
        match cvt(r) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other?,
        }
    };
    // SAFETY: walking the control buffer the kernel filled, bounded by msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&mh);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let hdr = libc::CMSG_LEN(0) as usize;
                let count =
                    ((*c).cmsg_len as usize).saturating_sub(hdr) / std::mem::size_of::<RawFd>();
                let p = libc::CMSG_DATA(c) as *const RawFd;
                for i in 0..count {
                    let fd = std::ptr::read_unaligned(p.add(i));
                    reader.push_fd(OwnedFd::from_raw_fd(fd));
                }
            }
            c = libc::CMSG_NXTHDR(&mh, c);
        }
    }
    if mh.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::other("control data truncated (too many fds)"));
    }
    reader.push_bytes(&data[..n]);
    Ok(n)
}

fn wait_fd(fd: RawFd, events: libc::c_short) -> io::Result<()> {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, -1) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Blocking: send one message with its fds (`fds.len()` must equal `msg.fd_count()`).
/// Handles partial writes, EINTR and non-blocking sockets.
pub fn send_msg(sock: BorrowedFd<'_>, msg: &Msg, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.len() != msg.fd_count() {
        return Err(ProtoError::FdCount {
            need: msg.fd_count(),
            given: fds.len(),
        }
        .into());
    }
    let frame = encode(msg)?;
    let mut off = 0;
    let mut first = true;
    while off < frame.len() {
        let r = send_frame(sock, &frame[off..], if first { fds } else { &[] });
        match r {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                off += n;
                first = false;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_fd(sock.as_raw_fd(), libc::POLLOUT)?
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Blocking: receive the next message (with its fds). `Ok(None)` on a clean EOF at a
/// frame boundary; EOF inside a frame is `UnexpectedEof`.
pub fn recv_msg(
    sock: BorrowedFd<'_>,
    reader: &mut FrameReader,
) -> io::Result<Option<(Msg, Vec<OwnedFd>)>> {
    loop {
        if let Some(m) = reader.next_msg()? {
            return Ok(Some(m));
        }
        match recv_into(sock, reader) {
            Ok(0) if reader.pending_bytes() == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_fd(sock.as_raw_fd(), libc::POLLIN)?
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    fn all_msgs() -> Vec<Msg> {
        vec![
            Msg::Hello {
                version: PROTOCOL_VERSION,
                terminal: true,
                pid: 1,
                started: None,
            },
            Msg::Pty,
            Msg::Stdio {
                stdin: true,
                stdout: false,
                stderr: true,
            },
            Msg::Start,
            Msg::Started { pid: 7 },
            Msg::Signal {
                signo: 15,
                all: true,
            },
            Msg::Exited {
                pid: 7,
                exit_code: 137,
                signal: Some(9),
                time_ns: 1_700_000_000_000_000_000,
            },
            Msg::Error {
                msg: "bad \"json\"\n".into(),
            },
        ]
    }

    #[test]
    fn roundtrip_each() {
        for m in all_msgs() {
            let f = encode(&m).unwrap();
            let (d, used) = decode(&f).unwrap().unwrap();
            assert_eq!(d, m);
            assert_eq!(used, f.len());
        }
    }

    #[test]
    fn wire_format_is_stable() {
        let f = encode(&Msg::Signal {
            signo: 9,
            all: false,
        })
        .unwrap();
        let body = br#"{"type":"signal","signo":9,"all":false}"#;
        assert_eq!(&f[..4], &(body.len() as u32).to_be_bytes());
        assert_eq!(&f[4..], body);
        let f = encode(&Msg::Start).unwrap();
        assert_eq!(&f[4..], br#"{"type":"start"}"#);
        // Hello without `started` (older peers) still decodes.
        let body = br#"{"type":"hello","version":1,"terminal":false,"pid":1}"#;
        let mut f = (body.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(body);
        assert_eq!(
            decode(&f).unwrap().unwrap().0,
            Msg::Hello {
                version: 1,
                terminal: false,
                pid: 1,
                started: None
            }
        );
    }

    #[test]
    fn partial_and_concatenated_frames() {
        let mut stream = Vec::new();
        for m in all_msgs() {
            stream.extend(encode(&m).unwrap());
        }
        // Feed byte by byte: every message must come out exactly once, in order.
        let mut r = FrameReader::new();
        let mut out = Vec::new();
        for b in &stream {
            r.push_bytes(std::slice::from_ref(b));
            // fds are not needed for decoding order; supply dummies when asked.
            loop {
                match r.next_msg() {
                    Ok(Some((m, _))) => out.push(m),
                    Ok(None) => break,
                    Err(ProtoError::MissingFds { need, have }) => {
                        for _ in have..need {
                            r.push_fd(std::fs::File::open("/dev/null").unwrap().into());
                        }
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
        assert_eq!(out, all_msgs());
        assert_eq!(r.pending_bytes(), 0);
    }

    #[test]
    fn incomplete_and_invalid() {
        assert_eq!(decode(&[]).unwrap(), None);
        assert_eq!(decode(&[0, 0]).unwrap(), None);
        assert_eq!(decode(&[0, 0, 0, 5, b'{']).unwrap(), None);
        assert!(matches!(
            decode(&[0xff, 0xff, 0xff, 0xff]),
            Err(ProtoError::TooLarge(_))
        ));
        assert!(matches!(
            decode(&[0, 0, 0, 2, b'{', b'}']),
            Err(ProtoError::Json(_))
        ));
        assert!(matches!(
            decode(b"\0\0\0\x0f{\"type\":\"nope\"}"),
            Err(ProtoError::Json(_))
        ));
    }

    #[test]
    fn fd_counts() {
        assert_eq!(Msg::Pty.fd_count(), 1);
        assert_eq!(
            Msg::Stdio {
                stdin: false,
                stdout: true,
                stderr: true
            }
            .fd_count(),
            2
        );
        assert_eq!(Msg::Start.fd_count(), 0);
    }

    #[test]
    fn exit_record_json() {
        let r = ExitRecord {
            pid: 2,
            exit_code: 3,
            signal: None,
            time_ns: 5,
            error: None,
        };
        let j = r.to_json().unwrap();
        assert_eq!(
            std::str::from_utf8(&j).unwrap(),
            "{\"pid\":2,\"exit_code\":3,\"signal\":null,\"time_ns\":5}\n"
        );
        assert_eq!(ExitRecord::from_json(&j).unwrap(), r);
        let r2 = ExitRecord::from_json(br#"{"exit_code":137,"signal":9,"time_ns":1}"#).unwrap();
        assert_eq!(r2.signal, Some(9));
        assert_eq!(r2.pid, 0);
    }

    #[test]
    fn fds_over_socketpair() {
        let (a, b) = UnixStream::pair().unwrap();
        // Three pipes; send the write ends of two of them with a Stdio message, then
        // more messages without fds, all in one go.
        let (mut r1, w1) = std::io::pipe().unwrap();
        let (mut r2, w2) = std::io::pipe().unwrap();
        send_msg(
            a.as_fd(),
            &Msg::Stdio {
                stdin: false,
                stdout: true,
                stderr: true,
            },
            &[w1.as_fd(), w2.as_fd()],
        )
        .unwrap();
        send_msg(a.as_fd(), &Msg::Start, &[]).unwrap();
        send_msg(a.as_fd(), &Msg::Pty, &[w1.as_fd()]).unwrap();
        drop((w1, w2));
        drop(a);
        let mut rd = FrameReader::new();
        let (m, fds) = recv_msg(b.as_fd(), &mut rd).unwrap().unwrap();
        assert_eq!(m.fd_count(), 2);
        assert_eq!(fds.len(), 2);
        let (m2, f2) = recv_msg(b.as_fd(), &mut rd).unwrap().unwrap();
        assert_eq!((m2, f2.len()), (Msg::Start, 0));
        let (m3, f3) = recv_msg(b.as_fd(), &mut rd).unwrap().unwrap();
        assert_eq!((m3, f3.len()), (Msg::Pty, 1));
        assert!(recv_msg(b.as_fd(), &mut rd).unwrap().is_none());
        let mut it = fds.into_iter();
        let mut o = std::fs::File::from(it.next().unwrap());
        let mut e = std::fs::File::from(it.next().unwrap());
        o.write_all(b"out").unwrap();
        e.write_all(b"err").unwrap();
        drop((o, e, f3));
        let mut s = String::new();
        r1.read_to_string(&mut s).unwrap();
        assert_eq!(s, "out");
        s.clear();
        r2.read_to_string(&mut s).unwrap();
        assert_eq!(s, "err");
    }

    #[test]
    fn wrong_fd_count_rejected() {
        let (a, _b) = UnixStream::pair().unwrap();
        assert!(send_msg(a.as_fd(), &Msg::Pty, &[]).is_err());
    }

    #[test]
    fn eof_inside_frame() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let f = encode(&Msg::Start).unwrap();
        a.write_all(&f[..3]).unwrap();
        drop(a);
        let mut rd = FrameReader::new();
        let e = recv_msg(b.as_fd(), &mut rd).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
