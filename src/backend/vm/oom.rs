//! OOM events for a VM container, from two sources:
//!
//! * **the guest console** (a hint): the guest kernel prints `Out of memory: Killed process N
//!   (comm) total-vm:…` when its OOM killer fires. Guest root can print the same text (to
//!   `/dev/kmsg` or the serial port), so such a line is never trusted blindly: only lines in
//!   exactly the kernel's format count (optional `[ seconds]` stamp, the fixed words, a numeric
//!   pid, a comm of at most 15 bytes, then `total-vm:`), each guest pid counts once, and events
//!   pass a token bucket ([`BURST`] at once, then [`PER_SEC`] per second). A guest that fakes OOM
//!   lines can therefore only mislabel its *own* exit, at a bounded rate. The lines arrive
//!   through the agent host's bounded console queue (dropped, never buffered without bound,
//!   when this task lags).
//! * **the host cgroup** QEMU runs in (trusted): its memory cgroup's OOM notifications (QEMU
//!   itself hitting guest RAM + overhead), through the same bucket.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

/// Events allowed at once.
pub const BURST: f64 = 3.0;
/// Events allowed per second after the burst.
pub const PER_SEC: f64 = 1.0;
/// Distinct guest pids remembered (older ones are forgotten).
const MAX_PIDS: usize = 4096;

/// The guest pid in a kernel OOM-kill line, or None when the line is not exactly that.
pub fn parse_kill(line: &str) -> Option<u32> {
    let mut s = line.trim_end_matches('\r');
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']')?;
        let stamp = rest[..end].trim();
        if stamp.is_empty() || !stamp.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return None;
        }
        s = rest[end + 1..].strip_prefix(' ')?;
    }
    let rest = s
        .strip_prefix("Out of memory: Killed process ")
        .or_else(|| s.strip_prefix("Memory cgroup out of memory: Killed process "))?;
    let (pid, rest) = rest.split_once(" (")?;
    if pid.is_empty() || pid.len() > 10 || !pid.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let (comm, rest) = rest.rsplit_once(") ")?;
    if comm.len() > 15 || !rest.starts_with("total-vm:") {
        return None;
    }
    pid.parse().ok()
}

/// A token bucket.
pub struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(now: Instant) -> Self {
        Bucket {
            tokens: BURST,
            last: now,
        }
    }

    pub fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * PER_SEC).min(BURST);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

struct Filter {
    bucket: Bucket,
    seen: HashSet<u32>,
    dropped: u64,
}

impl Filter {
    fn guest_line(&mut self, line: &str, now: Instant) -> bool {
        let Some(pid) = parse_kill(line) else {
            return false;
        };
        if self.seen.contains(&pid) {
            return false;
        }
        if self.seen.len() >= MAX_PIDS {
            self.seen.clear();
        }
        self.seen.insert(pid);
        self.pass(now)
    }

    fn pass(&mut self, now: Instant) -> bool {
        if self.bucket.take(now) {
            true
        } else {
            self.dropped += 1;
            false
        }
    }
}

pub struct OomWatch {
    id: String,
}

impl OomWatch {
    /// Starts the watcher over the guest console lines and (when given) the host cgroup's OOM
    /// notifications; the receiver gets one message per accepted OOM.
    pub fn start(
        id: String,
        lines: Option<mpsc::Receiver<String>>,
        host: Option<mpsc::UnboundedReceiver<()>>,
    ) -> (Arc<OomWatch>, mpsc::UnboundedReceiver<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let w = Arc::new(OomWatch { id: id.clone() });
        tokio::spawn(async move {
            let mut f = Filter {
                bucket: Bucket::new(Instant::now()),
                seen: HashSet::new(),
                dropped: 0,
            };
            let mut lines = lines;
            let mut host = host;
            loop {
                tokio::select! {
                    l = async { match lines.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => match l {
                        Some(line) => {
                            if f.guest_line(&line, Instant::now()) {
                                log::warn!("{id}: guest OOM kill: {}", line.trim());
                                if tx.send(()).is_err() { break; }
                            }
                        }
                        None => lines = None,
                    },
                    h = async { match host.as_mut() { Some(r) => r.recv().await, None => std::future::pending().await } } => match h {
                        Some(()) => {
                            if f.pass(Instant::now()) {
                                log::warn!("{id}: QEMU hit its host cgroup memory limit (OOM)");
                                if tx.send(()).is_err() { break; }
                            }
                        }
                        None => host = None,
                    },
                }
                if lines.is_none() && host.is_none() {
                    break;
                }
            }
            if f.dropped > 0 {
                log::warn!(
                    "{id}: {} OOM reports over the rate limit were dropped",
                    f.dropped
                );
            }
        });
        (w, rx)
    }

    /// Gives the watcher a moment to pass on an OOM line printed just before a kill.
    pub async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        log::debug!("{}: OOM watcher settled", self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_kernel_format_counts() {
        let real = "[    5.123456] Out of memory: Killed process 123 (tail) total-vm:265860kB, \
                    anon-rss:200000kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:500kB oom_score_adj:0";
        assert_eq!(parse_kill(real), Some(123));
        assert_eq!(
            parse_kill("Out of memory: Killed process 9 (a) b) total-vm:1kB"),
            Some(9)
        );
        assert_eq!(
            parse_kill("out of memory: killed process 1 (x) total-vm:1"),
            None
        );
        assert_eq!(
            parse_kill("hello Out of memory: Killed process 1 (x) total-vm:1"),
            None
        );
        assert_eq!(
            parse_kill("[ x] Out of memory: Killed process 1 (x) total-vm:1"),
            None
        );
        assert_eq!(
            parse_kill("Out of memory: Killed process 1x (x) total-vm:1"),
            None
        );
        assert_eq!(
            parse_kill("Out of memory: Killed process 1 (sixteen-chars-xx) total-vm:1"),
            None
        );
        assert_eq!(parse_kill("Out of memory: Killed process 1 (x)"), None);
    }

    #[test]
    fn flood_is_rate_limited_and_pids_count_once() {
        let t0 = Instant::now();
        let mut f = Filter {
            bucket: Bucket::new(t0),
            seen: HashSet::new(),
            dropped: 0,
        };
        let line = |pid: u32| format!("Out of memory: Killed process {pid} (x) total-vm:1kB");
        assert!(f.guest_line(&line(1), t0));
        assert!(!f.guest_line(&line(1), t0), "same pid twice");
        let passed = (2..1000).filter(|p| f.guest_line(&line(*p), t0)).count();
        assert_eq!(passed, 2, "burst of 3 in total");
        let later = t0 + Duration::from_secs(10);
        let passed = (1000..2000)
            .filter(|p| f.guest_line(&line(*p), later))
            .count();
        assert_eq!(passed, 3, "refilled up to the burst");
    }
}
