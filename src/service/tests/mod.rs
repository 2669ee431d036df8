//! The task service without containerd: a fake backend (`fake.rs`) and a recording event sink.
//! The ordering rules the README promises are checked over generated interleavings of
//! starts, execs, kills, pauses and exits (proptest).

mod fake;
mod ordering;

use std::sync::Arc;
use std::time::Duration;

use containerd_shim::ExitSignal;
use containerd_shim_protos::ttrpc::Code;
use oci_spec::runtime::Process;

use super::model::{CreateTask, ExecTask, TaskEvent};
use super::state::Status;
use super::Service;
use crate::options::RuntimeOptions;
use crate::sys::stdio::StdioPaths;
use fake::{FakeBackend, Recorder};

pub struct Harness {
    pub svc: Service,
    pub events: Arc<Recorder>,
    pub backend: Arc<FakeBackend>,
    pub dir: tempfile::TempDir,
}

impl Harness {
    pub fn new(exit_delay: u32) -> Harness {
        let events = Arc::new(Recorder::default());
        let backend = Arc::new(FakeBackend::default());
        backend
            .exit_delay
            .store(exit_delay, std::sync::atomic::Ordering::SeqCst);
        let b = backend.clone();
        let svc = Service::with_backends(
            "testns".into(),
            events.clone(),
            Arc::new(ExitSignal::default()),
            Arc::new(move |_| b.clone()),
        );
        Harness {
            svc,
            events,
            backend,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn request(&self, id: &str) -> CreateTask {
        CreateTask {
            id: id.into(),
            bundle: fake::bundle(self.dir.path()),
            rootfs: Vec::new(),
            stdio: StdioPaths::default(),
            options: Some(RuntimeOptions {
                config_path: Some(self.dir.path().join("config.toml").display().to_string()),
                ..Default::default()
            }),
            checkpoint: false,
        }
    }

    pub async fn create(&self, id: &str) -> u32 {
        self.svc.create(self.request(id)).await.expect("create")
    }

    pub fn exec_req(&self, id: &str, exec_id: &str) -> ExecTask {
        let process: Process = serde_json::from_str(
            r#"{"args":["true"],"cwd":"/","user":{"uid":0,"gid":0},"terminal":true}"#,
        )
        .expect("process");
        ExecTask {
            id: id.into(),
            exec_id: exec_id.into(),
            process,
            stdio: StdioPaths::default(),
        }
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("the service did not answer within 10 s")
}

#[test]
fn lifecycle_events_and_answers() {
    rt().block_on(async {
        let h = Harness::new(2);
        let pid = h.create("c1").await;
        assert_eq!(pid, 100);
        assert_eq!(
            h.svc.state("c1", "").expect("state").state.status,
            Status::Created
        );
        assert_eq!(h.svc.start("c1", "").await.expect("start"), 100);
        h.svc.exec(h.exec_req("c1", "e1")).expect("exec");
        let epid = h.svc.start("c1", "e1").await.expect("start exec");
        assert_eq!(epid, 101);
        h.svc.kill("c1", "e1", 15, false).await.expect("kill exec");
        let e = bounded(h.svc.wait("c1", "e1")).await.expect("wait exec");
        assert_eq!(e.code, 128 + 15);
        h.svc.delete("c1", "e1").await.expect("delete exec");
        h.svc.kill("c1", "", 9, false).await.expect("kill");
        let e = bounded(h.svc.wait("c1", "")).await.expect("wait");
        assert_eq!(e.code, 137);
        let st = h.svc.state("c1", "").expect("state");
        assert_eq!(
            (st.state.status, st.state.exit_code()),
            (Status::Stopped, 137)
        );
        let d = h.svc.delete("c1", "").await.expect("delete");
        assert_eq!(d.state.exit_code(), 137);
        let names: Vec<&str> = h.events.events().iter().map(name).collect();
        assert_eq!(
            names,
            [
                "create",
                "start",
                "exec-added",
                "exec-started",
                "exit e1",
                "exit",
                "delete"
            ]
        );
        // The exec spec keeps the request's terminal flag, not the spec's.
        let calls = h.backend.made.lock().expect("made")[0]
            .calls
            .lock()
            .expect("c")
            .clone();
        assert!(
            calls.contains(&"delete force=false".to_string()),
            "{calls:?}"
        );
        assert_eq!(
            h.svc.state("c1", "").expect_err("gone").code(),
            Code::NOT_FOUND
        );
    });
}

#[test]
fn wrong_calls_get_their_codes_and_change_nothing() {
    rt().block_on(async {
        let h = Harness::new(0);
        let mut bad = h.request("../x");
        assert_eq!(
            h.svc.create(bad.clone()).await.expect_err("id").code(),
            Code::INVALID_ARGUMENT
        );
        bad.id = "c2".into();
        bad.checkpoint = true;
        assert_eq!(
            h.svc.create(bad.clone()).await.expect_err("ckpt").code(),
            Code::UNIMPLEMENTED
        );
        bad.checkpoint = false;
        bad.bundle = h.dir.path().join("missing");
        assert_eq!(
            h.svc.create(bad).await.expect_err("bundle").code(),
            Code::INVALID_ARGUMENT
        );
        let req = h.request("c2");
        std::fs::write(req.bundle.join("config.json"), b"{not json").expect("write");
        let e = h.svc.create(req).await.expect_err("malformed");
        assert_eq!(e.code(), Code::INVALID_ARGUMENT);
        assert!(e.to_string().contains("malformed"), "{e}");
        assert!(
            h.events.events().is_empty(),
            "no event for a refused create"
        );

        h.create("c1").await;
        assert_eq!(
            h.svc.create(h.request("c1")).await.expect_err("dup").code(),
            Code::ALREADY_EXISTS
        );
        h.svc.exec(h.exec_req("c1", "e1")).expect("exec");
        assert_eq!(
            h.svc.exec(h.exec_req("c1", "e1")).expect_err("dup").code(),
            Code::ALREADY_EXISTS
        );
        assert_eq!(
            h.svc.exec(h.exec_req("c1", "a/b")).expect_err("id").code(),
            Code::INVALID_ARGUMENT
        );
        assert_eq!(
            h.svc
                .kill("c1", "e1", 9, false)
                .await
                .expect_err("not started")
                .code(),
            Code::FAILED_PRECONDITION
        );
        assert_eq!(
            h.svc.pause("c1").await.expect_err("created").code(),
            Code::FAILED_PRECONDITION
        );
        h.svc.start("c1", "").await.expect("start");
        assert_eq!(
            h.svc.start("c1", "").await.expect_err("twice").code(),
            Code::FAILED_PRECONDITION
        );
        assert_eq!(
            h.svc.delete("c1", "").await.expect_err("running").code(),
            Code::FAILED_PRECONDITION
        );
        assert_eq!(
            h.svc.resume("c1").await.expect_err("running").code(),
            Code::FAILED_PRECONDITION
        );
        h.svc.pause("c1").await.expect("pause");
        h.svc.resume("c1").await.expect("resume");
        h.svc.kill("c1", "", 9, false).await.expect("kill");
        bounded(h.svc.wait("c1", "")).await.expect("wait");
        assert_eq!(
            h.svc
                .kill("c1", "", 9, false)
                .await
                .expect_err("dead")
                .code(),
            Code::NOT_FOUND
        );
        assert_eq!(
            h.svc
                .exec(h.exec_req("c1", "e2"))
                .expect_err("stopped")
                .code(),
            Code::FAILED_PRECONDITION
        );
        assert_eq!(
            h.svc.start("c1", "e1").await.expect_err("stopped").code(),
            Code::FAILED_PRECONDITION
        );
        assert_eq!(
            h.svc.pids("nope").await.expect_err("unknown").code(),
            Code::NOT_FOUND
        );
        h.svc.delete("c1", "").await.expect("delete");
    });
}

#[test]
fn failed_backend_create_leaves_no_task_and_no_event() {
    rt().block_on(async {
        let h = Harness::new(0);
        h.backend
            .fail_create
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let e = h.svc.create(h.request("c1")).await.expect_err("fails");
        assert_eq!(e.code(), Code::FAILED_PRECONDITION);
        assert!(h.events.events().is_empty());
        assert_eq!(
            h.svc.state("c1", "").expect_err("none").code(),
            Code::NOT_FOUND
        );
        // The same id can be created once the backend works again.
        h.backend
            .fail_create
            .store(false, std::sync::atomic::Ordering::SeqCst);
        h.create("c1").await;
    });
}

#[test]
fn delete_before_start_forces_and_reports_the_kill() {
    rt().block_on(async {
        let h = Harness::new(3);
        h.create("c1").await;
        let d = h.svc.delete("c1", "").await.expect("delete");
        assert_eq!(d.state.exit_code(), 137);
        let calls = h.backend.made.lock().expect("made")[0]
            .calls
            .lock()
            .expect("c")
            .clone();
        assert_eq!(calls, ["delete force=true"]);
        let names: Vec<&str> = h.events.events().iter().map(name).collect();
        assert_eq!(names, ["create", "exit", "delete"]);
    });
}

pub fn name(ev: &TaskEvent) -> &'static str {
    match ev {
        TaskEvent::Create { .. } => "create",
        TaskEvent::Start { .. } => "start",
        TaskEvent::ExecAdded { .. } => "exec-added",
        TaskEvent::ExecStarted { .. } => "exec-started",
        TaskEvent::Exit { exec_id, .. } if exec_id.is_empty() => "exit",
        TaskEvent::Exit { exec_id, .. } if exec_id == "e1" => "exit e1",
        TaskEvent::Exit { .. } => "exit exec",
        TaskEvent::Paused { .. } => "paused",
        TaskEvent::Resumed { .. } => "resumed",
        TaskEvent::Oom { .. } => "oom",
        TaskEvent::Delete { .. } => "delete",
    }
}
