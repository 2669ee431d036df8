//! `containerd-shim-pvelxc-v2 -info`: what containerd 2.x asks a shim for its introspection
//! (`ctr deprecations`, the runtime info of the CRI plugin): a protobuf `RuntimeInfo` on
//! stdout — name, version and revision, the options containerd sent on stdin (an `Any`, echoed
//! once it decodes), the OCI features of the default crun/runc binary (`<runtime> features`),
//! and the backends this shim offers as an annotation.

use std::io::Read;
use std::process::{Command, Stdio};

use anyhow::Context;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::types::introspection::{RuntimeInfo, RuntimeVersion};

use crate::config::{BackendKind, Config};

/// containerd's type URL for OCI runtime features JSON.
const FEATURES_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/features/Features";
/// Bound on what is read from stdin and from `<runtime> features`.
const MAX_INPUT: u64 = 1 << 20;

pub fn main() -> i32 {
    match run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("containerd-shim-pvelxc-v2 -info: {e:#}");
            1
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut input = Vec::new();
    std::io::stdin()
        .take(MAX_INPUT)
        .read_to_end(&mut input)
        .context("read the options from stdin")?;
    let info = build(
        &input,
        &Config::load(None).map(|l| l.config).unwrap_or_default(),
    )?;
    let bytes = info.write_to_bytes().context("encode RuntimeInfo")?;
    use std::io::Write;
    std::io::stdout()
        .write_all(&bytes)
        .context("write RuntimeInfo")?;
    Ok(())
}

pub fn build(options: &[u8], config: &Config) -> anyhow::Result<RuntimeInfo> {
    let mut info = RuntimeInfo::new();
    info.name = crate::RUNTIME_NAME.into();
    let mut v = RuntimeVersion::new();
    v.version = crate::VERSION.trim().into();
    v.revision = crate::REVISION.into();
    info.version = MessageField::some(v);
    if !options.is_empty() {
        let any = Any::parse_from_bytes(options).context("the options on stdin are not an Any")?;
        crate::options::decode(&any).context("the options on stdin")?;
        info.options = MessageField::some(any);
    }
    let oci = match config.backend {
        BackendKind::Runc => Some(&config.runc.binary),
        BackendKind::Crun => Some(&config.crun.binary),
        _ => None,
    };
    if let Some(features) = oci.and_then(|b| features(b)) {
        let mut any = Any::new();
        any.type_url = FEATURES_URL.into();
        any.value = features;
        info.features = MessageField::some(any);
    }
    info.annotations
        .insert("io.pvelxc.backends".into(), "crun,runc,pct,vm".into());
    info.annotations.insert(
        "io.pvelxc.default-backend".into(),
        config.backend.to_string(),
    );
    Ok(info)
}

/// `<binary> features` (JSON), when the binary has that command and answers with JSON.
fn features(binary: &str) -> Option<Vec<u8>> {
    let out = Command::new(binary)
        .arg("features")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let ok = out.status.success()
        && (out.stdout.len() as u64) < MAX_INPUT
        && serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok();
    ok.then_some(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_names_the_runtime_and_echoes_valid_options() {
        let cfg = Config::default();
        let info = build(&[], &cfg).expect("info");
        assert_eq!(info.name, "io.containerd.pvelxc.v2");
        assert_eq!(info.version.version, crate::VERSION.trim());
        assert!(info.options.is_none());
        assert_eq!(info.annotations["io.pvelxc.default-backend"], "crun");
        let bytes = info.write_to_bytes().expect("encode");
        assert_eq!(RuntimeInfo::parse_from_bytes(&bytes).expect("decode"), info);

        let mut any = Any::new();
        any.type_url = "runtimeoptions.v1.Options".into();
        let opts = any.write_to_bytes().expect("encode");
        let info = build(&opts, &cfg).expect("info");
        assert_eq!(info.options.type_url, "runtimeoptions.v1.Options");
        assert!(
            build(b"\xff\xff\xff", &cfg).is_err(),
            "garbage on stdin is an error"
        );
    }
}
