//! `pvelxc-guest`: the one implementation of "run an OCI process" shared by the two guest
//! binaries of containerd-shim-pvelxc-v2: `pvelxc-init` (PID 1 inside a Proxmox CT) and
//! `pvelxc-agent` (the `/init` of a QEMU micro-VM).
//!
//! * [`process`]: the subset of the OCI runtime-spec `process` object a guest honours, in
//!   config.json field names (serde), and [`process::prepare`], which validates it and
//!   allocates everything the child needs *before* `fork`.
//! * [`run`]: what runs in the child *after* `fork`: [`run::apply`] (rlimits,
//!   oomScoreAdj, cwd, umask, capabilities, groups/gid/uid, noNewPrivileges, in runc's
//!   order) and [`run::exec`] (PATH lookup, `execve`, runc's exit codes 127/126).
//! * [`caps`]: OCI capability names ↔ numbers and the capget/capset/prctl calls.
//! * [`rlimit`], [`status`]: rlimit names and `waitpid` status decoding.
//! * [`text`]: the cleaner for peer-supplied free text both wire protocols use.
//!
//! **Async-signal-safe after fork.** Everything in [`run`] (and the `caps` calls it
//! makes) only issues raw syscalls on memory [`process::prepare`] allocated: no heap
//! allocation, no locks, no stdio buffers; errors are `&'static str` + errno and are
//! written to fd 2 from a stack buffer ([`sys::Failure::report`]). So a multi-threaded
//! parent (the agent) may call them between `fork` and `execve`.
//!
//! Ids are numeric only: the guest binaries are static, nothing here resolves names (no
//! NSS, no dynamic loader). Dependencies: `libc` and `serde` only.

pub mod caps;
pub mod process;
pub mod rlimit;
pub mod run;
pub mod status;
pub mod sys;
pub mod text;

#[cfg(feature = "testutil")]
pub mod testutil;

pub use process::{prepare, ConsoleSize, Prepared, Process, Rlimit, User, DEFAULT_PATH};
pub use run::{apply, exec, reset_signals, try_exec, ExecFailure};
pub use sys::Failure;
