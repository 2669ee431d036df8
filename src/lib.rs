//! containerd-shim-pvelxc-v2: a containerd shim v2 that runs OCI containers through crun/runc,
//! as Proxmox VE CTs via `pct`, or in micro-VMs, choosing per container.

pub mod backend;
pub mod check;
pub mod config;
pub mod error;
pub mod options;
pub mod router;
pub mod service;
pub mod shim;
pub mod sys;
#[cfg(test)]
mod testutil;

pub const RUNTIME_NAME: &str = "io.containerd.pvelxc.v2";
pub const VERSION: &str = include_str!("../VERSION");
pub const REVISION: &str = match option_env!("PVELXC_REVISION") {
    Some(r) => r,
    None => "unknown",
};
