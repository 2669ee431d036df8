//! The spec's bind mounts, as the backends that share host directories with a guest (pct mount
//! points, vm shares) read them: source (as given), destination, read-only. Other mount types
//! are the guest's own business and are not listed here.

use std::path::PathBuf;

use oci_spec::runtime::Spec;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// Every mount of type `bind` (or with a `bind`/`rbind` option) that names a source.
pub fn binds(spec: &Spec) -> Vec<Bind> {
    spec.mounts()
        .iter()
        .flatten()
        .filter_map(|m| {
            let opts = m.options().clone().unwrap_or_default();
            let is_bind = m.typ().as_deref() == Some("bind")
                || opts.iter().any(|o| o == "bind" || o == "rbind");
            Some(Bind {
                source: m.source().clone().filter(|_| is_bind)?,
                destination: m.destination().display().to_string(),
                read_only: opts.iter().any(|o| o == "ro"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_binds_with_a_source() {
        let spec: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","mounts":[
                {"destination":"/proc","type":"proc","source":"proc"},
                {"destination":"/data","type":"bind","source":"/srv/data","options":["rbind","ro"]},
                {"destination":"/x","type":"none","source":"/srv/x","options":["bind"]},
                {"destination":"/y","type":"bind"}
            ]}"#,
        )
        .expect("spec");
        assert_eq!(
            binds(&spec),
            [
                Bind {
                    source: "/srv/data".into(),
                    destination: "/data".into(),
                    read_only: true
                },
                Bind {
                    source: "/srv/x".into(),
                    destination: "/x".into(),
                    read_only: false
                }
            ]
        );
    }
}
