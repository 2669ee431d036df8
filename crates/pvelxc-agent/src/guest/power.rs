//! Orderly power-off of the VM.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::log;

/// Kills every process, syncs, detaches the shares and powers off. Never returns.
pub fn off() -> ! {
    // -1: every process except PID 1 itself.
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    std::thread::sleep(Duration::from_millis(50));
    nix::unistd::sync();
    for m in ["/rootfs/dev", "/rootfs/sys", "/rootfs/proc", "/rootfs"] {
        let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
    }
    nix::unistd::sync();
    log!("powering off");
    let err = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    log!("reboot(RB_POWER_OFF) failed: {err:?}");
    // PID 1 exiting panics the kernel; with panic=-1 and QEMU's -no-reboot the VM stops.
    std::process::exit(1);
}
