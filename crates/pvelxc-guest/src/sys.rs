//! Async-signal-safe helpers for the code that runs after `fork`: errno, an error value
//! that needs no allocation, and messages to fd 2 built in a stack buffer.

use std::fmt;

/// The calling thread's errno.
pub fn errno() -> i32 {
    // SAFETY: __errno_location always returns the thread's valid errno pointer.
    unsafe { *libc::__errno_location() }
}

/// A failed step after fork: what failed (`"setuid"`, `"chdir"`), an optional argument
/// it was about (the cwd, a capability name) and the errno. No allocation: `arg`
/// borrows from the [`crate::Prepared`] or a static table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure<'a> {
    pub what: &'static str,
    pub arg: &'a [u8],
    pub errno: i32,
}

impl<'a> Failure<'a> {
    /// `what` failed with the current errno.
    pub fn last(what: &'static str) -> Self {
        Failure {
            what,
            arg: b"",
            errno: errno(),
        }
    }

    /// `what` about `arg` failed with the current errno.
    pub fn last_on(what: &'static str, arg: &'a [u8]) -> Self {
        Failure {
            what,
            arg,
            errno: errno(),
        }
    }

    /// Writes `<tag>: <what>[ <arg>]: <error text> (os error N)\n` to fd 2 in one write,
    /// without allocating.
    pub fn report(&self, tag: &str) {
        let mut m = StackMsg::new();
        m.push(tag.as_bytes())
            .push(b": ")
            .push(self.what.as_bytes());
        if !self.arg.is_empty() {
            m.push(b" ").push(self.arg);
        }
        m.push(b": ").errno(self.errno).push(b"\n").write_to(2);
    }
}

impl fmt::Display for Failure<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.what)?;
        if !self.arg.is_empty() {
            write!(f, " {}", String::from_utf8_lossy(self.arg))?;
        }
        write!(f, ": {}", std::io::Error::from_raw_os_error(self.errno))
    }
}

/// glibc's text for the errnos an exec or the id/cap/rlimit calls can give.
fn errno_text(e: i32) -> &'static str {
    match e {
        libc::EPERM => "Operation not permitted",
        libc::ENOENT => "No such file or directory",
        libc::ESRCH => "No such process",
        libc::EINTR => "Interrupted system call",
        libc::EIO => "Input/output error",
        libc::E2BIG => "Argument list too long",
        libc::ENOEXEC => "Exec format error",
        libc::EBADF => "Bad file descriptor",
        libc::EAGAIN => "Resource temporarily unavailable",
        libc::ENOMEM => "Cannot allocate memory",
        libc::EACCES => "Permission denied",
        libc::EFAULT => "Bad address",
        libc::EBUSY => "Device or resource busy",
        libc::ENOTDIR => "Not a directory",
        libc::EISDIR => "Is a directory",
        libc::EINVAL => "Invalid argument",
        libc::ENFILE => "Too many open files in system",
        libc::EMFILE => "Too many open files",
        libc::ENOTTY => "Inappropriate ioctl for device",
        libc::ETXTBSY => "Text file busy",
        libc::ENOSPC => "No space left on device",
        libc::EROFS => "Read-only file system",
        libc::ENAMETOOLONG => "File name too long",
        libc::ELOOP => "Too many levels of symbolic links",
        libc::ELIBBAD => "Accessing a corrupted shared library",
        _ => "Unknown error",
    }
}

/// A message of at most 1 KiB assembled on the stack (longer input is cut).
pub struct StackMsg {
    buf: [u8; 1024],
    len: usize,
}

impl Default for StackMsg {
    fn default() -> Self {
        Self::new()
    }
}

impl StackMsg {
    pub fn new() -> Self {
        StackMsg {
            buf: [0; 1024],
            len: 0,
        }
    }

    pub fn push(&mut self, b: &[u8]) -> &mut Self {
        let n = b.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
        self
    }

    /// A decimal number.
    pub fn num(&mut self, v: i64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut u = v.unsigned_abs();
        loop {
            i -= 1;
            digits[i] = b'0' + (u % 10) as u8;
            u /= 10;
            if u == 0 {
                break;
            }
        }
        if v < 0 {
            self.push(b"-");
        }
        self.push(&digits[i..])
    }

    /// `<error text> (os error N)`, as `std::io::Error` displays a raw errno.
    pub fn errno(&mut self, e: i32) -> &mut Self {
        self.push(errno_text(e).as_bytes())
            .push(b" (os error ")
            .num(i64::from(e))
            .push(b")")
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// One `write(2)` of the message (errors ignored: there is nowhere to report them).
    pub fn write_to(&self, fd: libc::c_int) {
        // SAFETY: writes a live stack buffer.
        unsafe { libc::write(fd, self.buf.as_ptr().cast(), self.len) };
    }
}

/// Write a message to fd 2 in one `write(2)` (async-signal-safe).
pub fn write_stderr(msg: &str) {
    let b = msg.as_bytes();
    // SAFETY: writing a live buffer to fd 2.
    unsafe { libc::write(2, b.as_ptr().cast(), b.len()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_messages() {
        let mut m = StackMsg::new();
        m.num(0).push(b" ").num(-42).push(b" ").num(i64::MIN);
        assert_eq!(m.as_bytes(), b"0 -42 -9223372036854775808");
        for e in [libc::ENOENT, libc::EACCES, libc::EPERM, libc::ENOEXEC, 9999] {
            let mut m = StackMsg::new();
            m.errno(e);
            let std = std::io::Error::from_raw_os_error(e).to_string();
            if e != 9999 {
                assert_eq!(String::from_utf8_lossy(m.as_bytes()), std);
            }
        }
        let mut m = StackMsg::new();
        m.push(&[b'x'; 2000]).push(b"more");
        assert_eq!(m.as_bytes().len(), 1024);
    }

    #[test]
    fn failure_display() {
        let f = Failure {
            what: "chdir",
            arg: b"/nope",
            errno: libc::ENOENT,
        };
        assert_eq!(
            f.to_string(),
            "chdir /nope: No such file or directory (os error 2)"
        );
        let f = Failure {
            what: "setuid",
            arg: b"",
            errno: libc::EPERM,
        };
        assert_eq!(
            f.to_string(),
            "setuid: Operation not permitted (os error 1)"
        );
    }
}
