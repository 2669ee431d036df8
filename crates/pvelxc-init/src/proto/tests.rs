use super::*;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

pub(super) fn devnulls(n: usize) -> Vec<OwnedFd> {
    (0..n)
        .map(|_| std::fs::File::open("/dev/null").unwrap().into())
        .collect()
}

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
            msg: "bad \"json\" ünï".into(),
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
    // Free text from the peer is cleaned on decode.
    let f = encode(&Msg::Error {
        msg: "line1\nline2\x1b[0m".into(),
    })
    .unwrap();
    assert_eq!(
        decode(&f).unwrap().unwrap().0,
        Msg::Error {
            msg: "line1 line2 [0m".into()
        }
    );
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
    // Feed byte by byte, each message's fds with its first byte: every message must
    // come out exactly once, in order, with exactly its fds.
    let mut r = FrameReader::new();
    let mut out = Vec::new();
    for m in all_msgs() {
        let f = encode(&m).unwrap();
        for (i, b) in f.iter().enumerate() {
            let fds = if i == 0 {
                devnulls(m.fd_count())
            } else {
                Vec::new()
            };
            r.push(std::slice::from_ref(b), fds).unwrap();
            while let Some((m, fds)) = r.next_msg().unwrap() {
                assert_eq!(fds.len(), m.fd_count());
                out.push(m);
            }
        }
    }
    assert_eq!(out, all_msgs());
    assert_eq!(r.pending_bytes(), 0);
    assert_eq!((r.pending_fds(), r.closed_fds()), (0, 0));
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
