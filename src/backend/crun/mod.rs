//! The plain-OCI backend: crun (default) or runc, driven through their CLI.
//!
//! - `backend`: check, create and crash cleanup; `instance`: the container's operations;
//! - `stdio`: running the runtime with the process's stdio; `cli`: the runtime's command line;
//! - `sealed`: crun run from a sealed copy; `fifo`: `start` without running crun.

mod backend;
mod cli;
mod fifo;
mod instance;
mod sealed;
mod stdio;

pub use backend::OciBackend;
pub use instance::OciInstance;
