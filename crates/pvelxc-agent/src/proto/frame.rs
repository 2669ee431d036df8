//! Blocking frame I/O over any `Read`/`Write` (used by the guest; the host has an async twin).

use std::fmt;
use std::io::{self, Read, Write};

use super::{decode, encode, DecodeError, Msg, MAX_FRAME};

#[derive(Debug)]
pub enum FrameError {
    Io(io::Error),
    TooLarge(u32),
    Decode(DecodeError),
    /// [`super::FrameReader::push`] while a complete frame was still undecoded (bytes held).
    Unread(usize),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Io(e) => write!(f, "frame I/O: {e}"),
            FrameError::TooLarge(n) => {
                write!(f, "frame of {n} bytes exceeds the {MAX_FRAME} byte limit")
            }
            FrameError::Decode(e) => write!(f, "frame decode: {e}"),
            FrameError::Unread(n) => write!(f, "{n} bytes pushed past an undecoded frame"),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

/// Writes one frame (a single `write_all`, so concurrent writers holding a lock never interleave).
pub fn write_frame<W: Write>(w: &mut W, msg: &Msg) -> io::Result<()> {
    w.write_all(&encode(msg))?;
    w.flush()
}

/// Reads one frame; `Ok(None)` on a clean end of stream before the first length byte.
pub fn read_frame<R: Read>(r: &mut R) -> Result<Option<Msg>, FrameError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < len.len() {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    // Grows with the bytes that actually arrive, not with the declared length.
    let mut body = Vec::new();
    r.take(u64::from(len)).read_to_end(&mut body)?;
    if body.len() < len as usize {
        return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    decode(&body).map(Some).map_err(FrameError::Decode)
}
