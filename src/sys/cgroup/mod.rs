//! Reading a container's cgroup (v1 or v2): where it is, its metrics, and OOM notifications.
//!
//! Everything is read below a host root (`/` in production, [`Cgroup::of_pid_at`]): the
//! process's `<root>/proc/<pid>/cgroup` and the hierarchies under `<root>/sys/fs/cgroup`, so the
//! tests run against fixture trees shaped like a cgroup v2 Proxmox VE host.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::error::{Error, Result};

#[cfg(test)]
pub(crate) mod fixture;
mod metrics;
pub mod types;

pub use types::Metrics;
#[cfg(test)]
mod tests;

use metrics::{read_kv, v1_metrics, v2_metrics};

/// Where the cgroup hierarchies are mounted, below the host root.
const ROOT: &str = "sys/fs/cgroup";
/// Upper bound on /proc/<pid>/cgroup (one line per hierarchy; paths below the CT's cgroup are
/// the guest's choice).
const MAX_PROC_CGROUP: u64 = 64 * 1024;

/// Where a process's cgroup lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    V1(HashMap<String, PathBuf>),
    V2(PathBuf),
}

/// Whether this host runs cgroup v2 only (a Proxmox VE 8/9 host does).
pub fn is_unified() -> bool {
    is_unified_at(&Path::new("/").join(ROOT))
}

fn is_unified_at(cgroot: &Path) -> bool {
    cgroot.join("cgroup.controllers").exists()
}

impl Cgroup {
    /// The cgroup of a live process, from /proc/<pid>/cgroup.
    pub fn of_pid(pid: u32) -> Result<Cgroup> {
        Self::of_pid_at(Path::new("/"), pid)
    }

    /// The cgroup of `pid` on the host whose file system root is `host`: its
    /// `proc/<pid>/cgroup` resolved against the hierarchies under `sys/fs/cgroup`.
    pub fn of_pid_at(host: &Path, pid: u32) -> Result<Cgroup> {
        let file = host.join(format!("proc/{pid}/cgroup"));
        let mut text = String::new();
        std::fs::File::open(&file)
            .and_then(|f| f.take(MAX_PROC_CGROUP).read_to_string(&mut text))
            .map_err(|e| Error::io(format!("read {}", file.display()), e))?;
        let cgroot = host.join(ROOT);
        Ok(Self::parse(&text, is_unified_at(&cgroot), &cgroot))
    }

    /// /proc/<pid>/cgroup text; `unified`: a cgroup v2 only host (else v1 or hybrid, whose v2
    /// line names the `unified` mount). `cgroot`: where the hierarchies are mounted.
    fn parse(text: &str, unified: bool, cgroot: &Path) -> Cgroup {
        let mut v1 = HashMap::new();
        let mut v2 = None;
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let rel = path.trim_start_matches('/');
            // Seen from another cgroup namespace; never a path to resolve from here.
            if rel.split('/').any(|c| c == "..") {
                continue;
            }
            if ctrls.is_empty() {
                let base = if unified {
                    cgroot.to_path_buf()
                } else {
                    cgroot.join("unified")
                };
                v2 = Some(base.join(rel));
            } else {
                for c in ctrls.split(',') {
                    let c = c.trim_start_matches("name=");
                    v1.insert(c.to_string(), cgroot.join(c).join(rel));
                }
            }
        }
        match (unified, v2) {
            (true, Some(p)) => Cgroup::V2(p),
            _ => Cgroup::V1(v1),
        }
    }

    pub(super) fn v1_dir(&self, ctrl: &str) -> Option<&Path> {
        match self {
            Cgroup::V1(m) => m.get(ctrl).map(PathBuf::as_path),
            Cgroup::V2(_) => None,
        }
    }

    /// Metrics of this cgroup, in the shape of its version.
    pub fn metrics(&self) -> Metrics {
        match self {
            Cgroup::V1(_) => Metrics::V1(Box::new(v1_metrics(self))),
            Cgroup::V2(dir) => Metrics::V2(Box::new(v2_metrics(dir))),
        }
    }

    /// A stream of OOM kills in this cgroup (v1: memory.oom_control eventfd; v2: memory.events).
    pub fn watch_oom(&self) -> Result<mpsc::UnboundedReceiver<()>> {
        self.watch_oom_flushable().map(|(rx, _)| rx)
    }

    /// [`Cgroup::watch_oom`], with (where the kernel counts kills) a handle that reports the kills the watcher
    /// has not seen yet, so they are not lost when the cgroup is removed right after an exit.
    pub fn watch_oom_flushable(&self) -> Result<(mpsc::UnboundedReceiver<()>, Option<OomFlush>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        match self {
            Cgroup::V1(_) => {
                let dir = self
                    .v1_dir("memory")
                    .ok_or_else(|| Error::internal("no memory cgroup"))?
                    .to_path_buf();
                let efd = eventfd()?;
                let ctl = std::fs::File::open(dir.join("memory.oom_control"))
                    .map_err(|e| Error::io("open memory.oom_control", e))?;
                std::fs::write(
                    dir.join("cgroup.event_control"),
                    format!("{} {}", efd.as_raw_fd(), ctl.as_raw_fd()),
                )
                .map_err(|e| Error::io("register OOM eventfd", e))?;
                let afd = crate::sys::fdio::register(efd).map_err(|e| Error::io("eventfd", e))?;
                let flush = OomFlush::new(dir.join("memory.oom_control"), tx);
                // Kernels before 4.13 do not count kills: no flush handle there.
                let counted = flush.oom_kills().is_some();
                let watcher = flush.clone();
                tokio::spawn(async move {
                    let _keep_registered = ctl;
                    // The eventfd also fires when the cgroup is removed.
                    on_each_wakeup(afd, || dir.exists() && watcher.notified()).await;
                });
                Ok((rx, counted.then_some(flush)))
            }
            Cgroup::V2(dir) => {
                use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
                let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
                ino.add_watch(&dir.join("memory.events"), AddWatchFlags::IN_MODIFY)?;
                let afd = crate::sys::fdio::register(OwnedFd::from(ino))
                    .map_err(|e| Error::io("inotify", e))?;
                let flush = OomFlush::new(dir.join("memory.events"), tx);
                let watcher = flush.clone();
                tokio::spawn(async move {
                    on_each_wakeup(afd, || watcher.report()).await;
                });
                Ok((rx, Some(flush)))
            }
        }
    }
}

/// Reports the OOM kills of a cgroup its watcher has not reported, once the container's init
/// has exited ([`OomFlush::flush`]), so none is lost when the cgroup is removed right after.
/// The count is the `oom_kill` counter (v2: memory.events, v1: memory.oom_control), shared with
/// the watcher so that each kill is reported once:
/// - v2: the notification follows the count: the watcher reports the counter's increase;
/// - v1: the notification comes *before* the kill is counted: the watcher reports one per
///   notification, as it always did, and stops reporting once the flush has run.
#[derive(Clone)]
pub struct OomFlush {
    file: PathBuf,
    seen: Arc<AtomicU64>,
    flushed: Arc<AtomicBool>,
    tx: mpsc::UnboundedSender<()>,
}

impl OomFlush {
    /// Counting from the kills there are now.
    fn new(file: PathBuf, tx: mpsc::UnboundedSender<()>) -> Self {
        let f = OomFlush {
            file,
            seen: Arc::new(AtomicU64::new(0)),
            flushed: Arc::new(AtomicBool::new(false)),
            tx,
        };
        f.seen.store(f.oom_kills().unwrap_or(0), Ordering::SeqCst);
        f
    }

    fn oom_kills(&self) -> Option<u64> {
        read_kv(&self.file).get("oom_kill").copied()
    }

    /// v2 watcher: one message per kill counted since the last report; false once the cgroup
    /// or the receiver is gone.
    fn report(&self) -> bool {
        let Some(now) = self.oom_kills() else {
            return false;
        };
        let before = self.seen.fetch_max(now, Ordering::SeqCst);
        (0..now.saturating_sub(before)).all(|_| self.tx.send(()).is_ok())
    }

    /// v1 watcher: one message for this notification (none after the flush); false to stop.
    fn notified(&self) -> bool {
        if self.flushed.load(Ordering::SeqCst) {
            return false;
        }
        self.seen.fetch_add(1, Ordering::SeqCst);
        self.tx.send(()).is_ok()
    }

    /// The init has exited: report what was counted and not reported yet.
    pub fn flush(&self) {
        self.flushed.store(true, Ordering::SeqCst);
        self.report();
    }
}

/// Drain `afd` each time it becomes readable and call `wake`, until `wake` says stop or the fd
/// fails.
async fn on_each_wakeup(afd: tokio::io::unix::AsyncFd<OwnedFd>, mut wake: impl FnMut() -> bool) {
    let mut buf = [0u8; 1024];
    loop {
        let Ok(mut g) = afd.readable().await else {
            return;
        };
        match g.try_io(|fd| {
            nix::unistd::read(fd.get_ref().as_fd(), &mut buf).map_err(std::io::Error::from)
        }) {
            Ok(Ok(n)) if n > 0 => {
                if !wake() {
                    return;
                }
            }
            Ok(_) => return,
            Err(_would_block) => continue,
        }
    }
}

fn eventfd() -> Result<OwnedFd> {
    // SAFETY: plain syscall; the returned fd is owned from here on.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(Error::io("eventfd", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
