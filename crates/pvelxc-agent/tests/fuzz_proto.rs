//! Property tests ("fuzz") of the host ↔ guest agent protocol decoders, bounded so that they
//! run in seconds under `cargo test`. Each prints `fuzz: <name>: <N> cases` to stderr.
//! `FUZZ_CASES=<n>` overrides the number of cases.
//!
//! A counting global allocator records the largest single allocation made while a decoder
//! runs, so "a huge declared length or count allocates nothing" is checked, not assumed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::undocumented_unsafe_blocks
)] // a test crate: panics carry the context

use std::io::Read;

use proptest::prelude::*;
use pvelxc_agent::proto::{
    clean_text, decode, encode, read_frame, Capabilities, DecodeError, FrameError, FrameReader,
    Msg, ProcInfo, Process, Rlimit, Stats, Stream, MAX_FRAME, MAX_TEXT,
};

use pvelxc_guest::testutil::{armed, fuzz, Counting};

#[global_allocator]
static A: Counting = Counting;

/// Decoding `n` bytes may allocate in proportion to them (a 16-byte `ProcInfo` becomes a
/// 56-byte struct; `Vec` growth doubles), never in proportion to a declared length.
fn alloc_cap(n: usize) -> usize {
    8 * n + 4096
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => ".{0,24}",
        1 => (".{1,6}", 0usize..1500).prop_map(|(s, n)| s.repeat(n)),
    ]
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        (any::<u8>(), 0usize..200_000).prop_map(|(b, n)| vec![b; n]),
    ]
}

fn capabilities() -> impl Strategy<Value = Capabilities> {
    let set = || proptest::collection::vec("(CAP_[A-Z_]{1,10}|.{0,8})", 0..4);
    (set(), set(), set(), set(), set()).prop_map(
        |(bounding, effective, inheritable, permitted, ambient)| Capabilities {
            bounding,
            effective,
            inheritable,
            permitted,
            ambient,
        },
    )
}

fn process() -> impl Strategy<Value = Process> {
    let strs = || proptest::collection::vec(".{0,12}", 0..5);
    (
        (strs(), strs(), ".{0,12}", any::<u32>(), any::<u32>()),
        proptest::collection::vec(any::<u32>(), 0..5),
        any::<bool>(),
        proptest::option::of((any::<u16>(), any::<u16>())),
        proptest::collection::vec((".{0,14}", any::<u64>(), any::<u64>()), 0..3),
        (
            any::<bool>(),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<i32>()),
            proptest::option::of(capabilities()),
        ),
    )
        .prop_map(
            |((args, env, cwd, uid, gid), gids, terminal, console_size, rl, v2)| Process {
                args,
                env,
                cwd,
                uid,
                gid,
                additional_gids: gids,
                terminal,
                console_size,
                rlimits: rl
                    .into_iter()
                    .map(|(kind, soft, hard)| Rlimit { kind, soft, hard })
                    .collect(),
                no_new_privileges: v2.0,
                umask: v2.1,
                oom_score_adj: v2.2,
                capabilities: v2.3,
            },
        )
}

fn stream() -> impl Strategy<Value = Stream> {
    prop_oneof![
        Just(Stream::Stdin),
        Just(Stream::Stdout),
        Just(Stream::Stderr)
    ]
}

/// Every message kind with valid values (exit status 0..=255, started pid ≥ 1).
fn valid_msg() -> impl Strategy<Value = Msg> {
    let id = || ".{0,10}";
    let host = prop_oneof![
        any::<u32>().prop_map(|req| Msg::Ping { req }),
        (any::<u32>(), id(), process()).prop_map(|(req, id, process)| Msg::Run {
            req,
            id,
            process
        }),
        (any::<u32>(), id(), process()).prop_map(|(req, id, process)| Msg::Exec {
            req,
            id,
            process
        }),
        (id(), bytes()).prop_map(|(id, data)| Msg::Stdin { id, data }),
        (any::<u32>(), id()).prop_map(|(req, id)| Msg::CloseStdin { req, id }),
        (any::<u32>(), id(), any::<i32>()).prop_map(|(req, id, signo)| Msg::Signal {
            req,
            id,
            signo
        }),
        (any::<u32>(), id(), any::<u16>(), any::<u16>()).prop_map(|(req, id, rows, cols)| {
            Msg::Resize {
                req,
                id,
                rows,
                cols,
            }
        }),
        any::<u32>().prop_map(|req| Msg::Pids { req }),
        any::<u32>().prop_map(|req| Msg::Stats { req }),
        any::<u32>().prop_map(|req| Msg::Shutdown { req }),
    ];
    let procs = proptest::collection::vec(
        (any::<u32>(), any::<u32>(), text(), text()).prop_map(|(pid, ppid, id, comm)| ProcInfo {
            pid,
            ppid,
            id,
            comm,
        }),
        0..4,
    );
    let stats = proptest::array::uniform8(any::<u64>()).prop_map(|v| Stats {
        mem_total_bytes: v[0],
        mem_available_bytes: v[1],
        mem_used_bytes: v[2],
        cpu_user_ns: v[3],
        cpu_system_ns: v[4],
        cpu_idle_ns: v[5],
        processes: v[6] as u32,
        uptime_ms: v[7],
    });
    let guest = prop_oneof![
        (any::<u32>(), text()).prop_map(|(version, kernel)| Msg::Ready { version, kernel }),
        any::<u32>().prop_map(|req| Msg::Pong { req }),
        (any::<u32>(), id(), 1..=u32::MAX).prop_map(|(req, id, pid)| Msg::Started { req, id, pid }),
        any::<u32>().prop_map(|req| Msg::Ok { req }),
        (any::<u32>(), text()).prop_map(|(req, message)| Msg::Error { req, message }),
        (id(), stream(), bytes()).prop_map(|(id, stream, data)| Msg::Output { id, stream, data }),
        (id(), stream()).prop_map(|(id, stream)| Msg::Eof { id, stream }),
        (id(), 0..=255i32).prop_map(|(id, status)| Msg::Exit { id, status }),
        (any::<u32>(), procs).prop_map(|(req, procs)| Msg::PidsReply { req, procs }),
        (any::<u32>(), stats).prop_map(|(req, stats)| Msg::StatsReply { req, stats }),
    ];
    prop_oneof![host, guest]
}

/// What a receiver must decode from `m`: host-bound free text cleaned.
fn cleaned(m: &Msg) -> Msg {
    match m.clone() {
        Msg::Error { req, message } => Msg::Error {
            req,
            message: clean_text(&message),
        },
        Msg::Ready { version, kernel } => Msg::Ready {
            version,
            kernel: clean_text(&kernel),
        },
        Msg::PidsReply { req, procs } => Msg::PidsReply {
            req,
            procs: procs
                .into_iter()
                .map(|p| ProcInfo {
                    id: clean_text(&p.id),
                    comm: clean_text(&p.comm),
                    ..p
                })
                .collect(),
        },
        other => other,
    }
}

/// A `Read` that returns the stream in pieces of the given sizes (cycled).
struct Pieces<'a> {
    data: &'a [u8],
    sizes: &'a [usize],
    i: usize,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.sizes[self.i % self.sizes.len()]
            .min(buf.len())
            .min(self.data.len());
        self.i += 1;
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[test]
fn arbitrary_bodies_never_panic_nor_allocate_by_declared_size() {
    let body = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        // A valid type byte, then fields whose lengths/counts are arbitrary u32s.
        (
            1u8..=73,
            proptest::collection::vec(any::<u32>(), 0..12),
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(t, words, tail)| {
                let mut v = vec![t];
                words.iter().for_each(|w| v.extend(w.to_le_bytes()));
                v.extend(tail);
                v
            }),
    ];
    fuzz("agent arbitrary bodies", 5000, body, |b| {
        let (r, largest) = armed(|| decode(&b));
        prop_assert!(
            largest <= alloc_cap(b.len()),
            "{largest} bytes for a {}-byte body",
            b.len()
        );
        if let Ok(Msg::Exit { status, .. }) = r {
            prop_assert!((0..=255).contains(&status));
        }
        if let Ok(Msg::Error { message, .. }) = r {
            prop_assert!(message.len() <= MAX_TEXT && !message.chars().any(char::is_control));
        }
        Ok(())
    });
}

#[test]
fn arbitrary_streams_stay_bounded_and_terminate() {
    let input = (
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..512),
            (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..256)).prop_map(|(l, b)| {
                let mut v = l.to_le_bytes().to_vec();
                v.extend(b);
                v
            }),
        ],
        proptest::collection::vec(1usize..100, 1..8),
    );
    fuzz("agent arbitrary streams", 4000, input, |(data, sizes)| {
        let mut fr = FrameReader::new();
        let mut off = 0;
        let mut largest = 0;
        'feed: for s in sizes.iter().cycle() {
            if off >= data.len() {
                break;
            }
            let end = (off + s).min(data.len());
            let (r, l) = armed(|| fr.push(&data[off..end]));
            largest = largest.max(l);
            if r.is_err() {
                break;
            }
            off = end;
            for _ in 0..10_000 {
                let (r, l) = armed(|| fr.next_msg());
                largest = largest.max(l);
                match r {
                    Ok(Some(_)) => {}
                    Ok(None) => continue 'feed,
                    Err(_) => break 'feed,
                }
            }
            prop_assert!(false, "next_msg loops");
        }
        prop_assert!(fr.buffered() <= FrameReader::capacity_bound(100));
        prop_assert!(largest <= alloc_cap(data.len()), "{largest} bytes");
        // The blocking reader too, with arbitrary read sizes.
        let mut p = Pieces {
            data: &data,
            sizes: &sizes,
            i: 0,
        };
        let (_, l) = armed(|| {
            for _ in 0..10_000 {
                if !matches!(read_frame(&mut p), Ok(Some(_))) {
                    break;
                }
            }
        });
        prop_assert!(l <= alloc_cap(data.len()), "read_frame: {l} bytes");
        Ok(())
    });
}

#[test]
fn huge_declared_lengths_allocate_nothing() {
    for len in [MAX_FRAME + 1, u32::MAX] {
        let mut fr = FrameReader::new();
        let (r, l) = armed(|| fr.push(&len.to_le_bytes()));
        assert!(matches!(r, Err(FrameError::TooLarge(_))));
        assert!(l < 4096, "{l}");
        let (r, l) = armed(|| read_frame(&mut &len.to_le_bytes()[..]));
        assert!(matches!(r, Err(FrameError::TooLarge(_))));
        assert!(l < 4096, "{l}");
    }
    // A frame that declares MAX_FRAME but carries 10 bytes: read_frame does not reserve it.
    let mut f = MAX_FRAME.to_le_bytes().to_vec();
    f.extend([69u8; 10]);
    let (r, l) = armed(|| read_frame(&mut &f[..]));
    assert!(r.is_err());
    assert!(l < 64 * 1024, "{l}");
    // A u32::MAX list count in a small body.
    let mut body = vec![72u8, 1, 0, 0, 0];
    body.extend(u32::MAX.to_le_bytes());
    let (r, l) = armed(|| decode(&body));
    assert!(matches!(
        r,
        Err(DecodeError::Truncated | DecodeError::TooMany(_))
    ));
    assert!(l < 4096, "{l}");
}

#[test]
fn roundtrip_through_arbitrary_splits() {
    let input = (
        proptest::collection::vec(valid_msg(), 1..8),
        proptest::collection::vec(prop_oneof![1usize..8, 1usize..300, 1usize..70_000], 1..8),
    );
    fuzz("agent roundtrip", 3000, input, |(msgs, sizes)| {
        let stream: Vec<u8> = msgs.iter().flat_map(encode).collect();
        let mut fr = FrameReader::new();
        let mut out = Vec::new();
        let mut off = 0;
        for s in sizes.iter().cycle() {
            if off >= stream.len() {
                break;
            }
            let end = (off + s).min(stream.len());
            fr.push(&stream[off..end])?;
            off = end;
            while let Some(m) = fr.next_msg()? {
                out.push(m);
            }
        }
        prop_assert_eq!(fr.buffered(), 0);
        let want: Vec<Msg> = msgs.iter().map(cleaned).collect();
        prop_assert_eq!(&out, &want);
        // The blocking reader gives the same from the same pieces.
        let mut p = Pieces {
            data: &stream,
            sizes: &sizes,
            i: 0,
        };
        for w in &want {
            let got = read_frame(&mut p)?;
            prop_assert_eq!(got.as_ref(), Some(w));
        }
        prop_assert!(read_frame(&mut p)?.is_none());
        Ok(())
    });
}

#[test]
fn invalid_exit_status_never_decodes() {
    fuzz(
        "agent exit status",
        3000,
        (".{0,8}", any::<i32>()),
        |(id, status)| {
            let f = encode(&Msg::Exit { id, status });
            let r = decode(&f[4..]);
            prop_assert_eq!(r.is_ok(), (0..=255).contains(&status));
            if let Err(e) = r {
                prop_assert!(matches!(e, DecodeError::Invalid(_)));
            }
            Ok(())
        },
    );
}
