//! A blocking-free exclusive `flock` with a bounded wait (template packing).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Held until dropped.
pub struct FileLock {
    _file: File,
}

impl FileLock {
    pub async fn acquire(path: &Path, timeout: Duration) -> Result<FileLock> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io(format!("open lock {}", path.display()), e))?;
        let start = Instant::now();
        loop {
            // SAFETY: flock on an fd we own.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(FileLock { _file: f });
            }
            let e = std::io::Error::last_os_error();
            if !matches!(
                e.raw_os_error(),
                Some(libc::EWOULDBLOCK) | Some(libc::EINTR)
            ) {
                return Err(Error::io(format!("flock {}", path.display()), e));
            }
            if start.elapsed() > timeout {
                return Err(Error::DeadlineExceeded(format!(
                    "timed out after {timeout:?} waiting for {}",
                    path.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
