//! The classifier: a failed pct/pvesh invocation (exit status + stdout + stderr) → a typed
//! [`PctError`]; a successful one → its warnings ([`Outcome`]).

use super::kv;

/// A failed pct/pvesh invocation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PctError {
    /// `CT 101 already exists on node 'pve'` (also VM ids: they share the space).
    #[error("CT {vmid} already exists")]
    AlreadyExists { vmid: u32 },
    /// `CT is locked (<lock>)`.
    #[error("CT is locked ({lock})")]
    Locked { lock: String },
    /// `can't lock file '<path>' - got timeout`.
    #[error("can't lock file '{path}' - got timeout")]
    LockTimeout { path: String },
    /// `CT 101 not running`, `container '101' not running!`, `VM 101 not running`.
    #[error("CT not running")]
    NotRunning,
    /// `CT 101 already running`.
    #[error("CT already running")]
    AlreadyRunning,
    /// `Configuration file 'nodes/<node>/lxc/<vmid>.conf' does not exist`.
    #[error("no such CT")]
    NoSuchCt,
    /// `unable to destroy CT 101 - container is running`.
    #[error("CT is running")]
    Running,
    /// `can't remove CT 101 - protection mode enabled`.
    #[error("CT is protected")]
    Protected,
    /// `400 Parameter verification failed.` followed by `<param>: <msg>` lines (first one
    /// here, all in `all`).
    #[error("parameter verification failed: {param}: {msg}")]
    ParamError {
        param: String,
        msg: String,
        all: Vec<(String, String)>,
    },
    /// `ERROR: unknown command 'pct foo'`.
    #[error("unknown pct command: {0}")]
    UnknownCommand(String),
    /// A worker task failed (`TASK ERROR: msg`, `unable to create CT 101 - msg`, ...).
    #[error("task error: {0}")]
    TaskError(String),
    /// `unable to get any free VMID in range [L, U]`.
    #[error("no free VMID: {0}")]
    NoFreeVmid(String),
    /// Anything else (last meaningful stderr line, or the exit status).
    #[error("pct failed: {msg}")]
    Other { msg: String },
}

/// A successful invocation's warnings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// `WARN: ...` lines (prefix stripped), `vm N - unable to parse config: ...` lines.
    pub warnings: Vec<String>,
    /// N of `Task finished with N warning(s)!`.
    pub task_warnings: Option<u32>,
}

/// Warnings in stdout+stderr (pct prints worker output on stdout and the summary on stderr).
pub fn warnings(stdout: &str, stderr: &str) -> Outcome {
    let mut o = Outcome::default();
    for line in stderr.lines().chain(stdout.lines()) {
        let l = line.trim();
        if let Some(w) = l.strip_prefix("WARN:") {
            o.warnings.push(w.trim().to_string());
        } else if l.starts_with("vm ") && l.contains("unable to parse config") {
            o.warnings.push(l.to_string());
        } else if let Some(n) = l
            .strip_prefix("Task finished with ")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
        {
            o.task_warnings = Some(n);
        }
    }
    o
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)? + i;
    Some(&s[i..j])
}

fn number_after<'a>(s: &'a str, word: &str) -> Option<&'a str> {
    let i = s.find(word)? + word.len();
    let d: &str = &s[i..];
    let n = d.find(|c: char| !c.is_ascii_digit()).unwrap_or(d.len());
    (n > 0).then(|| &d[..n])
}

/// Classify one message line (already stripped of `TASK ERROR: `).
fn classify_line(l: &str) -> Option<PctError> {
    if let Some(p) = between(l, "can't lock file '", "' - got timeout") {
        return Some(PctError::LockTimeout {
            path: p.to_string(),
        });
    }
    if let Some(lock) = between(l, "CT is locked (", ")") {
        return Some(PctError::Locked {
            lock: lock.to_string(),
        });
    }
    if let Some(c) = between(l, "unknown command '", "'") {
        return Some(PctError::UnknownCommand(c.to_string()));
    }
    if l.contains("unable to get any free VMID") {
        return Some(PctError::NoFreeVmid(l.to_string()));
    }
    if l.contains("already exists") {
        for w in ["CT ", "VM "] {
            if let Some(n) = number_after(l, w).and_then(|n| n.parse().ok()) {
                if l.contains(&format!("{w}{n} already exists")) {
                    return Some(PctError::AlreadyExists { vmid: n });
                }
            }
        }
    }
    // pmxcfs refuses a second config file for a VMID (EEXIST) when another node or
    // another create won the race: `unable to create CT 101 - ... File exists`.
    if l.contains("File exists") {
        if let Some(n) = number_after(l, "unable to create CT ").and_then(|n| n.parse().ok()) {
            return Some(PctError::AlreadyExists { vmid: n });
        }
    }
    if l.contains("protection mode enabled") {
        return Some(PctError::Protected);
    }
    if l.contains("container is running") {
        return Some(PctError::Running);
    }
    if l.contains("already running") {
        return Some(PctError::AlreadyRunning);
    }
    if l.starts_with("Configuration file '") && l.ends_with("does not exist") {
        return Some(PctError::NoSuchCt);
    }
    // `unable to get PID for CT 101 (not running?)`: the CT started but its init is
    // already gone; for us that is a start that raced with the process exiting.
    if l.contains("unable to get PID for CT") {
        return Some(PctError::TaskError(l.to_string()));
    }
    if l.ends_with("not running") || l.ends_with("not running!") {
        return Some(PctError::NotRunning);
    }
    None
}

/// Classify an invocation: `Ok(warnings)` on exit status 0, else the error.
/// `exit_code` is `None` when pct was killed by a signal.
pub fn classify(exit_code: Option<i32>, stdout: &str, stderr: &str) -> Result<Outcome, PctError> {
    if exit_code == Some(0) {
        return Ok(warnings(stdout, stderr));
    }
    // 400 Parameter verification failed.
    let lines: Vec<&str> = stderr.lines().collect();
    if let Some(i) = lines
        .iter()
        .position(|l| l.trim() == "400 Parameter verification failed.")
    {
        let mut all = Vec::new();
        for l in &lines[i + 1..] {
            let l = l.trim_end();
            if l.is_empty() {
                if all.is_empty() {
                    continue;
                }
                break;
            }
            if l.starts_with("USAGE:") || l.starts_with("pct ") {
                break;
            }
            if let Some((p, m)) = kv(l) {
                all.push((p.trim().to_string(), m.trim().to_string()));
            }
        }
        let (param, msg) = all.first().cloned().unwrap_or_default();
        return Err(PctError::ParamError { param, msg, all });
    }
    // Specific messages anywhere (stderr first: that is where `die` goes; worker
    // output, including TASK ERROR lines, may be on stdout).
    let mut task_error: Option<String> = None;
    for raw in stderr.lines().chain(stdout.lines()) {
        let l = raw.trim();
        if l.is_empty() || l == "trying to acquire lock..." {
            continue;
        }
        let (msg, is_task) = match l.strip_prefix("TASK ERROR:") {
            Some(m) => (m.trim(), true),
            None => (l, false),
        };
        // `unable to create CT 101 - <reason>`: classify the reason.
        let inner = msg
            .split_once(" - ")
            .filter(|(h, _)| h.starts_with("unable to ") || h.starts_with("can't remove"))
            .map(|(_, r)| r);
        if let Some(e) = classify_line(msg).or_else(|| inner.and_then(classify_line)) {
            return Err(e);
        }
        if is_task && task_error.is_none() {
            task_error = Some(msg.to_string());
        }
        if task_error.is_none() && (msg.starts_with("unable to ") || msg.contains(" failed")) {
            task_error = Some(msg.to_string());
        }
    }
    if let Some(t) = task_error {
        return Err(PctError::TaskError(t));
    }
    let msg = stderr
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("USAGE:"))
        .map(str::to_string)
        .unwrap_or_else(|| match exit_code {
            Some(c) => format!("exit status {c}"),
            None => "killed by a signal".to_string(),
        });
    Err(PctError::Other { msg })
}

#[cfg(test)]
mod tests {
    // With pct.md's exact strings.
    use super::*;

    fn err(code: i32, out: &str, e: &str) -> PctError {
        classify(Some(code), out, e).unwrap_err()
    }

    #[test]
    fn success_with_warnings() {
        let o = classify(
            Some(0),
            "extracting archive '/var/lib/vz/template/cache/x.tar.zst'\n",
            "WARN: Systemd 255 detected. You may need to enable nesting.\nTask finished with 1 warning(s)!\n",
        )
        .unwrap();
        assert_eq!(
            o.warnings,
            vec!["Systemd 255 detected. You may need to enable nesting.".to_string()]
        );
        assert_eq!(o.task_warnings, Some(1));
        let o = classify(Some(0), "", "").unwrap();
        assert_eq!(o, Outcome::default());
        let o = classify(Some(0), "vm 101 - unable to parse config: foo: bar\n", "").unwrap();
        assert_eq!(o.warnings.len(), 1);
    }

    #[test]
    fn already_exists() {
        assert_eq!(
            err(255, "", "CT 101 already exists on node 'pve'\n"),
            PctError::AlreadyExists { vmid: 101 }
        );
        assert_eq!(
            err(
                255,
                "",
                "unable to create CT 101 - CT 101 already exists on node 'pve'\n"
            ),
            PctError::AlreadyExists { vmid: 101 }
        );
        assert_eq!(
            err(255, "", "VM 205 already exists on node 'pve'\n"),
            PctError::AlreadyExists { vmid: 205 }
        );
        assert_eq!(
            err(
                255,
                "",
                "unable to create CT 300002 - close (rename) atomic file \
                 '/etc/pve/nodes/pve/lxc/300002.conf' failed: File exists\n"
            ),
            PctError::AlreadyExists { vmid: 300_002 }
        );
    }

    #[test]
    fn locks() {
        assert_eq!(
            err(
                255,
                "",
                "trying to acquire lock...\ncan't lock file '/run/lock/lxc/pve-config-101.lock' - got timeout\n"
            ),
            PctError::LockTimeout {
                path: "/run/lock/lxc/pve-config-101.lock".into()
            }
        );
        assert_eq!(
            err(255, "", "CT is locked (backup)\n"),
            PctError::Locked {
                lock: "backup".into()
            }
        );
        assert_eq!(
            err(255, "", "CT is locked (snapshot-delete)\n"),
            PctError::Locked {
                lock: "snapshot-delete".into()
            }
        );
    }

    #[test]
    fn running_states() {
        assert_eq!(err(255, "", "CT 101 not running\n"), PctError::NotRunning);
        assert_eq!(
            err(255, "", "container '101' not running!\n"),
            PctError::NotRunning
        );
        assert_eq!(err(255, "", "VM 101 not running\n"), PctError::NotRunning);
        assert_eq!(
            err(255, "", "CT 101 already running\n"),
            PctError::AlreadyRunning
        );
        assert_eq!(
            err(255, "", "unable to destroy CT 101 - container is running\n"),
            PctError::Running
        );
        assert_eq!(
            err(255, "", "can't remove CT 101 - protection mode enabled\n"),
            PctError::Protected
        );
        assert_eq!(
            err(
                255,
                "",
                "Configuration file 'nodes/pve/lxc/101.conf' does not exist\n"
            ),
            PctError::NoSuchCt
        );
        assert!(matches!(
            err(255, "", "unable to get PID for CT 101 (not running?)\n"),
            PctError::TaskError(m) if m.contains("unable to get PID")
        ));
    }

    #[test]
    fn param_errors() {
        let e = err(
            255,
            "",
            "400 Parameter verification failed.\nvmid: invalid format - value does not look like a valid VM ID\n\n\
             pct start <vmid> [OPTIONS]\n",
        );
        assert_eq!(
            e,
            PctError::ParamError {
                param: "vmid".into(),
                msg: "invalid format - value does not look like a valid VM ID".into(),
                all: vec![(
                    "vmid".into(),
                    "invalid format - value does not look like a valid VM ID".into()
                )],
            }
        );
        let e = err(
            255,
            "",
            "400 Parameter verification failed.\nmemory: value must have a minimum value of 16\n\
             hostname: invalid format - value does not look like a valid DNS name\n\n\
             pct create <vmid> <ostemplate> [OPTIONS]\n",
        );
        match e {
            PctError::ParamError { param, all, .. } => {
                assert_eq!(param, "memory");
                assert_eq!(all.len(), 2);
                assert_eq!(all[1].0, "hostname");
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn unknown_command() {
        assert_eq!(
            err(
                255,
                "",
                "ERROR: unknown command 'pct foo'\nUSAGE: pct <COMMAND> [ARGS] [OPTIONS]\n"
            ),
            PctError::UnknownCommand("pct foo".into())
        );
    }

    #[test]
    fn task_errors() {
        // Worker output on stdout, the failure message on stderr.
        let e = err(
            255,
            "extracting archive '/tmp/x.tar'\n",
            "startup for container '101' failed\n",
        );
        assert_eq!(
            e,
            PctError::TaskError("startup for container '101' failed".into())
        );
        let e = err(
            255,
            "TASK ERROR: unable to create CT 101 - can't find file 'local:vztmpl/x.tar.zst'\n",
            "",
        );
        assert_eq!(
            e,
            PctError::TaskError(
                "unable to create CT 101 - can't find file 'local:vztmpl/x.tar.zst'".into()
            )
        );
        let e = err(
            255,
            "",
            "unable to create CT 101 - storage 'local' does not support container directories\n",
        );
        assert!(matches!(e, PctError::TaskError(m) if m.contains("does not support")));
        assert_eq!(
            err(255, "", "container did not stop\n"),
            PctError::Other {
                msg: "container did not stop".into()
            }
        );
        assert_eq!(
            err(
                255,
                "",
                "mount points configured, but 'rootfs' not set - aborting\n"
            ),
            PctError::Other {
                msg: "mount points configured, but 'rootfs' not set - aborting".into()
            }
        );
    }

    #[test]
    fn nextid_errors_and_fallbacks() {
        assert!(matches!(
            err(
                255,
                "",
                "unable to get any free VMID in range [100, 1000000]\n"
            ),
            PctError::NoFreeVmid(_)
        ));
        assert_eq!(
            err(2, "", ""),
            PctError::Other {
                msg: "exit status 2".into()
            }
        );
        assert_eq!(
            classify(None, "", "").unwrap_err(),
            PctError::Other {
                msg: "killed by a signal".into()
            }
        );
        assert_eq!(
            err(255, "", "no options specified\n"),
            PctError::Other {
                msg: "no options specified".into()
            }
        );
    }
}
