//! Parsers for what `pct` and `pvesh` print, and a classifier that turns a failed
//! invocation (exit status + stdout + stderr) into a typed [`PctError`].
//!
//! Formats and messages follow docs/pct.md. Exit codes of `die` are errno-dependent
//! (usually 255): classification matches on "non-zero + message", never on the number.
//!
//! The parsers are here; the classifier is in `classify` (re-exported).

mod classify;

use std::collections::BTreeMap;

use super::vmid::Vmid;

pub use classify::{classify, warnings, Outcome, PctError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unexpected pct output line {line:?}: {why}")]
    Line { line: String, why: &'static str },
    #[error("missing field {0:?} in pct output")]
    Missing(&'static str),
}

/// `status:` of a CT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtState {
    Running,
    Stopped,
    Other(String),
}

impl CtState {
    fn parse(s: &str) -> CtState {
        match s {
            "running" => CtState::Running,
            "stopped" => CtState::Stopped,
            o => CtState::Other(o.to_string()),
        }
    }
}

/// One row of `pct list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    pub vmid: Vmid,
    pub status: CtState,
    pub lock: Option<String>,
    pub name: Option<String>,
}

/// Parse `pct list`: nothing at all when there are no CTs, else the header
/// `VMID       Status     Lock         Name` (printf "%-10s %-10s %-12s %-20s") and one
/// row per CT. The Lock column is blank when unlocked; values wider than their column
/// shift the rest of the line, so columns are located from the header and a token is
/// assigned to Lock or Name by where it starts.
pub fn parse_list(stdout: &str) -> Result<Vec<ListEntry>, ParseError> {
    let mut lock_col = 22usize;
    let mut name_col = 35usize;
    let mut out = Vec::new();
    for line in stdout.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if line.trim_start().starts_with("VMID") {
            if let (Some(l), Some(n)) = (line.find("Lock"), line.find("Name")) {
                lock_col = l;
                name_col = n;
            }
            continue;
        }
        // tokens with their byte offsets
        let mut toks: Vec<(usize, &str)> = Vec::new();
        let mut start = None;
        for (i, c) in line.char_indices() {
            match (c.is_whitespace(), start) {
                (false, None) => start = Some(i),
                (true, Some(s)) => {
                    toks.push((s, &line[s..i]));
                    start = None;
                }
                _ => {}
            }
        }
        if let Some(s) = start {
            toks.push((s, &line[s..]));
        }
        let bad = |why| ParseError::Line {
            line: line.to_string(),
            why,
        };
        if toks.len() < 2 {
            return Err(bad("expected at least VMID and Status"));
        }
        let vmid: Vmid = toks[0].1.parse().map_err(|_| bad("bad VMID"))?;
        let status = CtState::parse(toks[1].1);
        let (lock, name) = match &toks[2..] {
            [] => (None, None),
            [(off, t)] => {
                // The Lock column starts at lock_col; a token starting before the Name
                // column is the lock (the name is then missing).
                if *off < name_col && *off >= lock_col.saturating_sub(1) {
                    (Some(t.to_string()), None)
                } else {
                    (None, Some(t.to_string()))
                }
            }
            [(_, l), rest @ ..] => {
                let name: Vec<&str> = rest.iter().map(|(_, t)| *t).collect();
                (Some(l.to_string()), Some(name.join(" ")))
            }
        };
        out.push(ListEntry {
            vmid,
            status,
            lock,
            name,
        });
    }
    Ok(out)
}

/// `key: value` lines (first `": "` or trailing `":"` splits).
fn kv(line: &str) -> Option<(&str, &str)> {
    if let Some(i) = line.find(": ") {
        return Some((&line[..i], &line[i + 2..]));
    }
    line.strip_suffix(':').map(|k| (k, ""))
}

/// `pct status VMID [--verbose]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusInfo {
    pub status: CtState,
    /// Host pid of the CT's init (verbose, running only).
    pub pid: Option<u32>,
    /// Every key: value pair (verbose gives cpus, disk, lock, maxmem, mem, name, ...).
    pub fields: BTreeMap<String, String>,
}

impl StatusInfo {
    pub fn is_running(&self) -> bool {
        self.status == CtState::Running
    }
    pub fn lock(&self) -> Option<&str> {
        self.fields.get("lock").map(String::as_str)
    }
}

pub fn parse_status(stdout: &str) -> Result<StatusInfo, ParseError> {
    let mut fields = BTreeMap::new();
    for line in stdout.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let (k, v) = kv(line).ok_or_else(|| ParseError::Line {
            line: line.to_string(),
            why: "expected `key: value`",
        })?;
        fields.insert(k.trim().to_string(), v.trim().to_string());
    }
    let status = CtState::parse(fields.get("status").ok_or(ParseError::Missing("status"))?);
    let pid = match fields.get("pid") {
        Some(p) => Some(p.parse().map_err(|_| ParseError::Line {
            line: format!("pid: {p}"),
            why: "pid is not a number",
        })?),
        None => None,
    };
    Ok(StatusInfo {
        status,
        pid,
        fields,
    })
}

/// `pct config VMID`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CtConfig {
    /// From leading `#` comment lines (config-file style) or a `description:` key.
    pub description: Option<String>,
    /// `key: value` options, in the sorted order pct prints them.
    pub options: BTreeMap<String, String>,
    /// Raw `lxc.*` lines, in order (keys repeat, e.g. lxc.mount.entry).
    pub lxc: Vec<(String, String)>,
    /// `[pve:pending]` section, if any.
    pub pending: BTreeMap<String, String>,
    /// Names of `[snapshot]` sections (their content is not parsed).
    pub snapshots: Vec<String>,
}

impl CtConfig {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.options.get(key).map(String::as_str)
    }
    /// `env` is stored NUL-separated.
    pub fn env(&self) -> Vec<&str> {
        self.get("env")
            .map(|e| e.split('\0').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    }
    /// `mpN`/`netN`-style indexed keys with a given prefix, sorted by index.
    pub fn indexed(&self, prefix: &str) -> Vec<(u32, &str)> {
        let mut v: Vec<(u32, &str)> = self
            .options
            .iter()
            .filter_map(|(k, val)| {
                let n = k.strip_prefix(prefix)?.parse().ok()?;
                Some((n, val.as_str()))
            })
            .collect();
        v.sort();
        v
    }
}

pub fn parse_config(stdout: &str) -> Result<CtConfig, ParseError> {
    let mut cfg = CtConfig::default();
    let mut desc: Vec<String> = Vec::new();
    enum Sect {
        Main,
        Pending,
        Snapshot,
    }
    let mut sect = Sect::Main;
    for line in stdout.lines() {
        if let Some(c) = line.strip_prefix('#') {
            if matches!(sect, Sect::Main) {
                desc.push(c.to_string());
            }
            continue;
        }
        let t = line.trim_end();
        if t.is_empty() {
            continue;
        }
        if let Some(name) = t.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            if name == "pve:pending" {
                sect = Sect::Pending;
            } else {
                cfg.snapshots.push(name.to_string());
                sect = Sect::Snapshot;
            }
            continue;
        }
        let (k, v) = if t.starts_with("lxc.") {
            // Raw LXC keys: `lxc.key: value` as pct prints them (`=` as in LXC files).
            match (t.find(": "), t.find('=')) {
                (Some(i), Some(j)) if j < i => (t[..j].trim(), t[j + 1..].trim()),
                (Some(i), _) => (t[..i].trim(), t[i + 2..].trim()),
                (None, Some(j)) => (t[..j].trim(), t[j + 1..].trim()),
                (None, None) => kv(t).ok_or_else(|| ParseError::Line {
                    line: t.to_string(),
                    why: "expected `lxc.key: value`",
                })?,
            }
        } else {
            let (k, v) = kv(t).ok_or_else(|| ParseError::Line {
                line: t.to_string(),
                why: "expected `key: value`",
            })?;
            (k.trim(), v)
        };
        match sect {
            Sect::Main if k.starts_with("lxc.") => cfg.lxc.push((k.to_string(), v.to_string())),
            Sect::Main if k == "description" => desc.push(v.to_string()),
            Sect::Main => {
                cfg.options.insert(k.to_string(), v.to_string());
            }
            Sect::Pending => {
                cfg.pending.insert(k.to_string(), v.to_string());
            }
            Sect::Snapshot => {}
        }
    }
    if !desc.is_empty() {
        cfg.description = Some(desc.join("\n"));
    }
    Ok(cfg)
}

/// `pvesh get /cluster/nextid`: an integer and a newline (possibly JSON-quoted).
pub fn parse_nextid(stdout: &str) -> Result<Vmid, ParseError> {
    let t = stdout.trim().trim_matches('"');
    t.parse().map_err(|_| ParseError::Line {
        line: stdout.trim().to_string(),
        why: "not a VMID",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u32) -> Vmid {
        Vmid::new(n).unwrap()
    }

    /// printf("%-10s %-10s %-12s %-20s\n"), as pct list prints.
    fn row(a: &str, b: &str, c: &str, d: &str) -> String {
        format!("{a:<10} {b:<10} {c:<12} {d:<20}\n")
    }

    #[test]
    fn list_empty_and_plain() {
        assert!(parse_list("").unwrap().is_empty());
        let s = row("VMID", "Status", "Lock", "Name")
            + &row("101", "running", "", "web")
            + &row("102", "stopped", "", "CT102")
            + &row("1000", "stopped", "", "k8s-pod-abc");
        assert!(s.starts_with("VMID       Status     Lock         Name"));
        let l = parse_list(&s).unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(
            l[0],
            ListEntry {
                vmid: v(101),
                status: CtState::Running,
                lock: None,
                name: Some("web".into())
            }
        );
        assert_eq!(l[1].name.as_deref(), Some("CT102"));
        assert_eq!(l[2].vmid, v(1000));
    }

    #[test]
    fn list_with_lock_column() {
        let s = row("VMID", "Status", "Lock", "Name")
            + &row("101", "stopped", "create", "new-ct")
            + &row("102", "running", "backup", "")
            + &row("103", "stopped", "snapshot-delete", "long-lock")
            + &row("104", "stopped", "", "");
        let l = parse_list(&s).unwrap();
        assert_eq!(l[0].lock.as_deref(), Some("create"));
        assert_eq!(l[0].name.as_deref(), Some("new-ct"));
        // lock present, name missing
        assert_eq!(l[1].lock.as_deref(), Some("backup"));
        assert_eq!(l[1].name, None);
        // a lock wider than its column shifts the name
        assert_eq!(l[2].lock.as_deref(), Some("snapshot-delete"));
        assert_eq!(l[2].name.as_deref(), Some("long-lock"));
        assert_eq!((l[3].lock.as_ref(), l[3].name.as_ref()), (None, None));
        // nexcage's bug: a name that looks like a lock value, in the Name column
        let s = row("VMID", "Status", "Lock", "Name") + &row("105", "stopped", "", "backup");
        let l = parse_list(&s).unwrap();
        assert_eq!(
            (l[0].lock.as_deref(), l[0].name.as_deref()),
            (None, Some("backup"))
        );
        assert!(parse_list("garbage\n").is_err());
    }

    #[test]
    fn status_plain_and_verbose() {
        let s = parse_status("status: stopped\n").unwrap();
        assert_eq!(s.status, CtState::Stopped);
        assert_eq!(s.pid, None);
        let verbose =
            "cpus: 1\ndisk: 0\ndiskread: 0\ndiskwrite: 0\nlock: mounted\nmaxdisk: 4294967296\n\
                       maxmem: 536870912\nmaxswap: 536870912\nmem: 1234\nname: web\nnetin: 0\n\
                       netout: 0\npid: 4242\nstatus: running\ntype: lxc\nuptime: 12\nvmid: 101\n";
        let s = parse_status(verbose).unwrap();
        assert!(s.is_running());
        assert_eq!(s.pid, Some(4242));
        assert_eq!(s.lock(), Some("mounted"));
        assert_eq!(s.fields["name"], "web");
        assert!(parse_status("cpus: 1\n").is_err());
        assert!(parse_status("status: running\npid: x\n").is_err());
    }

    #[test]
    fn config_parse() {
        let out = "#first line of description\n#second: with colon\n\
                   arch: amd64\ncores: 2\nenv: A=1\0B=two words\nentrypoint: /.pvelxc/init\n\
                   hostname: web\nmemory: 512\nmp0: /run/pvelxc/default/web,mp=/.pvelxc\n\
                   net0: name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip=dhcp,type=veth\n\
                   ostype: unmanaged\nrootfs: local-lvm:vm-101-disk-0,size=4G\nswap: 512\n\
                   tags: k8s;pvelxc\nunprivileged: 1\n\
                   lxc.init.cwd: /\nlxc.mount.entry: /a b none bind 0 0\nlxc.mount.entry: /c d none bind 0 0\n\
                   \n[pve:pending]\nmemory: 1024\n\n[snap1]\ncores: 1\n";
        let c = parse_config(out).unwrap();
        assert_eq!(
            c.description.as_deref(),
            Some("first line of description\nsecond: with colon")
        );
        assert_eq!(c.get("hostname"), Some("web"));
        assert_eq!(c.get("cores"), Some("2"));
        assert_eq!(c.env(), vec!["A=1", "B=two words"]);
        assert_eq!(
            c.indexed("mp"),
            vec![(0, "/run/pvelxc/default/web,mp=/.pvelxc")]
        );
        assert_eq!(c.indexed("net").len(), 1);
        assert_eq!(c.lxc.len(), 3);
        assert_eq!(
            c.lxc[1],
            ("lxc.mount.entry".into(), "/a b none bind 0 0".into())
        );
        assert_eq!(c.pending.get("memory").map(String::as_str), Some("1024"));
        assert_eq!(c.snapshots, vec!["snap1".to_string()]);
        assert_eq!(c.get("memory"), Some("512"));
        let c = parse_config("description: one\nhostname: x\n").unwrap();
        assert_eq!(c.description.as_deref(), Some("one"));
    }

    #[test]
    fn nextid() {
        assert_eq!(parse_nextid("100\n").unwrap(), v(100));
        assert_eq!(parse_nextid("\"105\"\n").unwrap(), v(105));
        assert!(parse_nextid("").is_err());
        assert!(parse_nextid("99\n").is_err());
    }
}
