//! Host plumbing shared by the backends: processes, reaping, stdio, ttys, mounts, cgroups.

pub mod cgroup;
pub mod command;
pub mod console;
pub mod fdio;
pub mod logger;
pub mod mount;
pub mod reaper;
pub mod stdio;
