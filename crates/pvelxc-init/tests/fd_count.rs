//! A peer that attaches fds to every message cannot make the receiver hold them:
//! /proc/self/fd stays near its starting count. One test in its own binary, so no
//! other test opens fds meanwhile.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::undocumented_unsafe_blocks
)] // a test crate: panics carry the context

use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

use pvelxc_init::proto::{encode, recv_into, send_frame, FrameReader, Msg, MAX_FDS};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn stray_fds_are_closed_not_held() {
    let (a, b) = UnixStream::pair().unwrap();
    b.set_nonblocking(true).unwrap();
    let (r, w) = std::io::pipe().unwrap();
    let base = open_fds();
    let mut rd = FrameReader::new();
    let frame = encode(&Msg::Start).unwrap();
    let (mut sent, mut got, mut peak) = (0, 0, 0);
    for _ in 0..2000 {
        // Every Start comes with MAX_FDS copies of the pipe (Start takes none).
        let fds = vec![w.as_fd(); MAX_FDS];
        assert_eq!(send_frame(a.as_fd(), &frame, &fds).unwrap(), frame.len());
        sent += 1;
        while let Ok(n) = recv_into(b.as_fd(), &mut rd) {
            assert!(n > 0);
            while let Some((m, fds)) = rd.next_msg().unwrap() {
                assert_eq!((m, fds.len()), (Msg::Start, 0));
                got += 1;
            }
        }
        peak = peak.max(open_fds());
    }
    assert_eq!(got, sent);
    assert_eq!(rd.pending_fds(), 0);
    assert_eq!(rd.closed_fds(), sent * MAX_FDS);
    assert_eq!(open_fds(), base, "fds leaked");
    // At most the fds of one recvmsg (plus read_dir's own) are ever open at once.
    assert!(peak <= base + MAX_FDS + 1, "peak {peak}, base {base}");
    drop((r, w));
}
