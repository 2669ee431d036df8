//! Runtime options that containerd sends on `start` (stdin) and in CreateTask, decoded by type_url.
//!
//! Three shapes reach a shim:
//! - `containerd.runc.v1.Options` (runc v2 style: shim cgroup, IO uid/gid, binary name, root);
//! - `containerd.linux.runc.CreateOptions` (what containerd 1.6's client sends for runtime names
//!   outside `io.containerd.runc*`: shim cgroup, IO uid/gid);
//! - `runtimeoptions.v1.Options` (CRI handler options: `ConfigPath` names our config file).

use containerd_shim_protos::protobuf::{well_known_types::any::Any, CodedInputStream, Message};
use containerd_shim_protos::shim::oci::Options as RuncOptions;

use crate::error::{Error, Result};

pub const TYPE_RUNC_V1: &str = "containerd.runc.v1.Options";
pub const TYPE_LINUX_RUNC: &str = "containerd.linux.runc.CreateOptions";
pub const TYPE_RUNTIMEOPTIONS: &str = "runtimeoptions.v1.Options";

/// What this shim takes from any of the option types.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// Cgroup (path relative to the hierarchy roots) the shim process moves itself into.
    pub shim_cgroup: Option<String>,
    /// Owner for the stdio FIFOs / pipes of the task's processes.
    pub io_uid: u32,
    pub io_gid: u32,
    /// runc-style: the OCI runtime binary to use (overrides the config for crun/runc).
    pub binary_name: Option<String>,
    /// runc-style: the OCI runtime state root.
    pub root: Option<String>,
    /// CRI: path of our TOML config file.
    pub config_path: Option<String>,
}

/// Decode an `Any` by its type_url. An empty Any (no type, no value) means "no options".
pub fn decode(any: &Any) -> Result<RuntimeOptions> {
    if any.type_url.is_empty() && any.value.is_empty() {
        return Ok(RuntimeOptions::default());
    }
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    match name {
        TYPE_RUNC_V1 => {
            let o = RuncOptions::parse_from_bytes(&any.value)
                .map_err(|e| Error::invalid(format!("bad {TYPE_RUNC_V1}: {e}")))?;
            Ok(RuntimeOptions {
                shim_cgroup: non_empty(o.shim_cgroup),
                io_uid: o.io_uid,
                io_gid: o.io_gid,
                binary_name: non_empty(o.binary_name),
                root: non_empty(o.root),
                config_path: None,
            })
        }
        TYPE_LINUX_RUNC => {
            let mut o = RuntimeOptions::default();
            for (field, value) in fields(&any.value, TYPE_LINUX_RUNC)? {
                match (field, value) {
                    (9, Value::Bytes(b)) => o.shim_cgroup = non_empty(utf8(b, "shim_cgroup")?),
                    (10, Value::Varint(v)) => o.io_uid = to_u32(v, "io_uid")?,
                    (11, Value::Varint(v)) => o.io_gid = to_u32(v, "io_gid")?,
                    _ => {}
                }
            }
            Ok(o)
        }
        TYPE_RUNTIMEOPTIONS => {
            let mut o = RuntimeOptions::default();
            for (field, value) in fields(&any.value, TYPE_RUNTIMEOPTIONS)? {
                if let (2, Value::Bytes(b)) = (field, value) {
                    o.config_path = non_empty(utf8(b, "config_path")?);
                }
            }
            Ok(o)
        }
        other => Err(Error::invalid(format!(
            "unsupported runtime options type {other:?} (this shim accepts {TYPE_RUNC_V1}, \
             {TYPE_LINUX_RUNC} and {TYPE_RUNTIMEOPTIONS})"
        ))),
    }
}

/// Decode the raw bytes containerd writes to `start`'s stdin (a serialized Any, possibly empty).
pub fn decode_bytes(data: &[u8]) -> Result<RuntimeOptions> {
    if data.is_empty() {
        return Ok(RuntimeOptions::default());
    }
    let any = Any::parse_from_bytes(data)
        .map_err(|e| Error::invalid(format!("runtime options are not a protobuf Any: {e}")))?;
    decode(&any)
}

enum Value {
    Varint(u64),
    Bytes(Vec<u8>),
}

/// Walk the top-level fields of a protobuf message without a schema.
fn fields(data: &[u8], what: &str) -> Result<Vec<(u32, Value)>> {
    let bad =
        |e: containerd_shim_protos::protobuf::Error| Error::invalid(format!("bad {what}: {e}"));
    let mut input = CodedInputStream::from_bytes(data);
    let mut out = Vec::new();
    while !input.eof().map_err(bad)? {
        let tag = input.read_raw_varint32().map_err(bad)?;
        let (field, wire) = (tag >> 3, tag & 7);
        let value = match wire {
            0 => Value::Varint(input.read_raw_varint64().map_err(bad)?),
            1 => Value::Varint(input.read_fixed64().map_err(bad)?),
            2 => Value::Bytes(input.read_bytes().map_err(bad)?),
            5 => Value::Varint(u64::from(input.read_fixed32().map_err(bad)?)),
            w => return Err(Error::invalid(format!("bad {what}: wire type {w}"))),
        };
        out.push((field, value));
    }
    Ok(out)
}

fn utf8(b: Vec<u8>, field: &str) -> Result<String> {
    String::from_utf8(b).map_err(|_| Error::invalid(format!("option {field} is not UTF-8")))
}

fn to_u32(v: u64, field: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::invalid(format!("option {field} out of range: {v}")))
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::CodedOutputStream;

    fn any(type_url: &str, value: Vec<u8>) -> Any {
        let mut a = Any::new();
        a.type_url = type_url.into();
        a.value = value;
        a
    }

    fn encode(f: impl FnOnce(&mut CodedOutputStream)) -> Vec<u8> {
        let mut buf = Vec::new();
        {
            let mut os = CodedOutputStream::vec(&mut buf);
            f(&mut os);
            os.flush().expect("flush");
        }
        buf
    }

    #[test]
    fn empty_means_defaults() {
        assert_eq!(
            decode(&Any::new()).expect("empty"),
            RuntimeOptions::default()
        );
        assert_eq!(decode_bytes(&[]).expect("empty"), RuntimeOptions::default());
    }

    #[test]
    fn cri_config_path() {
        let v = encode(|os| {
            os.write_string(1, "").expect("w");
            os.write_string(2, "/etc/pvelxc/k8s.toml").expect("w");
        });
        let o = decode(&any(TYPE_RUNTIMEOPTIONS, v)).expect("decode");
        assert_eq!(o.config_path.as_deref(), Some("/etc/pvelxc/k8s.toml"));
    }

    #[test]
    fn runc_v1_options_by_type_url_with_prefix() {
        let mut ro = RuncOptions::new();
        ro.shim_cgroup = "/shimcg".into();
        ro.io_uid = 1000;
        ro.binary_name = "runc".into();
        let bytes = ro.write_to_bytes().expect("encode");
        let o = decode(&any(
            "type.googleapis.com/containerd.runc.v1.Options",
            bytes,
        ))
        .expect("decode");
        assert_eq!(o.shim_cgroup.as_deref(), Some("/shimcg"));
        assert_eq!(o.io_uid, 1000);
        assert_eq!(o.binary_name.as_deref(), Some("runc"));
    }

    #[test]
    fn legacy_linux_runc_create_options() {
        let v = encode(|os| {
            os.write_bool(1, true).expect("w");
            os.write_string(6, "network").expect("w");
            os.write_string(9, "/legacy/cg").expect("w");
            os.write_uint32(10, 7).expect("w");
            os.write_uint32(11, 8).expect("w");
        });
        let o = decode(&any(TYPE_LINUX_RUNC, v)).expect("decode");
        assert_eq!(o.shim_cgroup.as_deref(), Some("/legacy/cg"));
        assert_eq!((o.io_uid, o.io_gid), (7, 8));
    }

    #[test]
    fn unknown_type_is_a_clear_error() {
        let e = decode(&any("example.com/Bogus", vec![1, 2])).expect_err("must fail");
        assert!(e.to_string().contains("\"example.com/Bogus\"") || e.to_string().contains("Bogus"));
        assert_eq!(
            e.code(),
            containerd_shim_protos::ttrpc::Code::INVALID_ARGUMENT
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(&any(TYPE_RUNTIMEOPTIONS, vec![0x12, 0xff, 0x01])).is_err());
        assert!(decode_bytes(&[0xff, 0xff, 0xff]).is_err());
    }
}
