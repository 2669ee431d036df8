//! `containerd-shim-pvelxc-v2 check [--json] [--config FILE]`: is this host ready, and for
//! which backend? Like `kata-runtime check`: every backend reports what it found and what is
//! missing; the exit code is 0 only when the configured default backend is ready. Read-only:
//! nothing is created, started or cached.

pub mod gc;
mod host;
pub mod info;

pub use host::version_of;

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Serialize;

use crate::backend::registry;
use crate::config::{BackendKind, Config};

/// One backend's findings (facts in the order found, problems that keep it from running).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    pub ready: bool,
    pub facts: Vec<(String, String)>,
    pub problems: Vec<String>,
}

impl Report {
    pub fn fact(&mut self, k: &str, v: impl Into<String>) {
        self.facts.push((k.to_string(), v.into()));
    }

    pub fn problem(&mut self, p: impl Into<String>) {
        self.problems.push(p.into());
    }

    /// Ready when nothing was found missing.
    pub fn done(mut self) -> Report {
        self.ready = self.problems.is_empty();
        self
    }
}

#[derive(Serialize)]
struct Output {
    version: String,
    revision: String,
    config: String,
    default_backend: BackendKind,
    ready: bool,
    host: Report,
    backends: BTreeMap<String, Report>,
}

const ALL: [BackendKind; 4] = [
    BackendKind::Crun,
    BackendKind::Runc,
    BackendKind::Pct,
    BackendKind::Vm,
];

/// Run the check; the process exit code.
pub fn main(args: &[String]) -> i32 {
    match run(args) {
        Ok(ready) => i32::from(!ready),
        Err(e) => {
            eprintln!("containerd-shim-pvelxc-v2 check: {e:#}");
            2
        }
    }
}

fn run(args: &[String]) -> anyhow::Result<bool> {
    let mut json = false;
    let mut config_path: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => json = true,
            "--config" => {
                config_path = Some(it.next().context("--config needs a file")?.clone());
            }
            "-h" | "--help" => {
                println!("usage: containerd-shim-pvelxc-v2 check [--json] [--config FILE]");
                return Ok(true);
            }
            other => {
                anyhow::bail!("unknown argument {other:?} (usage: check [--json] [--config FILE])")
            }
        }
    }
    let loaded = Config::load(config_path.as_deref()).context("load the configuration")?;
    let config = loaded.config;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start a runtime")?;
    let (host, backends) = rt.block_on(async {
        if let Err(e) = crate::sys::reaper::start() {
            eprintln!("containerd-shim-pvelxc-v2 check: cannot watch child exits: {e}");
        }
        let host = host::report().await;
        let mut backends = BTreeMap::new();
        for k in ALL {
            backends.insert(k.to_string(), registry::get(k).check(&config).await);
        }
        (host, backends)
    });
    let ready = backends
        .get(&config.backend.to_string())
        .is_some_and(|r| r.ready);
    let out = Output {
        version: crate::VERSION.trim().to_string(),
        revision: crate::REVISION.to_string(),
        config: loaded
            .path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "built-in defaults".into()),
        default_backend: config.backend,
        ready,
        host,
        backends,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", text(&out));
    }
    Ok(ready)
}

fn text(o: &Output) -> String {
    let mut s = format!(
        "containerd-shim-pvelxc-v2 {} ({})\nconfig: {}\n",
        o.version, o.revision, o.config
    );
    let mut section = |name: &str, r: &Report, show_ready: bool| {
        if show_ready {
            let state = if r.ready { "ready" } else { "NOT READY" };
            s.push_str(&format!("{name}: {state}\n"));
        } else {
            s.push_str(&format!("{name}:\n"));
        }
        for (k, v) in &r.facts {
            s.push_str(&format!("  {k}: {v}\n"));
        }
        for p in &r.problems {
            s.push_str(&format!("  problem: {p}\n"));
        }
    };
    section("host", &o.host, false);
    for (name, r) in &o.backends {
        section(name, r, true);
    }
    s.push_str(&format!(
        "default backend {}: {}\n",
        o.default_backend,
        if o.ready { "ready" } else { "NOT READY" }
    ));
    s
}
