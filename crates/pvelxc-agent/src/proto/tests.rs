use super::*;

fn sample_process() -> Process {
    Process {
        args: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
        env: vec!["PATH=/bin".into()],
        cwd: "/tmp".into(),
        uid: 1000,
        gid: 100,
        additional_gids: vec![1, 2, 3],
        terminal: true,
        console_size: Some((24, 80)),
        rlimits: vec![Rlimit {
            kind: "RLIMIT_NOFILE".into(),
            soft: 1024,
            hard: 4096,
        }],
        no_new_privileges: true,
        umask: Some(0o027),
        oom_score_adj: Some(-17),
        capabilities: Some(Capabilities {
            bounding: vec!["CAP_KILL".into(), "CAP_NET_BIND_SERVICE".into()],
            effective: vec!["CAP_KILL".into()],
            inheritable: vec![],
            permitted: vec!["CAP_KILL".into()],
            ambient: vec![],
        }),
    }
}

fn all() -> Vec<Msg> {
    vec![
        Msg::Ping { req: 1 },
        Msg::Run {
            req: 2,
            id: "c1".into(),
            process: sample_process(),
        },
        Msg::Exec {
            req: 3,
            id: "e1".into(),
            process: Process::default(),
        },
        Msg::Stdin {
            id: "e1".into(),
            data: b"x\0y".to_vec(),
        },
        Msg::CloseStdin {
            req: 4,
            id: "e1".into(),
        },
        Msg::Signal {
            req: 5,
            id: "c1".into(),
            signo: 9,
        },
        Msg::Resize {
            req: 6,
            id: "c1".into(),
            rows: 50,
            cols: 132,
        },
        Msg::Pids { req: 7 },
        Msg::Stats { req: 8 },
        Msg::Shutdown { req: 9 },
        Msg::Ready {
            version: PROTOCOL_VERSION,
            kernel: "6.1.0".into(),
        },
        Msg::Pong { req: 1 },
        Msg::Started {
            req: 2,
            id: "c1".into(),
            pid: 42,
        },
        Msg::Ok { req: 4 },
        Msg::Error {
            req: 5,
            message: "no such process".into(),
        },
        Msg::Output {
            id: "c1".into(),
            stream: Stream::Stderr,
            data: vec![0xff; 70_000],
        },
        Msg::Eof {
            id: "c1".into(),
            stream: Stream::Stdout,
        },
        Msg::Exit {
            id: "c1".into(),
            status: 137,
        },
        Msg::PidsReply {
            req: 7,
            procs: vec![ProcInfo {
                pid: 42,
                ppid: 1,
                id: "c1".into(),
                comm: "sh".into(),
            }],
        },
        Msg::StatsReply {
            req: 8,
            stats: Stats {
                mem_total_bytes: 1,
                mem_available_bytes: 2,
                mem_used_bytes: 3,
                cpu_user_ns: 4,
                cpu_system_ns: 5,
                cpu_idle_ns: 6,
                processes: 7,
                uptime_ms: 8,
            },
        },
    ]
}

/// `m` with the version-2 fields of its Process at their defaults.
fn as_version_1(m: &Msg) -> Msg {
    let v1 = |p: &Process| Process {
        no_new_privileges: false,
        umask: None,
        oom_score_adj: None,
        capabilities: None,
        ..p.clone()
    };
    match m {
        Msg::Run { req, id, process } => Msg::Run {
            req: *req,
            id: id.clone(),
            process: v1(process),
        },
        Msg::Exec { req, id, process } => Msg::Exec {
            req: *req,
            id: id.clone(),
            process: v1(process),
        },
        other => other.clone(),
    }
}

#[test]
fn version_1_process_decodes_with_defaults() {
    let m = Msg::Run {
        req: 2,
        id: "c1".into(),
        process: sample_process(),
    };
    let frame = encode(&m);
    // The version-2 tail: nnp 1, umask (1 + 4), oom (1 + 4), caps (1 + 5 lists).
    let caps_len = 1 + 5 * 4 + (4 + 8) + (4 + 20) + (4 + 8) + (4 + 8);
    let tail = 1 + 5 + 5 + caps_len;
    let v1_body = &frame[4..frame.len() - tail];
    assert_eq!(decode(v1_body).unwrap(), as_version_1(&m));
    assert_ne!(as_version_1(&m), m);
    // A version-1 guest stops after rlimits: the tail is trailing bytes it ignores.
    assert!(decode(&frame[4..frame.len() - 1]).is_err());
}

#[test]
fn roundtrip_every_message() {
    for m in all() {
        let frame = encode(&m);
        let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        assert_eq!(len, frame.len() - 4);
        assert_eq!(decode(&frame[4..]).unwrap(), m);
    }
}

#[test]
fn stream_of_frames_and_clean_eof() {
    let mut buf = Vec::new();
    for m in all() {
        write_frame(&mut buf, &m).unwrap();
    }
    let mut r = std::io::Cursor::new(buf);
    for m in all() {
        assert_eq!(read_frame(&mut r).unwrap(), Some(m));
    }
    assert_eq!(read_frame(&mut r).unwrap(), None);
}

#[test]
fn truncated_and_garbage_are_errors() {
    for m in all() {
        let frame = encode(&m);
        let body = &frame[4..];
        for cut in 0..body.len().min(64) {
            // Cut right after `rlimits`: a version-1 Process, valid with defaults.
            if let Ok(d) = decode(&body[..cut]) {
                assert_eq!(d, as_version_1(&m), "{m:?} cut at {cut}");
            }
        }
    }
    assert_eq!(decode(&[200]), Err(DecodeError::UnknownType(200)));
    // A huge list count must not allocate.
    let mut body = vec![8 + 64, 1, 0, 0, 0];
    body.extend_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(decode(&body), Err(DecodeError::Truncated));
    let too_big = (MAX_FRAME + 1).to_le_bytes();
    assert!(matches!(
        read_frame(&mut std::io::Cursor::new(too_big.to_vec())),
        Err(FrameError::TooLarge(_))
    ));
}
