//! pve-shape's service manager: the double's stand-in for systemd running
//! `pve-container@<vmid>.service`.
//!
//! Protocol (unix stream socket `$ROOT/run/manager.sock`, mode 0600, root peers only): the
//! client sends one line of JSON (at most [`MAX_LINE`] bytes) and gets one line back.
//!
//! ```text
//! {"op":"ping"}                                     -> {"ok":true,"pid":<manager pid>}
//! {"op":"start","vmid":N,"timeout_ms":T}            -> {"ok":true,"pid":<lxc-start pid>}
//!                                                   |  {"ok":false,"error":"...","unit_ran":B}
//! ```
//!
//! `start` spawns `lxc-start -F` as the unit would and answers once LXC logged that init was
//! started (or lxc-start ended / T ms passed: then it is killed and the answer is an error
//! with `unit_ran: true`; `unit_ran: false` means lxc-start was not run at all).

pub mod server;
pub mod systemd;
pub mod unit;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::error::{die, Result};
use crate::paths::Root;

/// Longest request or reply line, newline included.
pub const MAX_LINE: usize = 4096;
/// Upper bound for a start request's timeout.
pub const MAX_START_TIMEOUT_MS: u64 = 600_000;

/// A validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Ping,
    Start { vmid: u32, timeout_ms: u64 },
}

impl Request {
    /// Parse and validate one request line.
    pub fn parse(line: &str) -> std::result::Result<Request, String> {
        let v: Value =
            serde_json::from_str(line.trim_end()).map_err(|e| format!("malformed request: {e}"))?;
        match v.get("op").and_then(Value::as_str) {
            Some("ping") => Ok(Request::Ping),
            Some("start") => {
                let vmid = match v.get("vmid") {
                    Some(Value::Number(n)) => n
                        .as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .filter(|n| crate::vmid::parse_vmid(&n.to_string()).is_ok()),
                    Some(Value::String(s)) => crate::vmid::parse_vmid(s).ok(),
                    _ => None,
                }
                .ok_or_else(|| {
                    "vmid: invalid format - value does not look like a valid VM ID".to_string()
                })?;
                let timeout_ms = v
                    .get("timeout_ms")
                    .and_then(Value::as_u64)
                    .unwrap_or(30_000)
                    .clamp(1, MAX_START_TIMEOUT_MS);
                Ok(Request::Start { vmid, timeout_ms })
            }
            Some(op) => Err(format!("unknown op '{}'", op.escape_debug())),
            None => Err("missing op".into()),
        }
    }

    pub fn to_line(&self) -> String {
        match self {
            Request::Ping => "{\"op\":\"ping\"}\n".into(),
            Request::Start { vmid, timeout_ms } => format!(
                "{}\n",
                json!({"op": "start", "vmid": vmid, "timeout_ms": timeout_ms})
            ),
        }
    }
}

/// Read one line of at most MAX_LINE bytes.
pub fn read_line(r: impl Read) -> std::io::Result<String> {
    let mut s = String::new();
    BufReader::new(r.take(MAX_LINE as u64)).read_line(&mut s)?;
    if !s.ends_with('\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            if s.len() >= MAX_LINE {
                "line too long"
            } else {
                "connection closed before a full line"
            },
        ));
    }
    Ok(s)
}

/// Send one request and return the reply object.
pub fn call(sock: &Path, req: &Request, timeout: Duration) -> std::result::Result<Value, String> {
    let mut s = UnixStream::connect(sock).map_err(|e| {
        format!(
            "service manager at '{}' not reachable - {e}",
            sock.display()
        )
    })?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    s.write_all(req.to_line().as_bytes())
        .map_err(|e| format!("service manager: write failed - {e}"))?;
    let line = read_line(&s).map_err(|e| format!("service manager: no reply - {e}"))?;
    serde_json::from_str(&line).map_err(|e| format!("service manager: bad reply - {e}"))
}

/// Is a service manager serving this root? (The socket exists only inside a pve-shape.)
pub fn is_managed(root: &Root) -> bool {
    root.manager_socket().exists()
}

/// Outcome of a managed start.
#[derive(Debug)]
pub enum StartError {
    /// The unit ran but init was not started (lxc-start failed: see the CT's stderr file).
    Failed,
    /// The manager could not be asked or refused the request.
    Manager(String),
}

/// `systemctl start pve-container@<vmid>`: ask the manager and wait for its answer, then wait
/// until LXC reports RUNNING (like the unmanaged path).
pub fn start(root: &Root, vmid: u32, timeout: Duration) -> std::result::Result<(), StartError> {
    let timeout_ms = (timeout.as_millis() as u64).clamp(1, MAX_START_TIMEOUT_MS);
    let req = Request::Start { vmid, timeout_ms };
    let reply = call(
        &root.manager_socket(),
        &req,
        Duration::from_millis(timeout_ms) + Duration::from_secs(15),
    )
    .map_err(StartError::Manager)?;
    if reply.get("ok").and_then(Value::as_bool) == Some(true) {
        crate::lxc::wait_running(root, vmid);
        return Ok(());
    }
    let err = reply
        .get("error")
        .and_then(Value::as_str)
        .unwrap_or("unknown error")
        .to_string();
    if reply.get("unit_ran").and_then(Value::as_bool) == Some(true) {
        Err(StartError::Failed)
    } else {
        Err(StartError::Manager(err))
    }
}

/// Ping the manager (pve-shape waits for this before running the command).
pub fn ping(sock: &Path) -> Result<i64> {
    let v = call(sock, &Request::Ping, Duration::from_secs(5)).map_err(die)?;
    v.get("pid")
        .and_then(Value::as_i64)
        .ok_or_else(|| die("service manager: bad ping reply"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        assert_eq!(Request::parse("{\"op\":\"ping\"}\n"), Ok(Request::Ping));
        assert_eq!(
            Request::parse("{\"op\":\"start\",\"vmid\":960001,\"timeout_ms\":5}"),
            Ok(Request::Start {
                vmid: 960001,
                timeout_ms: 5
            })
        );
        assert_eq!(
            Request::parse("{\"op\":\"start\",\"vmid\":\"101\"}"),
            Ok(Request::Start {
                vmid: 101,
                timeout_ms: 30_000
            })
        );
        for bad in [
            "{\"op\":\"start\",\"vmid\":99}",
            "{\"op\":\"start\",\"vmid\":\"../1\"}",
            "{\"op\":\"start\",\"vmid\":-100}",
            "{\"op\":\"start\",\"vmid\":1e3}",
            "{\"op\":\"start\",\"vmid\":10000000000}",
            "{\"op\":\"start\"}",
            "{\"op\":\"kill\",\"vmid\":100}",
            "not json",
        ] {
            assert!(Request::parse(bad).is_err(), "{bad}");
        }
        let r = Request::Start {
            vmid: 100,
            timeout_ms: 7,
        };
        assert_eq!(Request::parse(&r.to_line()), Ok(r));
    }

    #[test]
    fn bounded_lines() {
        assert_eq!(read_line(&b"abc\nrest"[..]).unwrap(), "abc\n");
        let long = vec![b'x'; MAX_LINE + 10];
        assert!(read_line(&long[..]).is_err());
        assert!(read_line(&b"no newline"[..]).is_err());
    }
}
