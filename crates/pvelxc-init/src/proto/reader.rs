//! Reassembling frames, and assigning received fds to them, from a byte stream.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;

use super::{decode_body, frame_len, Msg, ProtoError, HEADER_LEN, MAX_FDS, MAX_FRAME};

/// Most fds a [`FrameReader`] holds for frames not yet decoded. A reader whose caller
/// decodes after every receive holds at most [`MAX_FDS`].
pub const MAX_PENDING_FDS: usize = 16;
/// Most bytes a [`FrameReader`] buffers: two largest frames (one being completed, one
/// complete but not yet taken by [`FrameReader::next_msg`]).
pub const MAX_BUFFERED: usize = 2 * (HEADER_LEN + MAX_FRAME);

/// Reassembles frames and fds from a stream.
///
/// Which frame owns which fds: the caller hands over what one `recvmsg` returned, bytes
/// and fds together ([`FrameReader::push`]). Those fds belong to the **last frame whose
/// first byte is among those bytes**. This is what the kernel delivers for a sender that
/// attaches a message's fds to the `sendmsg` carrying its frame's first byte: a unix
/// stream `recvmsg` may join earlier fd-less data to a chunk that carries fds, but it
/// ends right after the chunk that carries them, so the frame that starts in that
/// chunk is the last one to start in the `recvmsg`.
///
/// Fds that belong to no frame (no frame starts among the bytes) are closed at once;
/// fds beyond what their message takes ([`Msg::fd_count`]) are closed when it is
/// decoded; a message with fewer fds than it takes is [`ProtoError::MissingFds`] (the
/// frame and its fds are dropped). More than [`MAX_FDS`] fds at once, or more than
/// [`MAX_PENDING_FDS`] held, is [`ProtoError::TooManyFds`] and the fds are closed. Fds
/// never move to another frame.
#[derive(Debug, Default)]
pub struct FrameReader {
    /// Undecoded bytes; `buf[0]` is the first byte of a frame.
    buf: Vec<u8>,
    /// Offset in `buf` of the earliest frame start not yet seen by a `push` whose
    /// header was incomplete or whose first byte had not arrived; every frame start
    /// before it has been assigned its fds.
    walk: usize,
    /// Fds of frames not yet decoded: (offset of the frame in `buf`, fds), by offset.
    fds: VecDeque<(usize, Vec<OwnedFd>)>,
    /// Fds closed because no message could take them (for diagnostics).
    closed: usize,
}

impl FrameReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Append received bytes that came without fds.
    pub fn push_bytes(&mut self, b: &[u8]) -> Result<(), ProtoError> {
        self.push(b, Vec::new())
    }

    /// Append what one `recvmsg` returned: its bytes and the fds that came with them
    /// (in order). See the type's documentation for which frame the fds go to. On
    /// error the fds are closed and nothing is appended; the stream cannot be trusted
    /// any more (the caller drops the connection).
    pub fn push(&mut self, bytes: &[u8], fds: Vec<OwnedFd>) -> Result<(), ProtoError> {
        if fds.len() > MAX_FDS {
            self.closed += fds.len();
            return Err(ProtoError::TooManyFds(fds.len()));
        }
        if self.pending_fds() + fds.len() > MAX_PENDING_FDS {
            self.closed += fds.len();
            return Err(ProtoError::TooManyFds(self.pending_fds() + fds.len()));
        }
        let old = self.buf.len();
        if old + bytes.len() > MAX_BUFFERED {
            self.closed += fds.len();
            return Err(ProtoError::BufferFull(old + bytes.len()));
        }
        self.buf.extend_from_slice(bytes);
        let owner = self.walk_frames(old);
        match owner {
            Ok(Some(at)) if !fds.is_empty() => self.fds.push_back((at, fds)),
            Ok(_) => self.closed += fds.len(),
            Err(e) => {
                self.closed += fds.len();
                return Err(e);
            }
        }
        Ok(())
    }

    /// Advance `walk` over the frame starts now known; the last one at or after `old`
    /// (the start of the newly appended bytes) owns the new fds.
    fn walk_frames(&mut self, old: usize) -> Result<Option<usize>, ProtoError> {
        let mut owner = None;
        while self.walk < self.buf.len() {
            if self.walk >= old {
                owner = Some(self.walk);
            }
            match frame_len(&self.buf[self.walk..])? {
                Some(len) => self.walk += HEADER_LEN + len,
                None => break,
            }
        }
        Ok(owner)
    }

    /// Bytes buffered but not yet decoded.
    pub fn pending_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Fds held for frames not yet decoded (at most [`MAX_PENDING_FDS`]).
    pub fn pending_fds(&self) -> usize {
        self.fds.iter().map(|(_, v)| v.len()).sum()
    }

    /// Fds closed so far because no message took them.
    pub fn closed_fds(&self) -> usize {
        self.closed
    }

    /// Next complete message with its fds, or `Ok(None)` if more bytes are needed.
    /// A frame whose body is invalid, or that lacks fds, is consumed (with its fds
    /// closed) and reported as an error; an oversized header stays an error.
    pub fn next_msg(&mut self) -> Result<Option<(Msg, Vec<OwnedFd>)>, ProtoError> {
        let Some(len) = frame_len(&self.buf)? else {
            return Ok(None);
        };
        let used = HEADER_LEN + len;
        if self.buf.len() < used {
            return Ok(None);
        }
        let parsed = decode_body(&self.buf[HEADER_LEN..used]);
        let mut fds = match self.fds.front() {
            Some((0, _)) => self.fds.pop_front().map(|(_, f)| f).unwrap_or_default(),
            _ => Vec::new(),
        };
        self.buf.drain(..used);
        self.walk -= used;
        for (at, _) in self.fds.iter_mut() {
            *at -= used;
        }
        let msg = match parsed {
            Ok(m) => m,
            Err(e) => {
                self.closed += fds.len();
                return Err(e);
            }
        };
        let need = msg.fd_count();
        if fds.len() < need {
            self.closed += fds.len();
            return Err(ProtoError::MissingFds {
                need,
                have: fds.len(),
            });
        }
        self.closed += fds.len() - need;
        fds.truncate(need);
        Ok(Some((msg, fds)))
    }
}
