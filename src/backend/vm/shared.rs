//! What the instance and the init's exit future share: the init's state, the VM, the exec'd
//! processes; the init's exit future itself, and [`QemuGone`] (QEMU's end).

use std::collections::HashMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pvelxc_agent::host::Vm;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use super::state;
use crate::sys::reaper::Exit;

/// Agent id of the container's init process.
pub const INIT_ID: &str = "init";

/// Where the init process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitState {
    /// VM booted, process not yet running (waiting for `start`).
    Created,
    Running,
    /// Killed or deleted before it ran: its exit status.
    Aborted(u32),
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Shared between the instance and the init's exit future.
pub struct Shared {
    pub id: String,
    pub vm: Arc<Vm>,
    pub qemu_pid: u32,
    pub state: watch::Sender<InitState>,
    /// Set once delete began: QEMU going away is expected from then on.
    pub deleting: AtomicBool,
    /// Agent ids of exec'd processes → guest pids.
    pub execs: Mutex<HashMap<String, u32>>,
    pub oom: Arc<super::oom::OomWatch>,
}

impl Shared {
    /// The init's exit: its status once it ran, the abort status, or 137 when QEMU dies.
    pub fn init_exit(self: Arc<Self>, mut gone: QemuGone) -> crate::backend::ExitFuture {
        Box::pin(async move {
            let mut rx = self.state.subscribe();
            loop {
                let s = *rx.borrow_and_update();
                match s {
                    InitState::Running => break,
                    InitState::Aborted(code) => return Exit::new(code),
                    InitState::Created => {}
                }
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return Exit::new(137) },
                    _ = gone.wait() => {
                        if !self.deleting.load(Ordering::SeqCst) {
                            log::warn!(
                                "{}: QEMU {} exited before the container started{}",
                                self.id, self.qemu_pid, self.console_tail()
                            );
                        }
                        return Exit::new(137);
                    }
                }
            }
            // QEMU's death ends the wait too: the agent connection may be held back by unread
            // output (bounded queues) and never see its EOF; a report already on its way still
            // gets a moment to arrive.
            let waited = tokio::select! {
                biased;
                r = self.vm.wait(INIT_ID) => r,
                _ = gone.wait() => {
                    match tokio::time::timeout(
                        std::time::Duration::from_secs(2),
                        self.vm.wait(INIT_ID),
                    )
                    .await
                    {
                        Ok(r) => r,
                        Err(_) => Err(pvelxc_agent::host::VmError::Disconnected(
                            "QEMU exited".into(),
                        )),
                    }
                }
            };
            let code = match waited {
                Ok(c) => u32::try_from(c).unwrap_or(255),
                Err(e) => {
                    if !self.deleting.load(Ordering::SeqCst) {
                        log::warn!(
                            "{}: the VM went away while the container ran ({e}); reporting 137{}",
                            self.id,
                            self.console_tail()
                        );
                    }
                    137
                }
            };
            // An OOM kill shows on the console just before the exit: report it first.
            if code == 137 {
                self.oom.settle().await;
            }
            // The container ended: its exec'd processes end with it, as in a pid namespace.
            let ids: Vec<String> = lock(&self.execs).keys().cloned().collect();
            for id in ids {
                if self.vm.exit_status(&id).is_none() {
                    let _ = self.vm.signal(&id, libc::SIGKILL).await;
                }
            }
            Exit::new(code)
        })
    }

    fn console_tail(&self) -> String {
        let mut out = String::new();
        for p in [self.vm.console_log(), self.vm.run_dir().join("qemu.log")] {
            if let Ok(t) = std::fs::read_to_string(&p) {
                let tail: String = t
                    .chars()
                    .rev()
                    .take(1500)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                if !tail.trim().is_empty() {
                    out.push_str(&format!("\n--- {} (tail) ---\n{tail}", p.display()));
                }
            }
        }
        out
    }
}

/// Resolves when QEMU has exited (a pidfd: works whoever reaps it; else /proc polling).
pub struct QemuGone {
    pid: u32,
    fd: Option<AsyncFd<OwnedFd>>,
}

impl QemuGone {
    pub(super) fn new(pid: u32) -> Self {
        // SAFETY: pidfd_open(2) takes a pid and flags and returns a new fd or -1.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        let fd = (raw >= 0)
            .then(|| {
                // SAFETY: a fresh fd returned by pidfd_open, owned from here on.
                let fd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
                // SAFETY: the AsyncFd owns the fd, so it stays open exactly as long as registered.
                unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.ok()
            })
            .flatten();
        QemuGone { pid, fd }
    }

    async fn wait(&mut self) {
        if let Some(fd) = &self.fd {
            let _ = fd.readable().await;
            return;
        }
        while state::alive(self.pid) {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
