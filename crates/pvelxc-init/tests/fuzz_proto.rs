//! Property tests ("fuzz") of the shim ↔ init protocol decoders, bounded so that they run
//! in seconds under `cargo test`. Each prints `fuzz: <name>: <N> cases` to stderr.
//! `FUZZ_CASES=<n>` overrides the number of cases (e.g. for a longer local run).
//!
//! A counting global allocator records the largest single allocation made while a
//! decoder runs ([`armed`]), so "a 4 GB length is rejected before allocation" is checked,
//! not assumed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::undocumented_unsafe_blocks
)] // a test crate: panics carry the context

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use proptest::prelude::*;
use pvelxc_init::proto::{
    clean_text, decode, encode, ExitRecord, FrameReader, Msg, ProtoError, MAX_BUFFERED, MAX_FDS,
    MAX_FRAME, MAX_PENDING_FDS, MAX_TEXT,
};

use pvelxc_guest::testutil::{self, Counting};

#[global_allocator]
static A: Counting = Counting;

/// Largest allocation any decoder may make: its buffer cap, doubled by `Vec` growth.
const ALLOC_CAP: usize = 2 * MAX_BUFFERED;

/// Run `f` (a decoder call) with its allocations recorded.
fn armed<T>(f: impl FnOnce() -> T) -> T {
    testutil::armed(f).0
}

/// [`testutil::fuzz`], then no recorded allocation may exceed [`ALLOC_CAP`].
fn fuzz<S: Strategy>(
    name: &str,
    n: u32,
    strat: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    testutil::fuzz(name, n, strat, test);
    let largest = testutil::largest_ever();
    assert!(
        largest <= ALLOC_CAP,
        "{name}: an allocation of {largest} bytes"
    );
}

fn devnull() -> OwnedFd {
    std::fs::File::open("/dev/null").unwrap().into()
}

/// Arbitrary text, short, or long around [`MAX_TEXT`] (built by repetition: generating
/// thousands of random chars one by one is slow).
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => ".{0,40}",
        1 => (".{1,6}", 0usize..1500).prop_map(|(s, n)| s.repeat(n)),
    ]
}

fn valid_msg() -> impl Strategy<Value = Msg> {
    let exit = prop_oneof![
        (0..=255i32).prop_map(|c| (c, None)),
        (1..=64i32).prop_map(|s| (128 + s, Some(s))),
    ];
    prop_oneof![
        (
            any::<u32>(),
            any::<bool>(),
            1..=i32::MAX,
            proptest::option::of(1..=i32::MAX)
        )
            .prop_map(|(version, terminal, pid, started)| Msg::Hello {
                version,
                terminal,
                pid,
                started
            }),
        Just(Msg::Pty),
        (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(stdin, stdout, stderr)| {
            Msg::Stdio {
                stdin,
                stdout,
                stderr,
            }
        }),
        Just(Msg::Start),
        (1..=i32::MAX).prop_map(|pid| Msg::Started { pid }),
        (any::<i32>(), any::<bool>()).prop_map(|(signo, all)| Msg::Signal { signo, all }),
        (0..=i32::MAX, exit, any::<u64>()).prop_map(|(pid, (exit_code, signal), time_ns)| {
            Msg::Exited {
                pid,
                exit_code,
                signal,
                time_ns,
            }
        }),
        text().prop_map(|msg| Msg::Error { msg }),
    ]
}

/// What a receiver must decode from `m`.
fn cleaned(m: &Msg) -> Msg {
    match m {
        Msg::Error { msg } => Msg::Error {
            msg: clean_text(msg),
        },
        other => other.clone(),
    }
}

/// Cut `total` bytes into chunks: sizes from `sizes` (cycled), plus `forced` cut points.
fn chunks(total: usize, sizes: &[usize], forced: &[usize]) -> Vec<(usize, usize)> {
    let mut cuts: Vec<usize> = forced
        .iter()
        .copied()
        .filter(|&c| c > 0 && c < total)
        .collect();
    let mut at = 0;
    for s in sizes.iter().cycle() {
        at += s;
        if at >= total {
            break;
        }
        cuts.push(at);
    }
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut start = 0;
    for c in cuts.into_iter().chain([total]) {
        out.push((start, c));
        start = c;
    }
    out
}

#[test]
fn arbitrary_bytes_never_panic_and_stay_bounded() {
    let input = (
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..512),
            // Plausible headers in front of garbage: small, exact and huge lengths.
            (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..256)).prop_map(|(l, b)| {
                let mut v = l.to_be_bytes().to_vec();
                v.extend(b);
                v
            }),
        ],
        proptest::collection::vec((1usize..64, 0usize..=MAX_FDS + 1), 1..16),
    );
    fuzz("init arbitrary bytes", 4000, input, |(bytes, pattern)| {
        let _ = armed(|| decode(&bytes));
        let _ = armed(|| ExitRecord::from_json(&bytes));
        let mut r = FrameReader::new();
        let (mut sent, mut got) = (0, 0);
        let mut off = 0;
        for (len, nfds) in pattern.iter().cycle() {
            if off >= bytes.len() {
                break;
            }
            let end = (off + len).min(bytes.len());
            let fds: Vec<OwnedFd> = (0..*nfds).map(|_| devnull()).collect();
            sent += nfds;
            // On error the reader closes the fds (and counts them in closed_fds()).
            if armed(|| r.push(&bytes[off..end], fds)).is_err() {
                break;
            }
            off = end;
            // Decode like a caller does; stop at the first error.
            let mut steps = 0;
            loop {
                steps += 1;
                prop_assert!(steps < 10_000, "next_msg loops");
                match armed(|| r.next_msg()) {
                    Ok(Some((m, f))) => {
                        prop_assert_eq!(f.len(), m.fd_count());
                        got += f.len();
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            prop_assert!(r.pending_fds() <= MAX_PENDING_FDS);
            prop_assert!(r.pending_bytes() <= MAX_BUFFERED);
        }
        // Every fd handed to the reader is delivered, closed, or still pending.
        prop_assert_eq!(sent, got + r.closed_fds() + r.pending_fds());
        Ok(())
    });
}

#[test]
fn huge_declared_length_is_rejected_before_allocation() {
    for len in [MAX_FRAME as u32 + 1, 1 << 30, u32::MAX] {
        let mut r = FrameReader::new();
        let e = armed(|| r.push(&len.to_be_bytes(), Vec::new())).unwrap_err();
        assert_eq!(e, ProtoError::TooLarge(len as usize));
        // A header plus some body bytes: still refused without buffering.
        let mut f = len.to_be_bytes().to_vec();
        f.extend_from_slice(b"{\"type\":\"start\"}");
        assert!(armed(|| decode(&f)).is_err());
    }
    let largest = testutil::largest_ever();
    assert!(largest <= ALLOC_CAP, "an allocation of {largest} bytes");
}

#[test]
fn roundtrip_with_arbitrary_splits_and_fd_patterns() {
    let input = (
        proptest::collection::vec(valid_msg(), 1..12),
        proptest::collection::vec(prop_oneof![1usize..8, 1usize..200, 1usize..9000], 1..8),
        // Hostile extra fds per chunk (cycled over the chunks): 0 most of the time.
        proptest::collection::vec(
            prop_oneof![4 => Just(0usize), 1 => 0usize..=MAX_FDS + 1],
            1..8,
        ),
    );
    fuzz(
        "init roundtrip + fd patterns",
        3000,
        input,
        |(msgs, sizes, extra)| {
            let frames: Vec<Vec<u8>> = msgs.iter().map(|m| encode(m).unwrap()).collect();
            let starts: Vec<usize> = frames
                .iter()
                .scan(0, |at, f| {
                    let s = *at;
                    *at += f.len();
                    Some(s)
                })
                .collect();
            let stream = frames.concat();
            // The kernel ends a recvmsg after the chunk that carries fds: a frame that takes
            // fds is never followed by another frame start in the same read.
            let forced: Vec<usize> = msgs
                .iter()
                .zip(&frames)
                .zip(&starts)
                .filter(|((m, _), _)| m.fd_count() > 0)
                .map(|((_, f), s)| s + f.len())
                .collect();
            let parts = chunks(stream.len(), &sizes, &forced);

            // Independent model: the last frame starting in a chunk owns its fds. Fds are
            // made chunk by chunk (a long stream would exhaust RLIMIT_NOFILE otherwise) and
            // compared by number when their message comes out: they stay open in between,
            // so no other open fd can have that number.
            let mut expect_fds: Vec<Vec<RawFd>> = vec![Vec::new(); msgs.len()];
            let (mut sent, mut delivered) = (0, 0);
            let mut bad = None; // first chunk whose fd count is over MAX_FDS
            let mut r = FrameReader::new();
            let mut out = 0;
            for (ci, &(a, b)) in parts.iter().enumerate() {
                let owner = (0..msgs.len())
                    .rev()
                    .find(|&i| starts[i] >= a && starts[i] < b);
                let mut fds: Vec<OwnedFd> = Vec::new();
                if let Some(i) = owner {
                    fds.extend((0..msgs[i].fd_count()).map(|_| devnull()));
                    expect_fds[i] = fds.iter().map(|f| f.as_raw_fd()).collect();
                }
                fds.extend((0..extra[ci % extra.len()]).map(|_| devnull()));
                sent += fds.len();
                if fds.len() > MAX_FDS {
                    bad = Some(ci);
                }
                if let Err(e) = armed(|| r.push(&stream[a..b], fds)) {
                    prop_assert!(matches!(e, ProtoError::TooManyFds(_)), "{e}");
                    break;
                }
                prop_assert!(bad.is_none(), "{} fds in one chunk accepted", MAX_FDS + 1);
                while let Some((m, f)) = armed(|| r.next_msg())? {
                    prop_assert!(out < msgs.len());
                    prop_assert_eq!(&m, &cleaned(&msgs[out]));
                    let raw: Vec<RawFd> = f.iter().map(|f| f.as_raw_fd()).collect();
                    prop_assert_eq!(&raw, &expect_fds[out]);
                    delivered += f.len();
                    out += 1;
                }
                prop_assert!(r.pending_fds() <= MAX_FDS);
            }
            // Messages whose frame was complete before a failing chunk all came out.
            let complete = match bad {
                None => msgs.len(),
                Some(ci) => (0..msgs.len())
                    .filter(|&i| starts[i] + frames[i].len() <= parts[ci].0)
                    .count(),
            };
            prop_assert_eq!(out, complete);
            prop_assert_eq!(sent, delivered + r.closed_fds() + r.pending_fds());
            if bad.is_none() {
                prop_assert_eq!(r.pending_bytes(), 0);
                prop_assert_eq!(r.pending_fds(), 0);
            }
            Ok(())
        },
    );
}

#[test]
fn exit_records_validate_and_roundtrip() {
    let rec = (
        0..=i32::MAX,
        prop_oneof![
            (0..=255i32).prop_map(|c| (c, None)),
            (1..=64i32).prop_map(|s| (128 + s, Some(s))),
        ],
        any::<u64>(),
        proptest::option::of(text()),
    );
    fuzz(
        "init exit record",
        2000,
        rec,
        |(pid, (exit_code, signal), time_ns, error)| {
            let r = ExitRecord {
                pid,
                exit_code,
                signal,
                time_ns,
                error,
            };
            let back = ExitRecord::from_json(&r.to_json().unwrap()).unwrap();
            prop_assert_eq!(back.exit_code, r.exit_code);
            prop_assert_eq!(back.error, r.error.as_deref().map(clean_text));
            Ok(())
        },
    );
    let bad = (any::<i32>(), proptest::option::of(any::<i32>()));
    fuzz(
        "init exit record ranges",
        2000,
        bad,
        |(exit_code, signal)| {
            let ok = (0..=255).contains(&exit_code)
                && signal.is_none_or(|s| (1..=64).contains(&s) && exit_code == 128 + s);
            let r = ExitRecord {
                pid: 1,
                exit_code,
                signal,
                time_ns: 0,
                error: None,
            };
            prop_assert_eq!(ExitRecord::from_json(&r.to_json().unwrap()).is_ok(), ok);
            let m = Msg::Exited {
                pid: 1,
                exit_code,
                signal,
                time_ns: 0,
            };
            prop_assert_eq!(decode(&encode(&m).unwrap()).is_ok(), ok);
            Ok(())
        },
    );
}

#[test]
fn clean_text_properties() {
    fuzz("init clean_text", 3000, text(), |s| {
        let c = armed(|| clean_text(&s));
        prop_assert!(c.len() <= MAX_TEXT);
        prop_assert!(!c.chars().any(char::is_control));
        prop_assert_eq!(clean_text(&c), c.clone());
        let bidi = |c: char| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
        prop_assert!(!c.chars().any(bidi));
        if s.len() <= MAX_TEXT && !s.chars().any(|c| c.is_control() || bidi(c)) {
            prop_assert_eq!(&c, &s);
        }
        Ok(())
    });
}
