use super::*;

fn from_json(b: &[u8]) -> Result<Process, serde_json::Error> {
    serde_json::from_slice(b)
}

const SPEC: &str = r#"{
    "terminal": false,
    "consoleSize": {"height": 24, "width": 80},
    "user": {"uid": 1000, "gid": 1001, "umask": 18, "additionalGids": [5, 6]},
    "args": ["sh", "-c", "echo hi"],
    "env": ["PATH=/usr/bin:/bin", "FOO=bar"],
    "cwd": "/tmp",
    "capabilities": {"bounding": ["CAP_KILL"]},
    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 512}],
    "noNewPrivileges": true,
    "apparmorProfile": "x",
    "oomScoreAdj": 100
}"#;

#[test]
fn parse_oci_process() {
    let p = from_json(SPEC.as_bytes()).unwrap();
    assert_eq!(p.user.uid, 1000);
    assert_eq!(p.user.gid, 1001);
    assert_eq!(p.user.umask, Some(0o22));
    assert_eq!(p.user.additional_gids, vec![5, 6]);
    assert_eq!(
        p.console_size,
        Some(ConsoleSize {
            height: 24,
            width: 80
        })
    );
    assert_eq!(p.rlimits[0].kind, "RLIMIT_NOFILE");
    assert!(p.no_new_privileges);
    assert_eq!(p.oom_score_adj, Some(100));
    assert_eq!(p.path_var(), "/usr/bin:/bin");
    let pr = prepare(&p).unwrap();
    assert_eq!(pr.oom_score_adj_text, b"100");
    assert_eq!(pr.umask, Some(0o22));
    assert!(pr.no_new_privs);
    assert_eq!(pr.rlimits[0].0, libc::RLIMIT_NOFILE);
    assert_eq!(pr.rlimits[0].1.rlim_cur, 512);
    assert_eq!(pr.candidates.len(), 2);
    assert_eq!(pr.candidates[0].to_str().unwrap(), "/usr/bin/sh");
    assert_eq!(pr.groups, vec![5, 6]);
    assert_eq!(pr.caps.unwrap().bounding, 1 << 5);
    assert_eq!(pr.caps.unwrap().permitted, 0);
}

#[test]
fn capabilities_parse_and_validate() {
    let p = from_json(br#"{"args":["x"]}"#).unwrap();
    assert!(p.capabilities.is_none());
    assert!(prepare(&p).unwrap().caps.is_none());
    let p = from_json(
        br#"{"args":["x"],"capabilities":{"bounding":["CAP_NET_BIND_SERVICE","CAP_CHOWN"],
            "effective":["CAP_NET_BIND_SERVICE"],"permitted":["CAP_NET_BIND_SERVICE"],
            "inheritable":["CAP_NET_BIND_SERVICE"],"ambient":["CAP_NET_BIND_SERVICE"]}}"#,
    )
    .unwrap();
    let c = prepare(&p).unwrap().caps.unwrap();
    assert_eq!(c.bounding, 1 << 10 | 1);
    assert_eq!(
        (c.effective, c.permitted, c.inheritable, c.ambient),
        (1 << 10, 1 << 10, 1 << 10, 1 << 10)
    );
    // An empty object means "no capabilities at all", not "unchanged".
    let p = from_json(br#"{"args":["x"],"capabilities":{}}"#).unwrap();
    assert_eq!(prepare(&p).unwrap().caps, Some(CapSets::default()));
    let p = from_json(br#"{"args":["x"],"capabilities":{"ambient":["CAP_FLY"]}}"#).unwrap();
    assert!(prepare(&p).unwrap_err().contains("CAP_FLY"));
}

#[test]
fn minimal_and_invalid_specs() {
    let p = from_json(br#"{"args":["/bin/true"]}"#).unwrap();
    assert_eq!(p.user.uid, 0);
    assert_eq!(p.path_var(), DEFAULT_PATH);
    assert!(prepare(&p).unwrap().cwd.is_none());
    assert!(prepare(&from_json(br#"{"args":[]}"#).unwrap()).is_err());
    assert!(from_json(b"not json").is_err());
    let mut p = Process {
        args: vec!["x".into()],
        cwd: "relative".into(),
        ..Default::default()
    };
    assert!(prepare(&p).is_err());
    p.cwd = "/".into();
    p.rlimits.push(Rlimit {
        kind: "RLIMIT_BOGUS".into(),
        hard: 1,
        soft: 1,
    });
    assert!(prepare(&p).unwrap_err().contains("RLIMIT_BOGUS"));
    p.rlimits.clear();
    p.env.push("A=\0".into());
    assert!(prepare(&p).is_err());
}

#[test]
fn path_lookup_order() {
    assert_eq!(
        exec_candidates("/bin/sh", "/x"),
        vec![PathBuf::from("/bin/sh")]
    );
    assert_eq!(exec_candidates("./a", "/x"), vec![PathBuf::from("./a")]);
    assert_eq!(
        exec_candidates("ls", "/a::/b"),
        vec![
            PathBuf::from("/a/ls"),
            PathBuf::from("./ls"),
            PathBuf::from("/b/ls")
        ]
    );
    let p = Process {
        args: vec!["x".into()],
        env: vec!["PATH=/first".into(), "PATH=/second".into()],
        ..Default::default()
    };
    assert_eq!(p.path_var(), "/second");
}

#[test]
fn json_round_trip_keeps_config_json_names() {
    let p = from_json(SPEC.as_bytes()).unwrap();
    let v: serde_json::Value = serde_json::to_value(&p).unwrap();
    for k in [
        "terminal",
        "consoleSize",
        "user",
        "args",
        "env",
        "cwd",
        "rlimits",
        "noNewPrivileges",
        "oomScoreAdj",
        "capabilities",
    ] {
        assert!(v.get(k).is_some(), "{k} in {v}");
    }
    assert_eq!(v["user"]["additionalGids"], serde_json::json!([5, 6]));
    assert_eq!(v["rlimits"][0]["type"], "RLIMIT_NOFILE");
    assert_eq!(from_json(&serde_json::to_vec(&p).unwrap()).unwrap(), p);
    // No capabilities: the key is left out (not `null`).
    let p = from_json(br#"{"args":["x"]}"#).unwrap();
    assert!(serde_json::to_value(&p)
        .unwrap()
        .get("capabilities")
        .is_none());
}
