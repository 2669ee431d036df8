//! Running `pct` / `pvesh`: argv from [`cmd`](super::cmd), bounded by the configured timeout,
//! output classified by [`output::classify`](super::output::classify), every call timed (debug log).

use std::time::{Duration, Instant};

use super::cmd::{PctCommand, PveshCommand};
use super::output::{self, PctError};
use crate::config::PctConfig;
use crate::error::{Error, Result};
use crate::sys::command::{Cmd, Output};

/// A timed-out pct gets SIGTERM and this long to end before SIGKILL.
const UNLOCK_GRACE: Duration = Duration::from_secs(10);

/// A failed pct call: what pct said, classified, plus the text shown to containerd.
#[derive(Debug)]
pub struct PctFailure {
    pub kind: PctError,
    /// `pct <sub> <vmid>: <pct's own message>`.
    pub message: String,
}

impl PctFailure {
    pub fn into_error(self) -> Error {
        match self.kind {
            PctError::NoSuchCt => Error::NotFound(self.message),
            PctError::NotRunning | PctError::Running | PctError::AlreadyRunning => {
                Error::FailedPrecondition(self.message)
            }
            PctError::ParamError { .. } => Error::InvalidArgument(self.message),
            PctError::LockTimeout { .. } | PctError::Locked { .. } => {
                Error::Unavailable(self.message)
            }
            _ => Error::Internal(self.message),
        }
    }
}

/// How the shim reaches pct and pvesh.
#[derive(Debug, Clone)]
pub struct Pct {
    pub pct: String,
    pub pvesh: String,
    pub timeout: Duration,
    /// Calls made through this value (and its clones) and the µs they took.
    spent: std::sync::Arc<(std::sync::atomic::AtomicU32, std::sync::atomic::AtomicU64)>,
}

/// pct's message, without noise: lock waits, usage, empty lines.
fn pct_message(out: &Output) -> String {
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .chain(out.stdout.lines().filter(|l| l.contains("TASK ERROR")))
        .map(str::trim)
        .filter(|l| {
            !l.is_empty()
                && *l != "trying to acquire lock..."
                && !l.starts_with("USAGE:")
                && !l.starts_with("pct ")
        })
        .collect();
    if lines.is_empty() {
        format!("exit status {}", out.code)
    } else {
        lines.join("; ")
    }
}

impl Pct {
    pub fn new(cfg: &PctConfig) -> Self {
        Pct {
            pct: cfg.pct.clone(),
            pvesh: cfg.pvesh.clone(),
            timeout: Duration::from_secs(cfg.timeout_secs.max(1)),
            spent: Default::default(),
        }
    }

    /// (calls, time inside them) so far, through this value and its clones.
    pub fn spent(&self) -> (u32, Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.spent.0.load(Relaxed),
            Duration::from_micros(self.spent.1.load(Relaxed)),
        )
    }

    async fn call(&self, prog: &str, args: Vec<std::ffi::OsString>) -> Result<(Output, Duration)> {
        let mut argv = vec![std::ffi::OsString::from(prog)];
        argv.extend(args);
        let cmd = Cmd::new(argv).timeout(self.timeout).grace(UNLOCK_GRACE);
        let shown = cmd.display();
        let t0 = Instant::now();
        let out = cmd.output().await;
        let took = t0.elapsed();
        {
            use std::sync::atomic::Ordering::Relaxed;
            self.spent.0.fetch_add(1, Relaxed);
            let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
            self.spent.1.fetch_add(us, Relaxed);
        }
        log::debug!("pct call `{shown}` took {} ms", took.as_millis());
        Ok((out?, took))
    }

    /// Run a pct command; Ok on exit 0 (warnings are logged).
    pub async fn run(&self, c: &PctCommand) -> Result<std::result::Result<Output, PctFailure>> {
        let args = c
            .argv()
            .map_err(|e| Error::invalid(format!("pct {}: {e}", c.subcommand())))?;
        let (out, _) = match self.call(&self.pct, args).await {
            Ok(v) => v,
            Err(e @ Error::DeadlineExceeded(_)) => {
                self.unlock_after_timeout(c).await;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let code = i32::try_from(out.code).ok();
        match output::classify(code, &out.stdout, &out.stderr) {
            Ok(o) => {
                for w in o.warnings {
                    log::warn!("pct {}: {w}", c.subcommand());
                }
                Ok(Ok(out))
            }
            Err(kind) => {
                let target = c.vmid().map(|v| format!(" {v}")).unwrap_or_default();
                Ok(Err(PctFailure {
                    kind,
                    message: format!("pct {}{target}: {}", c.subcommand(), pct_message(&out)),
                }))
            }
        }
    }

    /// A killed pct CLI can orphan its worker, which keeps the CT's config lock: the next
    /// call would fail `CT is locked`. Release it (`pct unlock`), logging what happened.
    async fn unlock_after_timeout(&self, c: &PctCommand) {
        let Some(vmid) = c.vmid().filter(|_| c.takes_lock()) else {
            return;
        };
        let unlock = PctCommand::Unlock { vmid };
        let Ok(args) = unlock.argv() else { return };
        match self.call(&self.pct, args).await {
            Ok((o, _)) if o.success() => {
                log::warn!(
                    "pct {} {vmid} timed out; CT {vmid} unlocked",
                    c.subcommand()
                )
            }
            Ok((o, _)) => log::warn!(
                "pct {} {vmid} timed out; pct unlock {vmid}: {}",
                c.subcommand(),
                pct_message(&o)
            ),
            Err(e) => log::warn!("pct {} {vmid} timed out; pct unlock: {e}", c.subcommand()),
        }
    }

    /// Run and turn any failure into an error carrying pct's message.
    pub async fn run_ok(&self, c: &PctCommand) -> Result<Output> {
        self.run(c).await?.map_err(PctFailure::into_error)
    }

    pub async fn pvesh(&self, c: &PveshCommand) -> Result<Output> {
        let args = c
            .argv()
            .map_err(|e| Error::invalid(format!("pvesh: {e}")))?;
        let (out, _) = self.call(&self.pvesh, args).await?;
        if out.success() {
            Ok(out)
        } else {
            Err(Error::Internal(format!("pvesh: {}", pct_message(&out))))
        }
    }

    /// The program the exec path spawns itself (with the exec's stdio).
    pub fn program(&self) -> &str {
        &self.pct
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_drops_noise() {
        let out = Output {
            code: 255,
            stdout: "extracting archive\n".into(),
            stderr: "trying to acquire lock...\ncan't lock file '/x' - got timeout\n".into(),
        };
        assert_eq!(pct_message(&out), "can't lock file '/x' - got timeout");
        let out = Output {
            code: 255,
            stdout: String::new(),
            stderr: String::new(),
        };
        assert_eq!(pct_message(&out), "exit status 255");
    }
}
