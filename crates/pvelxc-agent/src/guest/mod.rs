//! Guest agent: boot the VM's userspace, then serve the protocol on the control port.

mod port;
mod power;
mod procs;
mod server;
mod setup;
mod spawn;
mod sysinfo;

use std::time::Duration;

/// Log to the serial console (PID 1's stderr is /dev/console).
macro_rules! log {
    ($($t:tt)*) => { eprintln!("pvelxc-agent: {}", format_args!($($t)*)) };
}
pub(crate) use log;

pub fn main() {
    if std::process::id() != 1 {
        log!("must run as PID 1 (the VM's /init)");
        std::process::exit(2);
    }
    let params = match setup::boot() {
        Ok(p) => p,
        Err(e) => {
            log!("boot failed: {e}");
            power::off();
        }
    };
    let port = match port::open_control(Duration::from_secs(20)) {
        Ok(p) => p,
        Err(e) => {
            log!("control port: {e}");
            power::off();
        }
    };
    log!("ready (hostname {:?})", params.hostname);
    server::serve(port);
    power::off();
}
