//! The Proxmox VE backend: each container is a real CT driven through the `pct` CLI.
//!
//! Process model (docs/proxmox-backend.md, crates/pvelxc-init/PROTOCOL.md): the static
//! `pvelxc-init` is the CT's entrypoint; the shim shares a host directory into the CT
//! (`mp0: <state_dir>/<vmid>,mp=/.pvelxc`), listens on its control socket, hands over stdio,
//! and learns the exit code from the init. One concern per file:
//! - [`backend`]: create (VMID, template, pct create/start, connect) and crash cleanup;
//! - [`instance`]: start, exec, kill, pause/resume, pids, stats, update, delete;
//! - [`spec`]: OCI spec → pct options; [`template`]: rootfs → cached template;
//! - [`linked`]: one template CT per image, containers as linked clones of it;
//! - [`ctdir`]: the per-container directory; [`ctl`]: the control socket;
//! - [`ctcg`]: the CT's cgroup (freeze, pids); [`exec`]: `pct exec` processes;
//! - [`runner`]: running pct/pvesh; [`cmd`], [`output`], [`vmid`]: argv, parsers, VMIDs.

pub mod backend;
mod check;
pub mod cmd;
pub mod create;
pub mod ctcg;
pub mod ctdir;
pub mod ctl;
pub mod exec;
pub mod instance;
pub mod limits;
pub mod linked;
pub mod lock;
pub mod output;
pub mod pod;
pub mod pve;
pub mod runner;
pub mod spec;
pub mod template;
pub mod vmid;

pub use backend::PctBackend;
