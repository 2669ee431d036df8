//! `pvelxc-init`: the tiny init that runs as PID 1 inside a Proxmox CT for
//! containerd-shim-pvelxc-v2, and the wire protocol the shim speaks with it.
//!
//! * [`proto`]: message types, length-prefixed JSON framing (pure encode /
//!   decode over byte buffers) and blocking `SCM_RIGHTS` send/receive helpers.
//! * [`process`]: the subset of the OCI runtime-spec `Process` object the init
//!   applies and the helpers that apply it, from the shared `pvelxc-guest` crate
//!   (which the micro-VM agent uses too), plus the init's `process.json` parser.
//! * [`caps`]: re-export of `pvelxc_guest::caps` (capability names, capget/capset).
//! * [`pod`]: the spec of a pod's containers the shim hands the binary's pod modes
//!   (`unpack`, `container`, `exec-in`, `remove`; implemented in the binary).
//!
//! No tokio here: async host code drives the non-blocking pieces
//! ([`proto::recv_into`], [`proto::send_frame`]) from its own reactor.
//! See `PROTOCOL.md` for the process model and the file modes the shim must use.

/// OCI capability names ↔ numbers and the capget/capset/prctl calls (shared crate).
pub use pvelxc_guest::caps;
pub mod ct;
pub mod mountattr;
pub mod pod;
pub mod process;
pub mod proto;
