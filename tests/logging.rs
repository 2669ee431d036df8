//! containerd's binary logging protocol, as nerdctl uses it (`ctr run -d --log-uri
//! binary:///path?args`): a detached container's stdout and stderr reach a logger process
//! while the container runs, on crun and as a Proxmox CT. The logger fixture is a small
//! script writing fd 3 and fd 4 to files and closing fd 5 when it is ready.
//!
//! Needs: root, containerd, crun; for the pct test the double and the static init (see
//! tests/pct_ctr.rs).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::undocumented_unsafe_blocks
)]

mod common;

use common::pve::Pve;
use common::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// Writes the logger fixture into `dir`; returns its `binary://` URI.
fn logger_uri(dir: &Path) -> String {
    let script = dir.join("logger");
    std::fs::write(
        &script,
        "#!/bin/sh\n\
         echo \"$CONTAINER_NAMESPACE/$CONTAINER_ID\" > \"$2/who\"\n\
         echo $$ > \"$2/pid\"\n\
         /bin/cat <&3 5>&- > \"$2/out\" &\n\
         /bin/cat <&4 5>&- > \"$2/err\" &\n\
         exec 5>&-\n\
         wait\n",
    )
    .expect("logger script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    format!("binary://{}?dir={}", script.display(), dir.display())
}

fn wait_for(path: &Path, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = std::fs::read_to_string(path).unwrap_or_default();
        if got.contains(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never held {want:?} (has {got:?})",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The scenario on any TestEnv: output reaches the logger while the container runs; once the
/// task is deleted the logger is gone (EOF, then SIGTERM as containerd's own shim sends).
fn detached_output_reaches_the_logger(env: &TestEnv, dir: &Path, id: &str) {
    let uri = logger_uri(dir);
    env.run_image_detached(
        id,
        &["--log-uri", &uri],
        &[
            "/bin/sh",
            "-c",
            "echo to-stdout; echo to-stderr >&2; exec sleep 300",
        ],
    );
    wait_for(&dir.join("out"), "to-stdout\n");
    wait_for(&dir.join("err"), "to-stderr\n");
    let who = std::fs::read_to_string(dir.join("who")).expect("who");
    assert!(
        who.trim().ends_with(&format!("/{id}")),
        "logger env: {who:?}"
    );
    let pid = std::fs::read_to_string(dir.join("pid")).expect("pid");
    let proc_dir = Path::new("/proc").join(pid.trim());
    assert!(
        proc_dir.exists(),
        "the logger ended while the container runs"
    );
    env.ctr_ok(&["task", "kill", "-s", "SIGKILL", id]);
    env.wait_task_status(id, "STOPPED", Duration::from_secs(60));
    env.ctr_ok(&["task", "rm", id]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while proc_dir.exists() && !is_zombie(&proc_dir) {
        assert!(
            Instant::now() < deadline,
            "the logger outlived its task by 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = std::fs::read_to_string(dir.join("out")).expect("out");
    assert_eq!(out, "to-stdout\n", "stdout only, once");
    let err = std::fs::read_to_string(dir.join("err")).expect("err");
    assert_eq!(err, "to-stderr\n", "stderr only, once");
}

fn is_zombie(proc_dir: &Path) -> bool {
    std::fs::read_to_string(proc_dir.join("stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

#[test]
fn binary_logger_on_crun() {
    let env = TestEnv::new();
    let dir = tempfile::tempdir().expect("dir");
    detached_output_reaches_the_logger(&env, dir.path(), "log1");
}

#[test]
fn binary_logger_on_pct() {
    if skip_unless_our_runtime() {
        return;
    }
    let p = Pve::new(300_500, 300_539);
    let dir = tempfile::Builder::new()
        .prefix("pvl-")
        .tempdir_in("/tmp")
        .expect("dir");
    detached_output_reaches_the_logger(p.env(), dir.path(), "log2");
    p.assert_clean();
}
