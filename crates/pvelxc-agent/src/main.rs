//! `pvelxc-agent`: the guest side, run as `/init` (PID 1) of the micro-VM's initramfs.

mod guest;

fn main() {
    guest::main();
}
