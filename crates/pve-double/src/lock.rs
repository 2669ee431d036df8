//! Per-VMID config locks: flock on `$ROOT/lock/pve-config-<vmid>.lock`, like
//! PVE::LXC::Config::lock_config (PVE::Tools::lock_file_full).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::error::{die, Context, PveError, Result};
use crate::faults::Faults;
use crate::paths::Root;

/// Default lock timeout (seconds) for most commands.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Lock timeout used by create.
pub const CREATE_TIMEOUT: Duration = Duration::from_secs(5);

/// A held config lock (released on drop).
pub struct ConfigLock {
    _lock: Flock<File>,
}

/// The timeout message PVE prints.
pub fn timeout_message(path: &Path) -> String {
    format!("can't lock file '{}' - got timeout", path.display())
}

/// `PVE_DOUBLE_LOCK_TIMEOUT_MS` overrides every lock timeout (keeps tests fast).
fn effective_timeout(default: Duration) -> Duration {
    std::env::var("PVE_DOUBLE_LOCK_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(default)
}

/// Take the config lock of `vmid`, waiting up to `timeout`.
pub fn lock_config(
    root: &Root,
    faults: &Faults,
    vmid: u32,
    timeout: Duration,
) -> Result<ConfigLock> {
    let path = root.lock_path(vmid);
    if let Some(wait) = faults.lock_timeout(vmid) {
        eprintln!("trying to acquire lock...");
        std::thread::sleep(wait);
        return Err(die(timeout_message(&path)));
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .ctx(|| "can't open file".to_string())?;
    let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => return Ok(ConfigLock { _lock: l }),
        Err((f, _)) => f,
    };
    eprint!("trying to acquire lock...");
    let _ = std::io::stderr().flush();
    let deadline = Instant::now() + effective_timeout(timeout);
    let mut file = file;
    loop {
        std::thread::sleep(Duration::from_millis(20));
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => {
                eprintln!(" OK");
                return Ok(ConfigLock { _lock: l });
            }
            Err((f, _)) => file = f,
        }
        if Instant::now() >= deadline {
            eprintln!();
            return Err(PveError::Die(timeout_message(&path)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message() {
        assert_eq!(
            timeout_message(Path::new("/run/lock/lxc/pve-config-101.lock")),
            "can't lock file '/run/lock/lxc/pve-config-101.lock' - got timeout"
        );
    }

    #[test]
    fn contention_times_out() {
        let dir = std::env::temp_dir().join(format!("pve-double-lock-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("lock")).unwrap();
        let root = Root {
            root: dir.clone(),
            node: "pve".into(),
        };
        let faults = Faults::default();
        let held = lock_config(&root, &faults, 4242, DEFAULT_TIMEOUT).unwrap();
        // flock locks are per open file description: a second open conflicts even in-process
        std::env::set_var("PVE_DOUBLE_LOCK_TIMEOUT_MS", "100");
        let t = Instant::now();
        let err = lock_config(&root, &faults, 4242, DEFAULT_TIMEOUT)
            .err()
            .unwrap();
        assert!(t.elapsed() < Duration::from_secs(3));
        assert_eq!(err, die(timeout_message(&root.lock_path(4242))));
        drop(held);
        assert!(lock_config(&root, &faults, 4242, DEFAULT_TIMEOUT).is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn injected_timeout() {
        let dir = std::env::temp_dir().join(format!("pve-double-lockf-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("lock")).unwrap();
        let root = Root {
            root: dir.clone(),
            node: "pve".into(),
        };
        let faults = Faults::parse("lock-timeout 777 10");
        let err = lock_config(&root, &faults, 777, DEFAULT_TIMEOUT)
            .err()
            .unwrap();
        assert_eq!(err.to_string(), timeout_message(&root.lock_path(777)));
        assert!(lock_config(&root, &faults, 778, DEFAULT_TIMEOUT).is_ok());
        let _ = std::fs::remove_dir_all(dir);
    }
}
