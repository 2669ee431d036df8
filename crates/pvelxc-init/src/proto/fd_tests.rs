//! fd hygiene over real socketpairs with SCM_RIGHTS.
//!
//! The fds sent are pipe write ends; the sender drops its copies after sending, so a
//! non-blocking read of the pipe's read end returns EOF exactly when every copy the
//! receiver got has been closed too (and `WouldBlock` while one is still open). This
//! is exact for the fds under test, unlike counting /proc/self/fd while other tests
//! of the same binary open and close fds in parallel threads.

use super::tests::devnulls;
use super::*;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

struct Pipe {
    r: std::fs::File,
    w: Option<OwnedFd>,
}

fn pipes(n: usize) -> Vec<Pipe> {
    (0..n)
        .map(|_| {
            let (r, w) = std::io::pipe().unwrap();
            let r = std::fs::File::from(OwnedFd::from(r));
            // SAFETY: F_SETFL on an fd we own.
            unsafe {
                let fl = libc::fcntl(r.as_raw_fd(), libc::F_GETFL);
                libc::fcntl(r.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
            }
            Pipe {
                r,
                w: Some(w.into()),
            }
        })
        .collect()
}

/// Send one frame's bytes with the write ends of `ps` as SCM_RIGHTS, then drop the
/// sender's copies.
fn send_with(sock: &UnixStream, bytes: &[u8], ps: &mut [Pipe]) {
    let fds: Vec<_> = ps.iter().map(|p| p.w.as_ref().unwrap().as_fd()).collect();
    assert_eq!(send_raw(sock, bytes, &fds), bytes.len());
    for p in ps.iter_mut() {
        p.w = None;
    }
}

/// `sendmsg` without the MAX_FDS check of [`send_frame`] (a hostile peer).
fn send_raw(sock: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> usize {
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let mut cbuf = [0u64; 32];
    // SAFETY: building a msghdr over live buffers; the control buffer fits 60 fds.
    unsafe {
        let mut mh: libc::msghdr = std::mem::zeroed();
        mh.msg_iov = &mut iov;
        mh.msg_iovlen = 1;
        if !raw.is_empty() {
            let len = (raw.len() * 4) as u32;
            mh.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
            mh.msg_controllen = libc::CMSG_SPACE(len) as usize;
            let c = libc::CMSG_FIRSTHDR(&mh);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(len) as usize;
            std::ptr::copy_nonoverlapping(
                raw.as_ptr() as *const u8,
                libc::CMSG_DATA(c),
                len as usize,
            );
        }
        let r = libc::sendmsg(sock.as_raw_fd(), &mh, libc::MSG_NOSIGNAL);
        assert!(r >= 0, "{}", io::Error::last_os_error());
        r as usize
    }
}

/// Every copy of the pipe's write end is closed.
fn closed(p: &Pipe) -> bool {
    let mut b = [0u8; 1];
    match (&p.r).read(&mut b) {
        Ok(0) => true,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
        other => panic!("unexpected {other:?}"),
    }
}

fn frame(m: &Msg) -> Vec<u8> {
    encode(m).unwrap()
}

#[test]
fn fds_with_a_message_that_takes_none_are_closed() {
    let (a, b) = UnixStream::pair().unwrap();
    let mut ps = pipes(2);
    send_with(&a, &frame(&Msg::Start), &mut ps);
    let mut rd = FrameReader::new();
    let (m, fds) = recv_msg(b.as_fd(), &mut rd).unwrap().unwrap();
    assert_eq!((m, fds.len()), (Msg::Start, 0));
    assert!(ps.iter().all(closed), "stray fds must be closed at once");
    assert_eq!((rd.pending_fds(), rd.closed_fds()), (0, 2));
}

#[test]
fn extra_fds_beyond_fd_count_are_closed_and_the_rest_delivered() {
    let (a, b) = UnixStream::pair().unwrap();
    let mut ps = pipes(3);
    send_with(&a, &frame(&Msg::Pty), &mut ps);
    let mut rd = FrameReader::new();
    let (m, fds) = recv_msg(b.as_fd(), &mut rd).unwrap().unwrap();
    assert_eq!((m, fds.len()), (Msg::Pty, 1));
    assert!(!closed(&ps[0]), "the first fd is the message's");
    assert!(closed(&ps[1]) && closed(&ps[2]));
    drop(fds);
    assert!(closed(&ps[0]));
}

#[test]
fn stray_fds_never_attach_to_a_later_message() {
    let (a, b) = UnixStream::pair().unwrap();
    // Stray fds on a Start, then a Stdio that claims two fds but sends none.
    let mut ps = pipes(2);
    send_with(&a, &frame(&Msg::Start), &mut ps);
    let stdio = Msg::Stdio {
        stdin: true,
        stdout: true,
        stderr: false,
    };
    send_with(&a, &frame(&stdio), &mut []);
    send_with(&a, &frame(&Msg::Start), &mut []);
    let mut rd = FrameReader::new();
    assert_eq!(recv_msg(b.as_fd(), &mut rd).unwrap().unwrap().0, Msg::Start);
    let e = recv_msg(b.as_fd(), &mut rd).unwrap_err();
    let inner = e.get_ref().and_then(|e| e.downcast_ref::<ProtoError>());
    assert_eq!(inner, Some(&ProtoError::MissingFds { need: 2, have: 0 }));
    assert!(ps.iter().all(closed));
    // The bad frame was consumed: the stream goes on with the next message.
    assert_eq!(recv_msg(b.as_fd(), &mut rd).unwrap().unwrap().0, Msg::Start);
}

#[test]
fn fds_on_continuation_bytes_belong_to_no_frame() {
    let (a, b) = UnixStream::pair().unwrap();
    let f = frame(&Msg::Pty);
    let mut ps = pipes(1);
    send_with(&a, &f[..5], &mut []);
    let mut rd = FrameReader::new();
    assert!(recv_into(b.as_fd(), &mut rd).unwrap() == 5);
    // The rest of the frame, with an fd: no frame starts in these bytes.
    send_with(&a, &f[5..], &mut ps);
    assert!(recv_into(b.as_fd(), &mut rd).unwrap() > 0);
    assert!(closed(&ps[0]));
    assert!(matches!(
        rd.next_msg(),
        Err(ProtoError::MissingFds { need: 1, have: 0 })
    ));
}

#[test]
fn glued_reads_give_the_fds_to_the_last_frame_that_starts() {
    // hello (no fds) and pty (1 fd) sent back to back are typically returned by a
    // single recvmsg: the fd must go to pty, not hello.
    let (a, b) = UnixStream::pair().unwrap();
    let hello = Msg::Hello {
        version: PROTOCOL_VERSION,
        terminal: true,
        pid: 1,
        started: None,
    };
    let mut ps = pipes(1);
    send_with(&a, &frame(&hello), &mut []);
    send_with(&a, &frame(&Msg::Pty), &mut ps);
    let mut rd = FrameReader::new();
    let n = recv_into(b.as_fd(), &mut rd).unwrap();
    assert_eq!(n, frame(&hello).len() + frame(&Msg::Pty).len(), "one read");
    let (m1, f1) = rd.next_msg().unwrap().unwrap();
    let (m2, f2) = rd.next_msg().unwrap().unwrap();
    assert_eq!((m1, f1.len()), (hello, 0));
    assert_eq!((m2, f2.len()), (Msg::Pty, 1));
    assert!(!closed(&ps[0]));
    drop(f2);
    assert!(closed(&ps[0]));
}

#[test]
fn more_than_max_fds_at_once_is_an_error_and_all_are_closed() {
    let (a, b) = UnixStream::pair().unwrap();
    let mut ps = pipes(MAX_FDS + 2);
    send_with(&a, &frame(&Msg::Pty), &mut ps);
    let mut rd = FrameReader::new();
    let e = recv_into(b.as_fd(), &mut rd).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(ps.iter().all(closed));
    assert_eq!(rd.pending_fds(), 0);
}

#[test]
fn control_truncation_closes_everything() {
    // 40 fds do not fit the receiver's control buffer (28): MSG_CTRUNC.
    let (a, b) = UnixStream::pair().unwrap();
    let mut ps = pipes(40);
    send_with(&a, &frame(&Msg::Pty), &mut ps);
    let mut rd = FrameReader::new();
    assert!(recv_into(b.as_fd(), &mut rd).is_err());
    assert!(ps.iter().all(closed));
}

#[test]
fn pending_fds_are_bounded_when_nobody_decodes() {
    // A caller that keeps pushing without decoding: the reader stops at MAX_PENDING_FDS.
    let mut rd = FrameReader::new();
    let f = frame(&Msg::Pty);
    let mut refused = 0;
    for _ in 0..(2 * MAX_PENDING_FDS) {
        if rd.push(&f, devnulls(1)).is_err() {
            refused += 1;
        }
        assert!(rd.pending_fds() <= MAX_PENDING_FDS);
    }
    assert_eq!(refused, MAX_PENDING_FDS);
    // Whatever was accepted decodes with its own fd.
    let mut n = 0;
    while let Some((m, fds)) = rd.next_msg().unwrap() {
        assert_eq!((m, fds.len()), (Msg::Pty, 1));
        n += 1;
    }
    assert_eq!(n, MAX_PENDING_FDS);
}

#[test]
fn oversized_header_is_rejected_before_buffering() {
    let (a, b) = UnixStream::pair().unwrap();
    let mut ps = pipes(1);
    send_with(&a, &[0xff, 0xff, 0xff, 0xff, b'{'], &mut ps);
    let mut rd = FrameReader::new();
    assert!(recv_into(b.as_fd(), &mut rd).is_err());
    assert!(closed(&ps[0]));
}
