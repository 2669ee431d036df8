//! The shim owns all reaping (containerd-shim's built-in reaper is disabled): one SIGCHLD task
//! reaps every child and hands exit statuses to whoever watches that pid. Exits that arrive
//! before anyone watches are kept briefly, so `spawn` + `watch` has no race.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::oneshot;

/// How a process ended, as containerd reports it: the exit code, or 128 + signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub code: u32,
    pub at: SystemTime,
}

impl Exit {
    pub fn new(code: u32) -> Self {
        Exit {
            code,
            at: SystemTime::now(),
        }
    }
}

const MAX_UNCLAIMED: usize = 512;

#[derive(Default)]
struct Table {
    watchers: HashMap<i32, Vec<oneshot::Sender<Exit>>>,
    unclaimed: HashMap<i32, Exit>,
}

fn table() -> &'static Mutex<Table> {
    static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();
    TABLE.get_or_init(|| Mutex::new(Table::default()))
}

/// Watch a child pid; the receiver fires once with its exit status.
pub fn watch(pid: i32) -> oneshot::Receiver<Exit> {
    let (tx, rx) = oneshot::channel();
    let mut t = table().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(exit) = t.unclaimed.remove(&pid) {
        let _ = tx.send(exit);
    } else {
        t.watchers.entry(pid).or_default().push(tx);
    }
    rx
}

fn deliver(pid: i32, exit: Exit) {
    let mut t = table().lock().unwrap_or_else(|p| p.into_inner());
    match t.watchers.remove(&pid) {
        Some(list) => {
            for tx in list {
                let _ = tx.send(exit);
            }
        }
        None => {
            if t.unclaimed.len() >= MAX_UNCLAIMED {
                // Orphans reparented to us (we are a subreaper) that nobody watches.
                if let Some(oldest) = t
                    .unclaimed
                    .iter()
                    .min_by_key(|(_, e)| e.at)
                    .map(|(p, _)| *p)
                {
                    t.unclaimed.remove(&oldest);
                }
            }
            t.unclaimed.insert(pid, exit);
        }
    }
}

/// Reap every child that has exited, without blocking.
pub fn reap_all() {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => deliver(pid.as_raw(), Exit::new(code as u32)),
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                deliver(pid.as_raw(), Exit::new(128 + sig as u32))
            }
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Ok(_) => continue,
            Err(Errno::EINTR) => continue,
            Err(e) => {
                log::warn!("waitpid: {e}");
                return;
            }
        }
    }
}

/// Start the SIGCHLD task. Call once, inside the tokio runtime, before spawning children.
pub fn start() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut sig = signal(SignalKind::child())?;
    tokio::spawn(async move {
        reap_all();
        while sig.recv().await.is_some() {
            reap_all();
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn early_exit_is_kept_for_a_late_watcher() {
        deliver(999_991, Exit::new(3));
        let mut rx = watch(999_991);
        assert_eq!(rx.try_recv().expect("delivered").code, 3);
    }

    #[test]
    fn watchers_all_get_the_exit() {
        let mut a = watch(999_992);
        let mut b = watch(999_992);
        deliver(999_992, Exit::new(137));
        assert_eq!(a.try_recv().expect("a").code, 137);
        assert_eq!(b.try_recv().expect("b").code, 137);
    }
}
