//! The socket side: single `sendmsg`/`recvmsg` calls with `SCM_RIGHTS`, and blocking
//! helpers built on them.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::{encode, FrameReader, Msg, ProtoError, MAX_FDS, MAX_PENDING_FDS};

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

/// Control buffer of [`recv_into`]: room for 28 fds, well above [`MAX_FDS`], so that a peer
/// sending more than [`MAX_FDS`] at once is seen (and its fds closed) rather than
/// silently truncated. 8-byte aligned as `cmsghdr` needs.
const CMSG_WORDS: usize = 16;

/// One `recvmsg` into `reader` (bytes and fds, fds get O_CLOEXEC). Returns the
/// number of bytes read; 0 means EOF. Works on non-blocking sockets.
///
/// The fds go to the frame [`FrameReader::push`] assigns them to; errors (too many
/// fds, control data truncated, an oversized frame) come back as `InvalidData` with
/// every received fd already closed.
pub fn recv_into(sock: BorrowedFd<'_>, reader: &mut FrameReader) -> io::Result<usize> {
    let mut data = [0u8; 8192];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut cbuf = [0u64; CMSG_WORDS];
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
    // Own every fd first, so that each is closed on any error path below.
    let mut fds: Vec<OwnedFd> = Vec::new();
    // SAFETY: walking the control buffer the kernel filled, bounded by msg_controllen;
    // the kernel installed each fd in this process and nothing else owns it.
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
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            c = libc::CMSG_NXTHDR(&mh, c);
        }
    }
    if mh.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(ProtoError::TooManyFds(fds.len().max(MAX_PENDING_FDS + 1)).into());
    }
    reader.push(&data[..n], fds)?;
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
