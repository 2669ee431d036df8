//! The exit file the init writes into the per-container directory (CT-writable: its
//! content is as hostile as the wire).

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use super::{check_exit, clean_text, ProtoError};

/// Largest exit file accepted, in bytes.
pub const MAX_EXIT_FILE: usize = 64 * 1024;

/// The content of the exit file (`<dir>/exit`), written atomically (tmp + rename).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// In-CT pid of the process (0 if it never started).
    #[serde(default)]
    pub pid: i32,
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub time_ns: u64,
    /// Set when the init failed before/while starting the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ExitRecord {
    pub fn to_json(&self) -> Result<Vec<u8>, ProtoError> {
        let mut v = serde_json::to_vec(self).map_err(|e| ProtoError::Json(e.to_string()))?;
        v.push(b'\n');
        Ok(v)
    }

    /// Parse and validate ([`ExitRecord::validate`]) an exit file's content; more than
    /// [`MAX_EXIT_FILE`] bytes is an error.
    pub fn from_json(b: &[u8]) -> Result<Self, ProtoError> {
        if b.len() > MAX_EXIT_FILE {
            return Err(ProtoError::TooLarge(b.len()));
        }
        let r: ExitRecord =
            serde_json::from_slice(b).map_err(|e| ProtoError::Json(e.to_string()))?;
        r.validate()
    }

    /// `pid` ≥ 0, `exit_code` 0..=255, `signal` absent or 1..=64 with `exit_code` =
    /// 128 + signal; `error` cleaned with [`clean_text`].
    pub fn validate(mut self) -> Result<Self, ProtoError> {
        if self.pid < 0 {
            return Err(ProtoError::Invalid(format!("exit pid {}", self.pid)));
        }
        check_exit(self.exit_code, self.signal)?;
        self.error = self.error.as_deref().map(clean_text);
        Ok(self)
    }

    /// Read the exit file at `path` the safe way for a file in a CT-writable directory:
    /// no symlink followed (`O_NOFOLLOW`), no FIFO/device opened blocking (`O_NONBLOCK`,
    /// then only a regular file is read), at most [`MAX_EXIT_FILE`] bytes.
    /// `Ok(None)` when there is no such file.
    pub fn read_file(path: &Path) -> io::Result<Option<ExitRecord>> {
        let f = match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let ft = f.metadata()?.file_type();
        if !ft.is_file() || ft.is_fifo() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not a regular file", path.display()),
            ));
        }
        let mut b = Vec::new();
        let limit = MAX_EXIT_FILE as u64 + 1;
        File::take(f, limit).read_to_end(&mut b)?;
        Ok(Some(ExitRecord::from_json(&b)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(exit_code: i32, signal: Option<i32>) -> Result<ExitRecord, ProtoError> {
        ExitRecord {
            pid: 1,
            exit_code,
            signal,
            time_ns: 0,
            error: None,
        }
        .validate()
    }

    #[test]
    fn ranges() {
        assert!(rec(0, None).is_ok());
        assert!(rec(255, None).is_ok());
        assert!(rec(137, Some(9)).is_ok());
        assert!(rec(192, Some(64)).is_ok());
        for (c, s) in [
            (256, None),
            (-1, None),
            (128, Some(0)),
            (193, Some(65)),
            (1, Some(9)),
        ] {
            assert!(
                matches!(rec(c, s), Err(ProtoError::Invalid(_))),
                "{c} {s:?}"
            );
        }
        let big = format!(
            "{{\"exit_code\":1,\"signal\":null,\"time_ns\":1,\"error\":\"{}\"}}",
            "x".repeat(MAX_EXIT_FILE)
        );
        assert!(matches!(
            ExitRecord::from_json(big.as_bytes()),
            Err(ProtoError::TooLarge(_))
        ));
        let r = ExitRecord::from_json(
            br#"{"exit_code":255,"signal":null,"time_ns":1,"error":"bad\n\u001b[2Jthing"}"#,
        )
        .unwrap();
        assert_eq!(r.error.as_deref(), Some("bad  [2Jthing"));
    }

    #[test]
    fn read_file_refuses_links_and_fifos() {
        let d = std::env::temp_dir().join(format!("fuzz-exitfile-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join("exit");
        assert!(ExitRecord::read_file(&p).unwrap().is_none());
        std::fs::write(&p, b"{\"exit_code\":3,\"signal\":null,\"time_ns\":1}\n").unwrap();
        assert_eq!(ExitRecord::read_file(&p).unwrap().unwrap().exit_code, 3);
        let link = d.join("link");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(ExitRecord::read_file(&link).is_err());
        let fifo = d.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Must not block waiting for a writer.
        assert!(ExitRecord::read_file(&fifo).is_err());
        std::fs::write(&p, vec![b' '; MAX_EXIT_FILE + 10]).unwrap();
        assert!(ExitRecord::read_file(&p).is_err());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
