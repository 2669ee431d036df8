//! The OCI runtime-spec `Process` subset the init applies: the shared implementation in
//! `pvelxc_guest` (types in config.json names, `prepare` before fork, async-signal-safe
//! `apply`/`exec` after), plus the parser of the shim's `process.json`.

pub use pvelxc_guest::process::{exec_candidates, prepare, ConsoleSize, Prepared, Process};
pub use pvelxc_guest::process::{Rlimit, User, DEFAULT_PATH};
pub use pvelxc_guest::rlimit::rlimit_resource;
pub use pvelxc_guest::run::{apply, exec, reset_signals, try_exec, ExecFailure};
pub use pvelxc_guest::status::{decode_wait_status, exec_failure_code};
pub use pvelxc_guest::sys::{write_stderr, Failure};

/// The tag of the init's messages on a process's stderr (`pvelxc-init: exec: ...`).
pub const TAG: &str = "pvelxc-init";

/// Parse the shim's `process.json` (config.json's `process` object); `args` must not be
/// empty.
pub fn from_json(b: &[u8]) -> Result<Process, String> {
    let p: Process = serde_json::from_slice(b).map_err(|e| format!("process json: {e}"))?;
    if p.args.is_empty() {
        return Err("process json: args must not be empty".into());
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_process_json() {
        let p = from_json(br#"{"args":["/bin/true"],"user":{"uid":5}}"#).unwrap();
        assert_eq!(p.user.uid, 5);
        assert_eq!(p.path_var(), DEFAULT_PATH);
        assert!(from_json(br#"{"args":[]}"#).unwrap_err().contains("args"));
        assert!(from_json(b"not json").is_err());
    }
}
