//! Protocol types at the edge: containerd's messages to and from the shim's own types.

use std::time::SystemTime;

use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{EnumOrUnknown, MessageField};
use oci_spec::runtime::{LinuxResources, Process};

use super::state::{ProcState, Status};
use crate::backend::RootfsMount;
use crate::error::{Error, Result};

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

pub fn delete_response(pid: u32, st: &ProcState) -> api::DeleteResponse {
    let mut r = api::DeleteResponse::new();
    r.pid = pid;
    r.exit_status = st.exit_code();
    r.exited_at = timestamp(st.exited_at());
    r
}

/// containerd's identifier rules: 1-76 chars, alphanumeric start, then [A-Za-z0-9_.-].
pub fn validate_id(what: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 76
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!("invalid {what} {id:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        validate_id("id", "abc-1.2_x").expect("ok");
        for bad in ["", "-x", "a/b", "../x", "a b", &"x".repeat(77)] {
            assert!(validate_id("id", bad).is_err(), "{bad}");
        }
    }

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
