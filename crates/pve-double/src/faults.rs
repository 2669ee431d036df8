//! Fault injection for reliability tests.
//!
//! Directives come from `$ROOT/faults` (one per line) and from env `PVE_DOUBLE_FAULTS` (lines
//! separated by newlines or `;`). `#` starts a comment. `CMD` is a pct subcommand (`create`,
//! `start`, ...), `pvesh`, or `*`; `CMD:VMID` restricts to one VMID.
//!
//! ```text
//! delay CMD MS                 # sleep MS milliseconds before running CMD
//! fail CMD[:VMID] MESSAGE...   # CMD fails: MESSAGE on stderr, exit 255 (a TASK ERROR)
//! fail-once CMD[:VMID] MSG...  # like fail, but only the first matching invocation
//! lock-timeout VMID|* [MS]     # the config lock is "held": after MS (default 200) ms print
//!                              # "can't lock file '...' - got timeout", exit 255
//! create-exists VMID|*         # the first create of VMID fails with
//!                              # "unable to create CT VMID - CT VMID already exists on node 'pve'"
//! ```

use std::fs::OpenOptions;
use std::io::{Read, Seek, Write};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use crate::paths::Root;

#[derive(Debug, Clone, PartialEq)]
enum Fault {
    Delay {
        cmd: String,
        ms: u64,
    },
    Fail {
        target: Target,
        once: bool,
        msg: String,
        key: String,
    },
    LockTimeout {
        vmid: Option<u32>,
        ms: u64,
    },
    CreateExists {
        vmid: Option<u32>,
    },
}

#[derive(Debug, Clone, PartialEq)]
struct Target {
    cmd: String,
    vmid: Option<u32>,
}

impl Target {
    fn parse(s: &str) -> Option<Target> {
        match s.split_once(':') {
            Some((c, v)) => Some(Target {
                cmd: c.to_string(),
                vmid: Some(v.parse().ok()?),
            }),
            None => Some(Target {
                cmd: s.to_string(),
                vmid: None,
            }),
        }
    }
    fn matches(&self, cmd: &str, vmid: Option<u32>) -> bool {
        (self.cmd == "*" || self.cmd == cmd) && (self.vmid.is_none() || self.vmid == vmid)
    }
}

fn vmid_or_star(s: &str) -> Option<Option<u32>> {
    if s == "*" {
        Some(None)
    } else {
        s.parse().ok().map(Some)
    }
}

/// Active fault directives.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    list: Vec<Fault>,
    state: Option<std::path::PathBuf>,
}

impl Faults {
    /// Parse directives; malformed lines are ignored (with a note on stderr when loading).
    pub fn parse(text: &str) -> Faults {
        let mut list = Vec::new();
        for raw in text.split(['\n', ';']) {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut w = line.split_whitespace();
            let kind = w.next().unwrap_or("");
            let a = w.next();
            let rest: Vec<&str> = w.collect();
            let f = match (kind, a) {
                ("delay", Some(cmd)) => {
                    rest.first()
                        .and_then(|m| m.parse().ok())
                        .map(|ms| Fault::Delay {
                            cmd: cmd.to_string(),
                            ms,
                        })
                }
                ("fail", Some(t)) | ("fail-once", Some(t)) => {
                    Target::parse(t).map(|target| Fault::Fail {
                        target,
                        once: kind == "fail-once",
                        msg: if rest.is_empty() {
                            "injected failure".to_string()
                        } else {
                            rest.join(" ")
                        },
                        key: line.to_string(),
                    })
                }
                ("lock-timeout", Some(v)) => vmid_or_star(v).map(|vmid| Fault::LockTimeout {
                    vmid,
                    ms: rest.first().and_then(|m| m.parse().ok()).unwrap_or(200),
                }),
                ("create-exists", Some(v)) => {
                    vmid_or_star(v).map(|vmid| Fault::CreateExists { vmid })
                }
                _ => None,
            };
            match f {
                Some(f) => list.push(f),
                None => eprintln!("pve-double: ignoring malformed fault directive: {line}"),
            }
        }
        Faults { list, state: None }
    }

    /// Load from `$ROOT/faults` and `PVE_DOUBLE_FAULTS`.
    pub fn load(root: &Root) -> Faults {
        let mut text = std::fs::read_to_string(root.faults_file()).unwrap_or_default();
        if let Ok(e) = std::env::var("PVE_DOUBLE_FAULTS") {
            text.push('\n');
            text.push_str(&e);
        }
        let mut f = Faults::parse(&text);
        f.state = Some(root.faults_state());
        f
    }

    /// Total injected delay for `cmd`.
    pub fn delay(&self, cmd: &str) -> Option<Duration> {
        let ms: u64 = self
            .list
            .iter()
            .filter_map(|f| match f {
                Fault::Delay { cmd: c, ms } if c == cmd || c == "*" => Some(*ms),
                _ => None,
            })
            .sum();
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    /// An injected failure message for this invocation, if any.
    pub fn failure(&self, cmd: &str, vmid: Option<u32>) -> Option<String> {
        for f in &self.list {
            if let Fault::Fail {
                target,
                once,
                msg,
                key,
            } = f
            {
                if !target.matches(cmd, vmid) {
                    continue;
                }
                if *once && !self.consume(&format!("fail-once {key} {}", vmid.unwrap_or(0))) {
                    continue;
                }
                return Some(msg.clone());
            }
        }
        None
    }

    /// Simulated held lock: how long to wait before timing out.
    pub fn lock_timeout(&self, vmid: u32) -> Option<Duration> {
        self.list.iter().find_map(|f| match f {
            Fault::LockTimeout { vmid: v, ms } if v.is_none() || *v == Some(vmid) => {
                Some(Duration::from_millis(*ms))
            }
            _ => None,
        })
    }

    /// True (once per VMID) if a create of `vmid` should lose an "already exists" race.
    pub fn create_exists(&self, vmid: u32) -> bool {
        let hit = self.list.iter().any(
            |f| matches!(f, Fault::CreateExists { vmid: v } if v.is_none() || *v == Some(vmid)),
        );
        hit && self.consume(&format!("create-exists {vmid}"))
    }

    /// Mark a one-shot fault as used; true if it was not used before.
    fn consume(&self, key: &str) -> bool {
        let Some(path) = &self.state else {
            return true;
        };
        let file = match OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
        {
            Ok(f) => f,
            Err(_) => return true,
        };
        let mut lock = match Flock::lock(file, FlockArg::LockExclusive) {
            Ok(l) => l,
            Err(_) => return true,
        };
        let mut seen = String::new();
        let _ = lock.rewind();
        let _ = lock.read_to_string(&mut seen);
        if seen.lines().any(|l| l == key) {
            return false;
        }
        let _ = writeln!(lock, "{key}");
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_query() {
        let f = Faults::parse(
            "delay start 50\ndelay * 5 # all\nfail stop:101 boom now;lock-timeout 102 20\ncreate-exists *\nbogus",
        );
        assert_eq!(f.delay("start"), Some(Duration::from_millis(55)));
        assert_eq!(f.delay("list"), Some(Duration::from_millis(5)));
        assert_eq!(f.failure("stop", Some(101)).as_deref(), Some("boom now"));
        assert_eq!(f.failure("stop", Some(100)), None);
        assert_eq!(f.lock_timeout(102), Some(Duration::from_millis(20)));
        assert_eq!(f.lock_timeout(103), None);
        assert!(f.create_exists(100));
    }

    #[test]
    fn once_uses_state_file() {
        let p = std::env::temp_dir().join(format!("pve-double-faults-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let mut f = Faults::parse("create-exists 100\nfail-once start oops");
        f.state = Some(p.clone());
        assert!(f.create_exists(100));
        assert!(!f.create_exists(100));
        assert!(!f.create_exists(101));
        assert_eq!(f.failure("start", Some(5)).as_deref(), Some("oops"));
        assert_eq!(f.failure("start", Some(5)), None);
        assert_eq!(f.failure("start", Some(6)).as_deref(), Some("oops"));
        let _ = std::fs::remove_file(&p);
    }
}
