//! The explicit state machine of a task's process (init or exec).
//!
//! ```text
//!   Created --start--> Running --pause--> Paused
//!      |                 |  ^---resume------'|
//!      '-----exit--------+-----exit----------'--> Stopped --delete--> (removed)
//! ```
//! Exec processes never pause; `delete` is allowed only from Created or Stopped.

use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::sys::reaper::Exit;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Start,
    Pause,
    Resume,
    Exit(Exit),
}

#[derive(Debug, Clone)]
pub struct ProcState {
    pub status: Status,
    pub pid: u32,
    pub exit: Option<Exit>,
}

impl ProcState {
    pub fn new(pid: u32) -> Self {
        ProcState {
            status: Status::Created,
            pid,
            exit: None,
        }
    }

    pub fn apply(&mut self, t: Transition) -> Result<()> {
        use Status::*;
        let next = match (self.status, t) {
            (Created, Transition::Start) => Running,
            (Running, Transition::Pause) => Paused,
            (Paused, Transition::Resume) => Running,
            (Created | Running | Paused, Transition::Exit(e)) => {
                self.exit = Some(e);
                Stopped
            }
            (Stopped, Transition::Exit(_)) => return Ok(()),
            (s, t) => {
                return Err(Error::precondition(format!(
                    "cannot {} a process that is {}",
                    verb(t),
                    status_name(s)
                )))
            }
        };
        self.status = next;
        Ok(())
    }

    /// Whether `delete` may remove this process now.
    pub fn deletable(&self) -> Result<()> {
        match self.status {
            Status::Created | Status::Stopped => Ok(()),
            s => Err(Error::precondition(format!(
                "cannot delete a process that is {}",
                status_name(s)
            ))),
        }
    }

    pub fn exit_code(&self) -> u32 {
        self.exit.map(|e| e.code).unwrap_or(0)
    }

    pub fn exited_at(&self) -> Option<SystemTime> {
        self.exit.map(|e| e.at)
    }
}

fn verb(t: Transition) -> &'static str {
    match t {
        Transition::Start => "start",
        Transition::Pause => "pause",
        Transition::Resume => "resume",
        Transition::Exit(_) => "exit",
    }
}

pub fn status_name(s: Status) -> &'static str {
    match s {
        Status::Created => "created",
        Status::Running => "running",
        Status::Paused => "paused",
        Status::Stopped => "stopped",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle() {
        let mut s = ProcState::new(10);
        s.deletable().expect("created is deletable");
        s.apply(Transition::Start).expect("start");
        assert!(s.deletable().is_err());
        assert!(s.apply(Transition::Start).is_err(), "double start");
        assert!(s.apply(Transition::Resume).is_err(), "resume while running");
        s.apply(Transition::Pause).expect("pause");
        assert!(s.apply(Transition::Pause).is_err());
        s.apply(Transition::Resume).expect("resume");
        s.apply(Transition::Exit(Exit::new(137))).expect("exit");
        assert_eq!(s.status, Status::Stopped);
        assert_eq!(s.exit_code(), 137);
        // A second exit report changes nothing.
        s.apply(Transition::Exit(Exit::new(0))).expect("idempotent");
        assert_eq!(s.exit_code(), 137);
        s.deletable().expect("stopped is deletable");
        let e = s.apply(Transition::Start).expect_err("start after exit");
        assert_eq!(e.to_string(), "cannot start a process that is stopped");
    }

    #[test]
    fn exit_from_created_and_paused() {
        let mut s = ProcState::new(1);
        s.apply(Transition::Exit(Exit::new(9)))
            .expect("exit before start");
        assert_eq!(s.status, Status::Stopped);
        let mut p = ProcState::new(1);
        p.apply(Transition::Start).expect("start");
        p.apply(Transition::Pause).expect("pause");
        p.apply(Transition::Exit(Exit::new(137)))
            .expect("killed while paused");
        assert_eq!(p.status, Status::Stopped);
    }
}
