//! The host's reader against a hostile "guest" on the other end of a real socketpair.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use tokio::task::JoinHandle;

use super::conn::{read_msg, Conn, OUTPUT_CHUNK, OUTPUT_QUEUE, READ_CHUNK};
use super::stream::ProcessIo;
use super::VmError;
use crate::proto::{encode, FrameReader, Msg, Process, Stream, MAX_TEXT};

struct Guest {
    r: OwnedReadHalf,
    w: OwnedWriteHalf,
}

fn connect() -> (Arc<Conn>, JoinHandle<()>, Guest) {
    let (h, g) = UnixStream::pair().unwrap();
    let (hr, hw) = h.into_split();
    let conn = Conn::new(hw);
    let task = tokio::spawn(conn.clone().read_loop(hr));
    let (r, w) = g.into_split();
    (conn, task, Guest { r, w })
}

/// Start process `id` on the host, answering the guest's side of Run.
async fn start(conn: &Arc<Conn>, g: &mut Guest, id: &str) -> ProcessIo {
    let c = conn.clone();
    let id_s = id.to_string();
    let host = tokio::spawn(async move { c.start(&id_s, &Process::default(), true).await });
    let req = match read_msg(&mut g.r).await.unwrap() {
        Msg::Run { req, .. } => req,
        other => panic!("{other:?}"),
    };
    let started = Msg::Started {
        req,
        id: id.into(),
        pid: 42,
    };
    g.w.write_all(&encode(&started)).await.unwrap();
    host.await.unwrap().unwrap()
}

fn output(id: &str, i: usize, len: usize) -> Vec<u8> {
    encode(&Msg::Output {
        id: id.into(),
        stream: Stream::Stdout,
        data: vec![(i % 251) as u8; len],
    })
}

/// Wait until `f()` stops changing for 300 ms.
async fn settle(f: impl Fn() -> usize) -> usize {
    let mut last = f();
    let mut still = 0;
    while still < 6 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = f();
        still = if now == last { still + 1 } else { 0 };
        last = now;
    }
    last
}

/// What the host may hold for one process whose stdout consumer is idle.
fn bound() -> usize {
    FrameReader::capacity_bound(READ_CHUNK) + (OUTPUT_QUEUE + 1) * OUTPUT_CHUNK
}

#[tokio::test]
async fn a_flood_is_held_back_not_buffered_and_nothing_is_lost() {
    let (conn, _task, mut g) = connect();
    let mut io = start(&conn, &mut g, "p").await;
    const N: usize = 2000;
    const LEN: usize = 32 * 1024;
    let written = Arc::new(AtomicUsize::new(0));
    let w = written.clone();
    let mut gw = g.w;
    let flood = tokio::spawn(async move {
        for i in 0..N {
            gw.write_all(&output("p", i, LEN)).await.unwrap();
            w.fetch_add(1, Ordering::Relaxed);
        }
        gw
    });
    // Nobody reads stdout: the reader must stop and the guest's writes must stall.
    let stalled_at = settle(|| written.load(Ordering::Relaxed)).await;
    let held = conn.buffered_bytes();
    assert!(
        stalled_at < N / 4,
        "the flood was not held back ({stalled_at} frames)"
    );
    assert!(
        held <= bound(),
        "host holds {held} bytes (bound {})",
        bound()
    );
    assert!(held >= OUTPUT_QUEUE * LEN, "queue not used: {held}");
    // Drain: every byte arrives, in order, in chunks within the bound.
    let mut total = 0;
    while total < N * LEN {
        let c = io.stdout.recv().await.unwrap();
        assert!(c.len() <= OUTPUT_CHUNK);
        let i = total / LEN;
        assert!(
            c.iter().all(|&b| b == (i % 251) as u8),
            "chunk of frame {i} corrupted"
        );
        assert!(total % LEN + c.len() <= LEN, "chunk spans frames");
        total += c.len();
        assert!(conn.buffered_bytes() <= bound());
    }
    let _gw = flood.await.unwrap();
    assert_eq!(settle(|| conn.buffered_bytes()).await, 0);
    drop(g.r);
}

#[tokio::test]
async fn big_output_frames_are_split_into_bounded_chunks() {
    let (conn, _task, mut g) = connect();
    let mut io = start(&conn, &mut g, "p").await;
    let len = 4 << 20;
    let w = tokio::spawn(async move {
        g.w.write_all(&output("p", 7, len)).await.unwrap();
        g.w.write_all(&encode(&Msg::Eof {
            id: "p".into(),
            stream: Stream::Stdout,
        }))
        .await
        .unwrap();
        g.w
    });
    let mut total = 0;
    while let Some(c) = io.stdout.recv().await {
        assert!(c.len() <= OUTPUT_CHUNK && c.iter().all(|&b| b == 7));
        total += c.len();
    }
    assert_eq!(total, len);
    w.await.unwrap();
}

#[tokio::test]
async fn output_for_unknown_ids_and_stray_replies_are_dropped() {
    let (conn, _task, mut g) = connect();
    let _io = start(&conn, &mut g, "p").await;
    for i in 0..500 {
        g.w.write_all(&output("nobody", i, 16 * 1024))
            .await
            .unwrap();
        g.w.write_all(&encode(&Msg::Pong {
            req: 1000 + i as u32,
        }))
        .await
        .unwrap();
    }
    // A dropped consumer's output is discarded too, without stalling the reader.
    let io2 = start(&conn, &mut g, "q").await;
    drop(io2);
    for i in 0..500 {
        g.w.write_all(&output("q", i, 16 * 1024)).await.unwrap();
    }
    let fin = Msg::Exit {
        id: "p".into(),
        status: 0,
    };
    g.w.write_all(&encode(&fin)).await.unwrap();
    assert_eq!(conn.wait("p").await.unwrap(), 0);
    assert_eq!(settle(|| conn.buffered_bytes()).await, 0);
}

#[tokio::test]
async fn invalid_exit_status_is_a_protocol_error_not_a_code() {
    for status in [256, -1, i32::MAX] {
        let (conn, task, mut g) = connect();
        let _io = start(&conn, &mut g, "p").await;
        let m = Msg::Exit {
            id: "p".into(),
            status,
        };
        g.w.write_all(&encode(&m)).await.unwrap();
        task.await.unwrap();
        match conn.wait("p").await {
            Err(VmError::Disconnected(why)) => assert!(why.contains("exit status"), "{why}"),
            other => panic!("{status}: {other:?}"),
        }
        assert_eq!(conn.exit_status("p"), None);
    }
}

#[tokio::test]
async fn guest_error_text_is_cleaned_and_bounded() {
    let (conn, _task, mut g) = connect();
    let c = conn.clone();
    let host = tokio::spawn(async move {
        c.request(|req| Msg::Ping { req }, Duration::from_secs(10))
            .await
    });
    let req = read_msg(&mut g.r).await.unwrap().req().unwrap();
    let message = format!("line1\nline2\x1b[2J{}", "x".repeat(100_000));
    g.w.write_all(&encode(&Msg::Error { req, message }))
        .await
        .unwrap();
    match host.await.unwrap() {
        Err(VmError::Guest(m)) => {
            assert!(m.len() <= MAX_TEXT, "{}", m.len());
            assert!(m.starts_with("line1 line2 [2Jxxx"), "{}", &m[..20]);
            assert!(!m.chars().any(char::is_control));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn oversized_or_truncated_frames_end_the_connection() {
    let (conn, task, mut g) = connect();
    g.w.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
    task.await.unwrap();
    let e = conn.ack(|req| Msg::Ping { req }).await.unwrap_err();
    assert!(
        matches!(&e, VmError::Disconnected(w) if w.contains("exceeds")),
        "{e}"
    );

    let (conn, task, g) = connect();
    let mut w = g.w;
    w.write_all(&output("p", 0, 100)[..50]).await.unwrap();
    drop(w);
    drop(g.r);
    task.await.unwrap();
    let e = conn.ack(|req| Msg::Ping { req }).await.unwrap_err();
    assert!(
        matches!(&e, VmError::Disconnected(w) if w.contains("inside a frame")),
        "{e}"
    );
}
