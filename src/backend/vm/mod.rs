//! The micro-VM backend: each container runs in its own QEMU `microvm` whose `/init` is the
//! pvelxc guest agent (`crates/pvelxc-agent`); the container's rootfs is shared in over 9p (or
//! virtio-fs).
//!
//! Create boots the VM and waits for the agent's Ready, but the agent has no separate
//! create/start: its `Run` starts the process at once. So `create` returns with the VM up and
//! *no* user code running, reporting QEMU's host pid as the task pid, and `start` sends `Run`.
//! `cleanup` (a fresh shim after a crash) finds QEMU by the pid and state dir recorded in the
//! bundle (`data.qemu_pid`, `data.state_dir`), checking the pid's command line first.
//!
//! Host pieces (defaults of the `[vm]` config table):
//! * QEMU ≥ 7 with `microvm` and qboot (`crates/pvelxc-agent/setup-host.sh` installs 10.0 from
//!   bookworm-backports);
//! * `/var/cache/pvelxc/vm/vmlinux` + `modules/` (`crates/pvelxc-agent/fetch-kernel.sh`);
//! * the initramfs `vm.initramfs`, or else a static `pvelxc-agent` (`vm.agent`, default next to
//!   the shim binary) from which the shim builds it on first use (uncompressed cpio, file lock).
//!
//! Guest OOM kills are read from the serial console log ([`oom`]); `update` is refused (no
//! hotplug); pause/resume stop/continue QEMU.
//!
//! One concern per file: `backend` (check, create, cleanup), `instance` (the container's
//! operations), `shared` (the init's state and exit, QEMU's end); the rest are helpers.

mod accel;
mod assets;
mod backend;
mod cgroup;
mod errors;
mod instance;
mod io;
mod metrics;
mod oom;
mod runas;
mod share;
mod shared;
mod spec;
mod state;

pub use backend::VmBackend;
pub use shared::QemuGone;
