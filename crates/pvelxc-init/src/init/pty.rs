//! The console pty of a terminal process: the master goes to the shim, the slave becomes the
//! process's controlling terminal.

use pvelxc_init::process;
use std::os::fd::{FromRawFd, OwnedFd};

pub(super) struct Pty {
    pub(super) master: OwnedFd,
    pub(super) slave: OwnedFd,
}

pub(super) fn open_pty(size: Option<process::ConsoleSize>) -> Result<Pty, String> {
    let err = |w: &str| format!("{w}: {}", std::io::Error::last_os_error());
    // SAFETY: plain libc pty calls; fds are wrapped immediately.
    unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if m < 0 {
            return Err(err("posix_openpt"));
        }
        let master = OwnedFd::from_raw_fd(m);
        if libc::grantpt(m) != 0 {
            return Err(err("grantpt"));
        }
        if libc::unlockpt(m) != 0 {
            return Err(err("unlockpt"));
        }
        let mut name = [0 as libc::c_char; 128];
        if libc::ptsname_r(m, name.as_mut_ptr(), name.len()) != 0 {
            return Err(err("ptsname_r"));
        }
        let s = libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if s < 0 {
            return Err(err("open pty slave"));
        }
        let slave = OwnedFd::from_raw_fd(s);
        if let Some(sz) = size {
            let ws = libc::winsize {
                ws_row: sz.height.min(u16::MAX as u32) as u16,
                ws_col: sz.width.min(u16::MAX as u32) as u16,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            if libc::ioctl(s, libc::TIOCSWINSZ, &ws) != 0 {
                return Err(err("TIOCSWINSZ"));
            }
        }
        Ok(Pty { master, slave })
    }
}
