//! argv for the OCI runtime CLI (crun and runc share this grammar).

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::sys::command::{Cmd, Output};

#[derive(Debug, Clone)]
pub struct Runtime {
    pub binary: String,
    pub root: String,
    /// Where the runtime writes its JSON log; read back for error messages.
    pub log: OsString,
    /// Run it from a sealed in-memory copy (crun: see `sealed.rs`).
    pub sealed: bool,
}

impl Runtime {
    fn base(&self) -> Vec<OsString> {
        vec![
            self.binary.clone().into(),
            "--root".into(),
            self.root.clone().into(),
            "--log".into(),
            self.log.clone(),
            "--log-format".into(),
            "json".into(),
        ]
    }

    /// A sealed copy of the binary to execute, when this runtime takes one (None: run the
    /// binary itself, crun then copies itself).
    pub fn program(&self) -> Option<std::os::fd::OwnedFd> {
        if !self.sealed {
            return None;
        }
        super::sealed::copy(Path::new(&self.binary))
            .inspect_err(|e| log::debug!("sealed copy of {}: {e}", self.binary))
            .ok()
    }

    pub fn argv<I, S>(&self, args: I) -> Vec<OsString>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let mut v = self.base();
        v.extend(args.into_iter().map(Into::into));
        v
    }

    /// Run a subcommand; a non-zero exit becomes an error carrying the runtime's own message.
    pub async fn run<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let argv = self.argv(args);
        let sub = argv
            .get(7)
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut cmd = Cmd::new(argv).timeout(Duration::from_secs(60));
        if let Some(fd) = self.program() {
            cmd = cmd.exec_fd(fd);
        }
        let out = cmd.output().await?;
        if out.success() {
            return Ok(out);
        }
        let msg = self.last_error(&out);
        Err(classify(&sub, &msg))
    }

    /// The runtime's message: the last error in its JSON log, else its stderr.
    fn last_error(&self, out: &Output) -> String {
        let from_log = std::fs::read_to_string(Path::new(&self.log))
            .ok()
            .and_then(|t| last_log_msg(&t));
        from_log
            .or_else(|| {
                let s = out.stderr.trim();
                (!s.is_empty()).then(|| s.to_string())
            })
            .unwrap_or_else(|| format!("exit status {}", out.code))
    }
}

/// The last `msg` of a JSON-lines log (crun/runc `--log-format json`).
pub fn last_log_msg(text: &str) -> Option<String> {
    text.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        let level = v.get("level").and_then(|x| x.as_str()).unwrap_or("error");
        if level != "error" && level != "fatal" {
            return None;
        }
        v.get("msg").and_then(|m| m.as_str()).map(str::to_string)
    })
}

fn classify(sub: &str, msg: &str) -> Error {
    let lower = msg.to_lowercase();
    let text = format!("{sub}: {msg}");
    let missing = lower.contains("does not exist")
        || lower.contains("not found")
        || lower.contains("no such");
    if missing && matches!(sub, "kill" | "delete" | "state" | "ps") {
        return Error::NotFound(text);
    }
    if lower.contains("not running") || lower.contains("is stopped") || lower.contains("not paused")
    {
        return Error::FailedPrecondition(text);
    }
    Error::Internal(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_messages() {
        let log = r#"{"msg":"starting","level":"info","time":"x"}
{"msg":"executable file `nope` not found in $PATH: No such file or directory","level":"error","time":"x"}
"#;
        assert_eq!(
            last_log_msg(log).as_deref(),
            Some("executable file `nope` not found in $PATH: No such file or directory")
        );
        assert_eq!(last_log_msg("garbage"), None);
    }

    #[test]
    fn argv_shape() {
        let rt = Runtime {
            binary: "crun".into(),
            root: "/run/pvelxc/crun/default".into(),
            log: "/b/log.json".into(),
            sealed: false,
        };
        let v: Vec<String> = rt
            .argv(["kill", "c1", "9"])
            .into_iter()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            v,
            [
                "crun",
                "--root",
                "/run/pvelxc/crun/default",
                "--log",
                "/b/log.json",
                "--log-format",
                "json",
                "kill",
                "c1",
                "9"
            ]
        );
    }

    #[test]
    fn classification() {
        assert_eq!(
            classify("kill", "container `x` does not exist").code(),
            containerd_shim_protos::ttrpc::Code::NOT_FOUND
        );
        assert_eq!(
            classify("pause", "container not running").code(),
            containerd_shim_protos::ttrpc::Code::FAILED_PRECONDITION
        );
    }
}
