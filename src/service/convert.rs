//! Protocol types at the edge: containerd's messages to and from the shim's own types.

use std::time::SystemTime;

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{EnumOrUnknown, MessageField};
use oci_spec::runtime::{LinuxResources, Process};

use super::model::{CreateTask, ExecTask, ProcInfo};
use super::state::Status;
use crate::backend::RootfsMount;
use crate::error::{Error, Result};
use crate::sys::stdio::StdioPaths;

/// CreateTask → the service's request: options decoded, stdio gathered.
pub fn create_task(req: api::CreateTaskRequest) -> Result<CreateTask> {
    let options = req
        .options
        .as_ref()
        .map(crate::options::decode)
        .transpose()?;
    Ok(CreateTask {
        rootfs: mounts(&req.rootfs),
        stdio: StdioPaths {
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            terminal: req.terminal,
        },
        options,
        checkpoint: !req.checkpoint.is_empty(),
        bundle: req.bundle.into(),
        id: req.id,
    })
}

/// Exec → the service's request, its process spec parsed.
pub fn exec_task(req: api::ExecProcessRequest) -> Result<ExecTask> {
    Ok(ExecTask {
        process: process_spec(&req.spec)?,
        stdio: StdioPaths {
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            terminal: req.terminal,
        },
        id: req.id,
        exec_id: req.exec_id,
    })
}

pub fn state_response(p: ProcInfo) -> api::StateResponse {
    let mut r = api::StateResponse::new();
    r.id = p.id;
    r.exec_id = p.exec_id;
    r.bundle = p.bundle.display().to_string();
    r.pid = p.state.pid;
    r.status = status(p.state.status);
    r.stdin = p.stdio.stdin;
    r.stdout = p.stdio.stdout;
    r.stderr = p.stdio.stderr;
    r.terminal = p.stdio.terminal;
    r.exit_status = p.state.exit_code();
    r.exited_at = timestamp(p.state.exited_at());
    r
}

pub fn timestamp(t: Option<SystemTime>) -> MessageField<Timestamp> {
    let Some(t) = t else {
        return MessageField::none();
    };
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let mut ts = Timestamp::new();
    ts.seconds = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    ts.nanos = i32::try_from(d.subsec_nanos()).unwrap_or(0);
    MessageField::some(ts)
}

pub fn status(s: Status) -> EnumOrUnknown<api::Status> {
    EnumOrUnknown::new(match s {
        Status::Created => api::Status::CREATED,
        Status::Running => api::Status::RUNNING,
        Status::Paused => api::Status::PAUSED,
        Status::Stopped => api::Status::STOPPED,
    })
}

pub fn mounts(m: &[api::Mount]) -> Vec<RootfsMount> {
    m.iter()
        .map(|m| RootfsMount {
            kind: m.type_.clone(),
            source: m.source.clone(),
            options: m.options.clone(),
        })
        .collect()
}

/// An exec's process spec: JSON in an Any (type_url ...runtime-spec/1/Process).
pub fn process_spec(any: &Any) -> Result<Process> {
    if any.value.is_empty() {
        return Err(Error::invalid("exec request carries no process spec"));
    }
    serde_json::from_slice(&any.value)
        .map_err(|e| Error::invalid(format!("malformed exec process spec: {e}")))
}

/// Update's resources: JSON LinuxResources in an Any.
pub fn resources(any: &Any) -> Result<LinuxResources> {
    if any.value.is_empty() {
        return Err(Error::invalid("update request carries no resources"));
    }
    serde_json::from_slice(&any.value)
        .map_err(|e| Error::invalid(format!("malformed resources: {e}")))
}

pub fn delete_response(p: &ProcInfo) -> api::DeleteResponse {
    let mut r = api::DeleteResponse::new();
    r.pid = p.state.pid;
    r.exit_status = p.state.exit_code();
    r.exited_at = timestamp(p.state.exited_at());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_spec() {
        let mut a = Any::new();
        a.value = br#"{"args":["/bin/true"],"cwd":"/","user":{"uid":0,"gid":0}}"#.to_vec();
        let p = process_spec(&a).expect("parse");
        assert_eq!(p.args().as_ref().expect("args")[0], "/bin/true");
        a.value = b"{not json".to_vec();
        assert_eq!(
            process_spec(&a).expect_err("bad").code(),
            containerd_shim_protos::ttrpc::Code::INVALID_ARGUMENT
        );
    }

    #[test]
    fn timestamps() {
        assert!(timestamp(None).is_none());
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::new(5, 7);
        let ts = timestamp(Some(t));
        assert_eq!((ts.seconds, ts.nanos), (5, 7));
    }
}
