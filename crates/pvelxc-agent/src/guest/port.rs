//! Finds the named virtio-serial port and opens it (kept open for the VM's life).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::time::{Duration, Instant};

use pvelxc_agent::modules::CONTROL_PORT_NAME;

fn find(name: &str) -> Option<String> {
    let entries = fs::read_dir("/sys/class/virtio-ports").ok()?;
    for e in entries.flatten() {
        let n = fs::read_to_string(e.path().join("name")).unwrap_or_default();
        if n.trim_end() == name {
            return Some(format!("/dev/{}", e.file_name().to_string_lossy()));
        }
    }
    None
}

/// Waits up to `timeout` for the control port's device node and opens it read-write.
pub fn open_control(timeout: Duration) -> io::Result<File> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(dev) = find(CONTROL_PORT_NAME) {
            match OpenOptions::new().read(true).write(true).open(&dev) {
                Ok(f) => return Ok(f),
                Err(e) if Instant::now() >= deadline => {
                    return Err(io::Error::new(e.kind(), format!("{dev}: {e}")))
                }
                Err(_) => {}
            }
        } else if Instant::now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no virtio-serial port named {CONTROL_PORT_NAME}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
