//! The shim task service: containerd's Task API on top of the backends.
//!
//! The protocol stays at the edge: this file, `convert.rs` (requests → `model.rs` types,
//! results → responses) and `publish.rs` (events → containerd). `ops.rs` holds the operations
//! on the shim's own types (Create in `create.rs`), with its events going to an [`EventSink`]
//! and its backends found through a lookup, so it runs under unit tests (`tests.rs`) without
//! containerd or root.

mod convert;
mod create;
mod metrics;
mod model;
mod ops;
mod process;
mod publish;
mod state;
#[cfg(test)]
mod tests;

use async_trait::async_trait;
use containerd_shim::api;
use containerd_shim::{Task, TtrpcContext, TtrpcResult};
use containerd_shim_protos::api::Empty;

pub use model::{EventSink, TaskEvent};
pub use ops::{BackendLookup, Service};
pub use publish::Events;

/// Now, as a protobuf timestamp.
pub fn timestamp_now() -> containerd_shim_protos::protobuf::MessageField<
    containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp,
> {
    convert::timestamp(Some(std::time::SystemTime::now()))
}

/// Whether `s` is a valid containerd identifier.
pub fn valid_id(s: &str) -> bool {
    model::validate_id("id", s).is_ok()
}

/// Map the shim's result onto ttrpc, logging failures once, here.
fn edge<T>(what: &str, r: crate::error::Result<T>) -> TtrpcResult<T> {
    r.map_err(|e| {
        log::debug!("{what}: {e}");
        e.into()
    })
}

#[async_trait]
impl Task for Service {
    async fn create(
        &self,
        _: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        let r = match convert::create_task(req) {
            Ok(req) => self.create(req).await,
            Err(e) => Err(e),
        };
        let r = r.map(|pid| {
            let mut resp = api::CreateTaskResponse::new();
            resp.pid = pid;
            resp
        });
        if let Err(e) = &r {
            log::error!("create: {e}");
        }
        edge("create", r)
    }

    async fn start(
        &self,
        _: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        edge(
            "start",
            self.start(&req.id, &req.exec_id).await.map(|pid| {
                let mut r = api::StartResponse::new();
                r.pid = pid;
                r
            }),
        )
    }

    async fn state(
        &self,
        _: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        edge(
            "state",
            self.state(&req.id, &req.exec_id)
                .map(convert::state_response),
        )
    }

    async fn delete(
        &self,
        _: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        edge(
            "delete",
            self.delete(&req.id, &req.exec_id)
                .await
                .map(|p| convert::delete_response(&p)),
        )
    }

    async fn pids(
        &self,
        _: &TtrpcContext,
        req: api::PidsRequest,
    ) -> TtrpcResult<api::PidsResponse> {
        let r = self.pids(&req.id).await.map(|pids| {
            let mut r = api::PidsResponse::new();
            r.processes = pids
                .into_iter()
                .map(|pid| {
                    let mut info = containerd_shim_protos::types::task::ProcessInfo::new();
                    info.pid = pid;
                    info
                })
                .collect();
            r
        });
        edge("pids", r)
    }

    async fn pause(&self, _: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<Empty> {
        edge("pause", self.pause(&req.id).await.map(|_| Empty::new()))
    }

    async fn resume(&self, _: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<Empty> {
        edge("resume", self.resume(&req.id).await.map(|_| Empty::new()))
    }

    async fn checkpoint(
        &self,
        _: &TtrpcContext,
        _: api::CheckpointTaskRequest,
    ) -> TtrpcResult<Empty> {
        edge(
            "checkpoint",
            Err(crate::error::Error::Unimplemented(
                "checkpoint is not supported by containerd-shim-pvelxc-v2".into(),
            )),
        )
    }

    async fn kill(&self, _: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<Empty> {
        edge(
            "kill",
            self.kill(&req.id, &req.exec_id, req.signal, req.all)
                .await
                .map(|_| Empty::new()),
        )
    }

    async fn exec(&self, _: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<Empty> {
        edge(
            "exec",
            convert::exec_task(req)
                .and_then(|r| self.exec(r))
                .map(|_| Empty::new()),
        )
    }

    async fn resize_pty(&self, _: &TtrpcContext, req: api::ResizePtyRequest) -> TtrpcResult<Empty> {
        edge(
            "resize_pty",
            self.resize_pty(&req.id, &req.exec_id, req.width, req.height)
                .map(|_| Empty::new()),
        )
    }

    async fn close_io(&self, _: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<Empty> {
        edge(
            "close_io",
            self.close_io(&req.id, &req.exec_id, req.stdin)
                .map(|_| Empty::new()),
        )
    }

    async fn update(&self, _: &TtrpcContext, req: api::UpdateTaskRequest) -> TtrpcResult<Empty> {
        let r = match convert::resources(&req.resources) {
            Ok(res) => self.update(&req.id, &res).await,
            Err(e) => Err(e),
        };
        edge("update", r.map(|_| Empty::new()))
    }

    async fn wait(
        &self,
        _: &TtrpcContext,
        req: api::WaitRequest,
    ) -> TtrpcResult<api::WaitResponse> {
        let r = self.wait(&req.id, &req.exec_id).await.map(|e| {
            let mut r = api::WaitResponse::new();
            r.exit_status = e.code;
            r.exited_at = convert::timestamp(Some(e.at));
            r
        });
        edge("wait", r)
    }

    async fn stats(
        &self,
        _: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        let r = match self.stats(&req.id).await {
            Ok(m) => metrics::encode(&m).map(|any| {
                let mut r = api::StatsResponse::new();
                r.stats = containerd_shim_protos::protobuf::MessageField::some(any);
                r
            }),
            Err(e) => Err(e),
        };
        edge("stats", r)
    }

    async fn connect(
        &self,
        _: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let mut r = api::ConnectResponse::new();
        r.shim_pid = std::process::id();
        r.version = crate::VERSION.trim().to_string();
        r.task_pid = self.task_pid(&req.id).unwrap_or(0);
        Ok(r)
    }

    async fn shutdown(&self, _: &TtrpcContext, req: api::ShutdownRequest) -> TtrpcResult<Empty> {
        self.shutdown(req.now);
        Ok(Empty::new())
    }
}
