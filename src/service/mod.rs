//! The shim task service: containerd's Task API on top of the backends.
//!
//! `ops.rs` holds the operations on plain Rust types; this file is the protocol edge.

mod convert;
mod events;
mod ops;
mod process;
mod state;

use async_trait::async_trait;
use containerd_shim::api;
use containerd_shim::{Task, TtrpcContext, TtrpcResult};
use containerd_shim_protos::api::Empty;

pub use events::Events;
pub use ops::Service;

/// Now, as a protobuf timestamp.
pub fn timestamp_now() -> containerd_shim_protos::protobuf::MessageField<
    containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp,
> {
    convert::timestamp(Some(std::time::SystemTime::now()))
}

/// Whether `s` is a valid containerd identifier.
pub fn valid_id(s: &str) -> bool {
    convert::validate_id("id", s).is_ok()
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
        let r = self.create(req).await.map(|pid| {
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
        edge("state", self.state(&req.id, &req.exec_id))
    }

    async fn delete(
        &self,
        _: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        edge("delete", self.delete(&req.id, &req.exec_id).await)
    }

    async fn pids(
        &self,
        _: &TtrpcContext,
        req: api::PidsRequest,
    ) -> TtrpcResult<api::PidsResponse> {
        edge("pids", self.pids(&req.id).await)
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
        edge("exec", self.exec(req).map(|_| Empty::new()))
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
        edge("update", self.update(req).await.map(|_| Empty::new()))
    }

    async fn wait(
        &self,
        _: &TtrpcContext,
        req: api::WaitRequest,
    ) -> TtrpcResult<api::WaitResponse> {
        edge("wait", self.wait(&req.id, &req.exec_id).await)
    }

    async fn stats(
        &self,
        _: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        edge("stats", self.stats(&req.id).await)
    }

    async fn connect(
        &self,
        _: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        edge("connect", self.connect(&req.id))
    }

    async fn shutdown(&self, _: &TtrpcContext, req: api::ShutdownRequest) -> TtrpcResult<Empty> {
        self.shutdown(req.now);
        Ok(Empty::new())
    }
}
