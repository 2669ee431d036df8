//! The plain-OCI backend: crun (default) or runc, driven through their CLI.
//!
//! - `backend`: check, create and crash cleanup; `instance`: the container's operations;
//! - `stdio`: running the runtime with the process's stdio; `cli`: the runtime's command line.

mod backend;
mod cli;
mod instance;
mod stdio;

pub use backend::OciBackend;
pub use instance::OciInstance;
