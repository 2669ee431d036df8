//! A minimal host-side "shim" for the integration tests: listens on ctl.sock,
//! speaks the protocol with bounded waits.
#![allow(dead_code)]

/// The workspace's one skip helper (loud, counted, a failure under CI): see that file.
#[path = "../../../../tests/common/skip.rs"]
pub mod skip;

use pvelxc_init::proto::{self, FrameReader, Msg};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const T: Duration = Duration::from_secs(20);

pub fn poll_in(fd: RawFd, deadline: Instant) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let r = unsafe { libc::poll(&mut p, 1, left.as_millis().max(1) as i32) };
        if r > 0 {
            return true;
        }
    }
}

pub struct Shim {
    pub dir: PathBuf,
    pub listener: UnixListener,
}

impl Shim {
    /// Bind `dir/ctl.sock`, owned by `owner` (uid, gid) with `mode`.
    pub fn listen(dir: &Path, owner: Option<(u32, u32)>, mode: u32) -> Shim {
        let p = dir.join("ctl.sock");
        let _ = std::fs::remove_file(&p);
        let listener = UnixListener::bind(&p).unwrap();
        if let Some((u, g)) = owner {
            std::os::unix::fs::chown(&p, Some(u), Some(g)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        Shim {
            dir: dir.to_path_buf(),
            listener,
        }
    }

    pub fn accept(&self, timeout: Duration) -> Conn {
        assert!(
            poll_in(self.listener.as_raw_fd(), Instant::now() + timeout),
            "init did not connect to ctl.sock within {timeout:?}"
        );
        let (s, _) = self.listener.accept().unwrap();
        Conn {
            sock: s,
            reader: FrameReader::new(),
        }
    }
}

pub struct Conn {
    pub sock: UnixStream,
    pub reader: FrameReader,
}

impl Conn {
    pub fn recv(&mut self, timeout: Duration) -> (Msg, Vec<OwnedFd>) {
        let deadline = Instant::now() + timeout;
        loop {
            // Fds arrive with their frame's first byte: MissingFds is a real error.
            if let Some(m) = self.reader.next_msg().unwrap_or_else(|e| panic!("{e}")) {
                return m;
            }
            assert!(
                poll_in(self.sock.as_raw_fd(), deadline),
                "no message within {timeout:?}"
            );
            let n = proto::recv_into(self.sock.as_fd(), &mut self.reader).unwrap();
            assert!(n > 0, "init closed ctl.sock");
        }
    }

    pub fn send(&self, m: &Msg, fds: &[BorrowedFd<'_>]) {
        proto::send_msg(self.sock.as_fd(), m, fds).unwrap();
    }
}

/// Read until EOF (or EIO, as a pty master gives once the slave is gone) or timeout.
pub fn read_all<R: Read + AsRawFd>(f: &mut R, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while poll_in(f.as_raw_fd(), deadline) {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Read until `needle` appears (for a pty, whose EOF may come late) or timeout.
pub fn read_until<R: Read + AsRawFd>(f: &mut R, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&out).contains(needle) && poll_in(f.as_raw_fd(), deadline) {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn wait_file(p: &Path, timeout: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(b) = std::fs::read(p) {
            return Some(b);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

pub fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "pvelxc-init-{tag}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    ));
    // D's CT-writable part, where the init writes its exit record.
    std::fs::create_dir_all(d.join("rw")).unwrap();
    d
}

pub fn process_json(args: &[&str], terminal: bool) -> String {
    serde_json::json!({
        "terminal": terminal,
        "consoleSize": {"height": 30, "width": 100},
        "user": {"uid": 0, "gid": 0},
        "args": args,
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "FOO=bar baz"],
        "cwd": "/",
        "noNewPrivileges": true
    })
    .to_string()
}
