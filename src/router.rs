//! Picks the backend of a container: annotation, then config rules, then the default; then checks
//! that the backend can run here and applies the `on_unavailable` policy.

use std::collections::HashMap;

use crate::config::{BackendKind, Config, Unavailable};
use crate::error::{Error, Result};

pub const ANNOTATION_BACKEND: &str = "io.pvelxc.backend";
/// Image name annotations, in the order they are consulted for `image` rules.
pub const IMAGE_ANNOTATIONS: [&str; 2] =
    ["io.kubernetes.cri.image-name", "io.containerd.image.name"];

/// What the router looks at.
pub struct Request<'a> {
    pub namespace: &'a str,
    pub container_id: &'a str,
    pub annotations: &'a HashMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub backend: BackendKind,
    /// Human-readable reason, logged.
    pub reason: String,
}

/// Choose a backend. `admit` says whether a backend takes this container at all (a policy
/// error is final); `usable` whether it can run on this host (Err = why not, subject to the
/// `on_unavailable` policy).
pub fn route(
    cfg: &Config,
    req: &Request<'_>,
    admit: impl Fn(BackendKind) -> Result<()>,
    usable: impl Fn(BackendKind) -> std::result::Result<(), String>,
) -> Result<Decision> {
    let wanted = choose(cfg, req)?;
    admit(wanted.backend)?;
    match usable(wanted.backend) {
        Ok(()) => Ok(wanted),
        Err(why) => match cfg.on_unavailable {
            Unavailable::Fail => Err(Error::precondition(format!(
                "backend {} is not usable on this host: {why}",
                wanted.backend
            ))),
            Unavailable::Fallback => {
                if wanted.backend != BackendKind::Crun {
                    if let Err(crun_why) = usable(BackendKind::Crun) {
                        return Err(Error::precondition(format!(
                            "backend {} is not usable ({why}) and the crun fallback is not usable either ({crun_why})",
                            wanted.backend
                        )));
                    }
                }
                log::warn!(
                    "backend {} is not usable on this host ({why}); falling back to crun",
                    wanted.backend
                );
                Ok(Decision {
                    backend: BackendKind::Crun,
                    reason: format!("fallback from {} ({why})", wanted.backend),
                })
            }
        },
    }
}

fn choose(cfg: &Config, req: &Request<'_>) -> Result<Decision> {
    if let Some(v) = req.annotations.get(ANNOTATION_BACKEND) {
        let kind = BackendKind::parse(v.trim())
            .map_err(|e| e.context(format!("annotation {ANNOTATION_BACKEND}")))?;
        if cfg.allow_annotation_override {
            return Ok(Decision {
                backend: kind,
                reason: format!("annotation {ANNOTATION_BACKEND}={kind}"),
            });
        }
        if kind != cfg.backend {
            log::warn!(
                "annotation {ANNOTATION_BACKEND}={kind} ignored: the config forbids overrides"
            );
        }
    }
    let image = IMAGE_ANNOTATIONS
        .iter()
        .find_map(|k| req.annotations.get(*k))
        .map(String::as_str);
    for (i, rule) in cfg.rules.iter().enumerate() {
        let ok = matches(rule.namespace.as_deref(), Some(req.namespace))
            && matches(rule.container.as_deref(), Some(req.container_id))
            && matches(rule.image.as_deref(), image);
        if ok {
            return Ok(Decision {
                backend: rule.backend,
                reason: format!("config rule {i}"),
            });
        }
    }
    Ok(Decision {
        backend: cfg.backend,
        reason: "config default".into(),
    })
}

/// A missing pattern matches anything; a pattern against a missing value matches only `*`.
fn matches(pattern: Option<&str>, value: Option<&str>) -> bool {
    let Some(p) = pattern else { return true };
    let Ok(pat) = glob::Pattern::new(p) else {
        return false;
    };
    let opts = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: false,
        require_literal_leading_dot: false,
    };
    match value {
        Some(v) => pat.matches_with(v, opts),
        None => p == "*",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Rule;

    use crate::testutil::ann;

    fn all_usable(_: BackendKind) -> std::result::Result<(), String> {
        Ok(())
    }

    fn admit_all(_: BackendKind) -> Result<()> {
        Ok(())
    }

    fn req<'a>(ns: &'a str, id: &'a str, a: &'a HashMap<String, String>) -> Request<'a> {
        Request {
            namespace: ns,
            container_id: id,
            annotations: a,
        }
    }

    fn rule(ns: Option<&str>, c: Option<&str>, img: Option<&str>, b: BackendKind) -> Rule {
        Rule {
            namespace: ns.map(Into::into),
            container: c.map(Into::into),
            image: img.map(Into::into),
            backend: b,
        }
    }

    #[test]
    fn default_when_nothing_matches() {
        let a = ann(&[]);
        let d = route(
            &Config::default(),
            &req("default", "x", &a),
            admit_all,
            all_usable,
        )
        .expect("route");
        assert_eq!(d.backend, BackendKind::Crun);
    }

    #[test]
    fn annotation_wins_over_rules_unless_forbidden() {
        let mut cfg = Config::default();
        cfg.rules
            .push(rule(None, Some("*"), None, BackendKind::Runc));
        let a = ann(&[(ANNOTATION_BACKEND, "pct")]);
        let d = route(&cfg, &req("default", "x", &a), admit_all, all_usable).expect("route");
        assert_eq!(d.backend, BackendKind::Pct);
        cfg.allow_annotation_override = false;
        let d = route(&cfg, &req("default", "x", &a), admit_all, all_usable).expect("route");
        assert_eq!(d.backend, BackendKind::Runc);
    }

    #[test]
    fn unknown_annotation_value_is_an_error() {
        let a = ann(&[(ANNOTATION_BACKEND, "bogus")]);
        let e = route(
            &Config::default(),
            &req("default", "x", &a),
            admit_all,
            all_usable,
        )
        .expect_err("unknown");
        assert!(e.to_string().contains("bogus"));
        assert!(e.to_string().contains(ANNOTATION_BACKEND));
    }

    #[test]
    fn rules_are_globs_and_all_fields_must_match() {
        let mut cfg = Config::default();
        cfg.rules
            .push(rule(Some("k8s.io"), Some("db-*"), None, BackendKind::Pct));
        cfg.rules.push(rule(
            None,
            None,
            Some("docker.io/library/*"),
            BackendKind::Vm,
        ));
        cfg.rules
            .push(rule(Some("*"), None, None, BackendKind::Runc));
        let none = ann(&[]);
        let img = ann(&[(IMAGE_ANNOTATIONS[0], "docker.io/library/nginx:1")]);
        let pick = |ns, id, a| {
            route(&cfg, &req(ns, id, a), admit_all, all_usable)
                .expect("route")
                .backend
        };
        assert_eq!(pick("k8s.io", "db-1", &none), BackendKind::Pct);
        assert_eq!(pick("k8s.io", "web", &img), BackendKind::Vm);
        assert_eq!(pick("default", "db-1", &none), BackendKind::Runc);
        // `*` matches a missing image; a specific pattern does not.
        assert!(matches(Some("*"), None));
        assert!(!matches(Some("docker.io/*"), None));
        assert!(matches(Some("a/b*"), Some("a/b/c:d")));
    }

    #[test]
    fn a_refusal_is_final_even_with_fallback() {
        let a = ann(&[(ANNOTATION_BACKEND, "pct")]);
        let cfg = Config {
            on_unavailable: Unavailable::Fallback,
            ..Config::default()
        };
        let no_pods_on_pct = |k: BackendKind| {
            if k == BackendKind::Pct {
                Err(Error::Unimplemented(
                    "the pct backend does not run Kubernetes pods".into(),
                ))
            } else {
                Ok(())
            }
        };
        let e =
            route(&cfg, &req("k8s.io", "x", &a), no_pods_on_pct, all_usable).expect_err("refused");
        assert!(e.to_string().contains("pods"));
    }

    #[test]
    fn unavailable_backend_fails_or_falls_back() {
        let a = ann(&[(ANNOTATION_BACKEND, "pct")]);
        let no_pct = |k: BackendKind| {
            if k == BackendKind::Pct {
                Err("pct not found on PATH".to_string())
            } else {
                Ok(())
            }
        };
        let mut cfg = Config::default();
        let e = route(&cfg, &req("default", "x", &a), admit_all, no_pct).expect_err("fail policy");
        assert!(e.to_string().contains("pct not found on PATH"));
        cfg.on_unavailable = Unavailable::Fallback;
        let d = route(&cfg, &req("default", "x", &a), admit_all, no_pct).expect("fallback");
        assert_eq!(d.backend, BackendKind::Crun);
        assert!(d.reason.contains("fallback"));
    }
}
