//! Incremental frame reassembly for a byte stream (no I/O): the host's reader feeds it
//! whatever each read returned and takes complete messages out.

use super::{decode, FrameError, Msg, MAX_FRAME};

/// Length of the frame header (`u32` LE body length).
pub const HEADER_LEN: usize = 4;

/// Reassembles frames from arbitrary pieces of a stream.
///
/// Bounds: a header declaring more than [`MAX_FRAME`] bytes is an error as soon as its 4
/// bytes are in (nothing is reserved for it), and the reader never holds more than one
/// frame plus one pushed piece ([`FrameReader::capacity_bound`]): [`FrameReader::push`]
/// refuses new bytes while a complete frame is still undecoded, so a caller that pushes
/// without decoding cannot make it grow without bound either.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// Bytes of `buf` already decoded (dropped at the next push).
    start: usize,
}

impl FrameReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Most bytes held for pushes of at most `piece` bytes each.
    pub fn capacity_bound(piece: usize) -> usize {
        HEADER_LEN + MAX_FRAME as usize + piece
    }

    /// The declared body length of the frame at the front, if its header is in.
    fn front_len(&self) -> Result<Option<usize>, FrameError> {
        let Some(h) = self.buf[self.start..].first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(*h);
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        Ok(Some(len as usize))
    }

    /// Append bytes read from the stream. Errors when the frame at the front is
    /// oversized or the bytes would exceed one frame plus this piece (a caller that
    /// does not decode between pushes).
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        // What is already buffered must be part of an incomplete frame.
        if let Some(len) = self.front_len()? {
            if self.buf.len() >= HEADER_LEN + len {
                return Err(FrameError::Unread(self.buf.len()));
            }
        }
        self.buf.extend_from_slice(bytes);
        self.front_len()?;
        Ok(())
    }

    /// The next complete message, `Ok(None)` if more bytes are needed. A frame that does
    /// not decode is consumed and reported; an oversized header stays an error.
    pub fn next_msg(&mut self) -> Result<Option<Msg>, FrameError> {
        let Some(len) = self.front_len()? else {
            return Ok(None);
        };
        let body = self.start + HEADER_LEN;
        if self.buf.len() < body + len {
            return Ok(None);
        }
        self.start = body + len;
        let r = decode(&self.buf[body..self.start]);
        if self.start == self.buf.len() {
            // Everything consumed: reset without moving bytes.
            self.buf.clear();
            self.start = 0;
        }
        r.map(Some).map_err(FrameError::Decode)
    }

    /// Bytes held and not yet decoded.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}
