//! Host ↔ guest agent for the pvelxc micro-VM backend.
//!
//! * [`proto`]: the framed wire protocol (pure encode/decode + blocking frame I/O).
//! * [`host`]: tokio client that launches QEMU, binds the virtio-serial socket and drives the guest agent.
//! * [`initramfs`]: packs the static agent (as `/init`) and the kernel modules into a newc cpio archive.
//! * [`modules`]: the kernel modules the guest needs, in insmod order.
//!
//! The `pvelxc-agent` binary is the guest side (PID 1 in the VM).

pub mod bootparams;
pub mod cpio;
pub mod host;
pub mod initramfs;
pub mod modules;
pub mod proto;
