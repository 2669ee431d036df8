//! The guest's serial console and QEMU's own output, written by the host with a size cap.
//!
//! Everything here is guest-controlled (guest root can write to `/dev/ttyS0` or `/dev/kmsg` at
//! will), so the log files are capped: when one reaches [`LOG_CAP`] bytes it is renamed to
//! `<name>.old` (replacing the previous one) and a fresh file starts with a marker line. At most
//! 2 × [`LOG_CAP`] bytes per log on disk. Console lines also go to a bounded channel (see
//! [`LINE_QUEUE`]); when the consumer lags, lines are dropped and counted, never queued without
//! bound.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::UnixListener;
use tokio::sync::mpsc;

/// Bytes per log file before it is rotated.
pub const LOG_CAP: u64 = 1 << 20;
/// Console lines queued for the consumer before more are dropped.
pub const LINE_QUEUE: usize = 256;
/// Longest console line passed on (longer ones are cut).
pub const MAX_LINE: usize = 1024;

/// A file that rotates itself at [`LOG_CAP`].
pub(crate) struct CappedLog {
    path: PathBuf,
    file: Option<File>,
    written: u64,
    cap: u64,
}

impl CappedLog {
    pub(crate) fn create(path: &Path) -> std::io::Result<CappedLog> {
        Self::with_cap(path, LOG_CAP)
    }

    fn with_cap(path: &Path, cap: u64) -> std::io::Result<CappedLog> {
        let file = File::create(path)?;
        Ok(CappedLog {
            path: path.to_path_buf(),
            file: Some(file),
            written: 0,
            cap,
        })
    }

    fn rotate(&mut self) {
        self.file = None;
        let mut old = self.path.clone().into_os_string();
        old.push(".old");
        let _ = std::fs::rename(&self.path, &old);
        self.file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&self.path)
            .ok();
        self.written = 0;
        let marker = format!(
            "[pvelxc: log reached {} bytes; the previous part is in {}]\n",
            self.cap,
            Path::new(&old).display()
        );
        self.raw_write(marker.as_bytes());
    }

    fn raw_write(&mut self, data: &[u8]) {
        if let Some(f) = self.file.as_mut() {
            if f.write_all(data).is_ok() {
                self.written += data.len() as u64;
            }
        }
    }

    pub(crate) fn write(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.written >= self.cap {
                self.rotate();
            }
            let room = usize::try_from(self.cap.saturating_sub(self.written))
                .unwrap_or(usize::MAX)
                .max(1);
            let n = room.min(data.len());
            self.raw_write(&data[..n]);
            if self.file.is_none() {
                return;
            }
            data = &data[n..];
        }
    }
}

/// Splits a byte stream into lines (bounded), passing them on with `try_send`.
struct Lines {
    partial: Vec<u8>,
    tx: mpsc::Sender<String>,
    dropped: u64,
}

impl Lines {
    fn feed(&mut self, data: &[u8]) {
        for &b in data {
            if b == b'\n' {
                let line = String::from_utf8_lossy(&self.partial).into_owned();
                self.partial.clear();
                if self.tx.try_send(line).is_err() {
                    self.dropped += 1;
                }
            } else if self.partial.len() < MAX_LINE {
                self.partial.push(b);
            }
        }
    }
}

/// Accepts QEMU's serial connection (within `accept_timeout`), then copies the console into the
/// capped `console.log` and its lines into `tx` until QEMU closes it.
pub(crate) async fn pump_console(
    listener: UnixListener,
    log: CappedLog,
    tx: mpsc::Sender<String>,
    accept_timeout: Duration,
) {
    let stream = match tokio::time::timeout(accept_timeout, listener.accept()).await {
        Ok(Ok((s, _))) => s,
        _ => return,
    };
    drop(listener);
    let mut lines = Lines {
        partial: Vec::new(),
        tx,
        dropped: 0,
    };
    let mut log = log;
    let mut r = stream;
    let mut buf = vec![0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                log.write(&buf[..n]);
                lines.feed(&buf[..n]);
            }
        }
    }
    if lines.dropped > 0 {
        let note = format!(
            "[pvelxc: {} console lines were not inspected (consumer too slow)]\n",
            lines.dropped
        );
        log.write(note.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_rotates_at_cap_with_a_marker() {
        let dir = std::env::temp_dir().join(format!("pvelxc-capped-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("console.log");
        let mut log = CappedLog::with_cap(&p, 1000).unwrap();
        for _ in 0..50 {
            log.write(&[b'x'; 99]);
        }
        let cur = std::fs::metadata(&p).unwrap().len();
        let old = std::fs::metadata(dir.join("console.log.old"))
            .unwrap()
            .len();
        assert!(cur <= 1000 && old <= 1000, "{cur} {old}");
        assert!(std::fs::read_to_string(&p)
            .unwrap()
            .starts_with("[pvelxc: log reached 1000"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lines_are_bounded_and_dropped_when_full() {
        let (tx, mut rx) = mpsc::channel(2);
        let mut l = Lines {
            partial: Vec::new(),
            tx,
            dropped: 0,
        };
        let long = vec![b'a'; MAX_LINE * 3];
        l.feed(&long);
        l.feed(b"\nb\nc\n");
        assert_eq!(rx.try_recv().unwrap().len(), MAX_LINE);
        assert_eq!(rx.try_recv().unwrap(), "b");
        assert!(rx.try_recv().is_err());
        assert_eq!(l.dropped, 1);
    }
}
