//! Parsers for what `pct` and `pvesh` print, and a classifier that turns a failed
//! invocation (exit status + stdout + stderr) into a typed [`PctError`].
//!
//! Formats and messages follow docs/pct.md. Exit codes of `die` are errno-dependent
//! (usually 255): classification matches on "non-zero + message", never on the number.

use std::collections::BTreeMap;

use super::vmid::Vmid;

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

/// A failed pct/pvesh invocation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PctError {
    /// `CT 101 already exists on node 'pve'` (also VM ids: they share the space).
    #[error("CT {vmid} already exists")]
    AlreadyExists { vmid: u32 },
    /// `CT is locked (<lock>)`.
    #[error("CT is locked ({lock})")]
    Locked { lock: String },
    /// `can't lock file '<path>' - got timeout`.
    #[error("can't lock file '{path}' - got timeout")]
    LockTimeout { path: String },
    /// `CT 101 not running`, `container '101' not running!`, `VM 101 not running`.
    #[error("CT not running")]
    NotRunning,
    /// `CT 101 already running`.
    #[error("CT already running")]
    AlreadyRunning,
    /// `Configuration file 'nodes/<node>/lxc/<vmid>.conf' does not exist`.
    #[error("no such CT")]
    NoSuchCt,
    /// `unable to destroy CT 101 - container is running`.
    #[error("CT is running")]
    Running,
    /// `can't remove CT 101 - protection mode enabled`.
    #[error("CT is protected")]
    Protected,
    /// `400 Parameter verification failed.` followed by `<param>: <msg>` lines (first one
    /// here, all in `all`).
    #[error("parameter verification failed: {param}: {msg}")]
    ParamError {
        param: String,
        msg: String,
        all: Vec<(String, String)>,
    },
    /// `ERROR: unknown command 'pct foo'`.
    #[error("unknown pct command: {0}")]
    UnknownCommand(String),
    /// A worker task failed (`TASK ERROR: msg`, `unable to create CT 101 - msg`, ...).
    #[error("task error: {0}")]
    TaskError(String),
    /// `unable to get any free VMID in range [L, U]`.
    #[error("no free VMID: {0}")]
    NoFreeVmid(String),
    /// Anything else (last meaningful stderr line, or the exit status).
    #[error("pct failed: {msg}")]
    Other { msg: String },
}

/// A successful invocation's warnings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// `WARN: ...` lines (prefix stripped), `vm N - unable to parse config: ...` lines.
    pub warnings: Vec<String>,
    /// N of `Task finished with N warning(s)!`.
    pub task_warnings: Option<u32>,
}

/// Warnings in stdout+stderr (pct prints worker output on stdout and the summary on stderr).
pub fn warnings(stdout: &str, stderr: &str) -> Outcome {
    let mut o = Outcome::default();
    for line in stderr.lines().chain(stdout.lines()) {
        let l = line.trim();
        if let Some(w) = l.strip_prefix("WARN:") {
            o.warnings.push(w.trim().to_string());
        } else if l.starts_with("vm ") && l.contains("unable to parse config") {
            o.warnings.push(l.to_string());
        } else if let Some(n) = l
            .strip_prefix("Task finished with ")
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
        {
            o.task_warnings = Some(n);
        }
    }
    o
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)? + i;
    Some(&s[i..j])
}

fn number_after<'a>(s: &'a str, word: &str) -> Option<&'a str> {
    let i = s.find(word)? + word.len();
    let d: &str = &s[i..];
    let n = d.find(|c: char| !c.is_ascii_digit()).unwrap_or(d.len());
    (n > 0).then(|| &d[..n])
}

/// Classify one message line (already stripped of `TASK ERROR: `).
fn classify_line(l: &str) -> Option<PctError> {
    if let Some(p) = between(l, "can't lock file '", "' - got timeout") {
        return Some(PctError::LockTimeout {
            path: p.to_string(),
        });
    }
    if let Some(lock) = between(l, "CT is locked (", ")") {
        return Some(PctError::Locked {
            lock: lock.to_string(),
        });
    }
    if let Some(c) = between(l, "unknown command '", "'") {
        return Some(PctError::UnknownCommand(c.to_string()));
    }
    if l.contains("unable to get any free VMID") {
        return Some(PctError::NoFreeVmid(l.to_string()));
    }
    if l.contains("already exists") {
        for w in ["CT ", "VM "] {
            if let Some(n) = number_after(l, w).and_then(|n| n.parse().ok()) {
                if l.contains(&format!("{w}{n} already exists")) {
                    return Some(PctError::AlreadyExists { vmid: n });
                }
            }
        }
    }
    // pmxcfs refuses a second config file for a VMID (EEXIST) when another node or
    // another create won the race: `unable to create CT 101 - ... File exists`.
    if l.contains("File exists") {
        if let Some(n) = number_after(l, "unable to create CT ").and_then(|n| n.parse().ok()) {
            return Some(PctError::AlreadyExists { vmid: n });
        }
    }
    if l.contains("protection mode enabled") {
        return Some(PctError::Protected);
    }
    if l.contains("container is running") {
        return Some(PctError::Running);
    }
    if l.contains("already running") {
        return Some(PctError::AlreadyRunning);
    }
    if l.starts_with("Configuration file '") && l.ends_with("does not exist") {
        return Some(PctError::NoSuchCt);
    }
    // `unable to get PID for CT 101 (not running?)`: the CT started but its init is
    // already gone; for us that is a start that raced with the process exiting.
    if l.contains("unable to get PID for CT") {
        return Some(PctError::TaskError(l.to_string()));
    }
    if l.ends_with("not running") || l.ends_with("not running!") {
        return Some(PctError::NotRunning);
    }
    None
}

/// Classify an invocation: `Ok(warnings)` on exit status 0, else the error.
/// `exit_code` is `None` when pct was killed by a signal.
pub fn classify(exit_code: Option<i32>, stdout: &str, stderr: &str) -> Result<Outcome, PctError> {
    if exit_code == Some(0) {
        return Ok(warnings(stdout, stderr));
    }
    // 400 Parameter verification failed.
    let lines: Vec<&str> = stderr.lines().collect();
    if let Some(i) = lines
        .iter()
        .position(|l| l.trim() == "400 Parameter verification failed.")
    {
        let mut all = Vec::new();
        for l in &lines[i + 1..] {
            let l = l.trim_end();
            if l.is_empty() {
                if all.is_empty() {
                    continue;
                }
                break;
            }
            if l.starts_with("USAGE:") || l.starts_with("pct ") {
                break;
            }
            if let Some((p, m)) = kv(l) {
                all.push((p.trim().to_string(), m.trim().to_string()));
            }
        }
        let (param, msg) = all.first().cloned().unwrap_or_default();
        return Err(PctError::ParamError { param, msg, all });
    }
    // Specific messages anywhere (stderr first: that is where `die` goes; worker
    // output, including TASK ERROR lines, may be on stdout).
    let mut task_error: Option<String> = None;
    for raw in stderr.lines().chain(stdout.lines()) {
        let l = raw.trim();
        if l.is_empty() || l == "trying to acquire lock..." {
            continue;
        }
        let (msg, is_task) = match l.strip_prefix("TASK ERROR:") {
            Some(m) => (m.trim(), true),
            None => (l, false),
        };
        // `unable to create CT 101 - <reason>`: classify the reason.
        let inner = msg
            .split_once(" - ")
            .filter(|(h, _)| h.starts_with("unable to ") || h.starts_with("can't remove"))
            .map(|(_, r)| r);
        if let Some(e) = classify_line(msg).or_else(|| inner.and_then(classify_line)) {
            return Err(e);
        }
        if is_task && task_error.is_none() {
            task_error = Some(msg.to_string());
        }
        if task_error.is_none() && (msg.starts_with("unable to ") || msg.contains(" failed")) {
            task_error = Some(msg.to_string());
        }
    }
    if let Some(t) = task_error {
        return Err(PctError::TaskError(t));
    }
    let msg = stderr
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("USAGE:"))
        .map(str::to_string)
        .unwrap_or_else(|| match exit_code {
            Some(c) => format!("exit status {c}"),
            None => "killed by a signal".to_string(),
        });
    Err(PctError::Other { msg })
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

    // ---- classifier, with pct.md's exact strings

    fn err(code: i32, out: &str, e: &str) -> PctError {
        classify(Some(code), out, e).unwrap_err()
    }

    #[test]
    fn success_with_warnings() {
        let o = classify(
            Some(0),
            "extracting archive '/var/lib/vz/template/cache/x.tar.zst'\n",
            "WARN: Systemd 255 detected. You may need to enable nesting.\nTask finished with 1 warning(s)!\n",
        )
        .unwrap();
        assert_eq!(
            o.warnings,
            vec!["Systemd 255 detected. You may need to enable nesting.".to_string()]
        );
        assert_eq!(o.task_warnings, Some(1));
        let o = classify(Some(0), "", "").unwrap();
        assert_eq!(o, Outcome::default());
        let o = classify(Some(0), "vm 101 - unable to parse config: foo: bar\n", "").unwrap();
        assert_eq!(o.warnings.len(), 1);
    }

    #[test]
    fn already_exists() {
        assert_eq!(
            err(255, "", "CT 101 already exists on node 'pve'\n"),
            PctError::AlreadyExists { vmid: 101 }
        );
        assert_eq!(
            err(
                255,
                "",
                "unable to create CT 101 - CT 101 already exists on node 'pve'\n"
            ),
            PctError::AlreadyExists { vmid: 101 }
        );
        assert_eq!(
            err(255, "", "VM 205 already exists on node 'pve'\n"),
            PctError::AlreadyExists { vmid: 205 }
        );
        assert_eq!(
            err(
                255,
                "",
                "unable to create CT 300002 - close (rename) atomic file \
                 '/etc/pve/nodes/pve/lxc/300002.conf' failed: File exists\n"
            ),
            PctError::AlreadyExists { vmid: 300_002 }
        );
    }

    #[test]
    fn locks() {
        assert_eq!(
            err(
                255,
                "",
                "trying to acquire lock...\ncan't lock file '/run/lock/lxc/pve-config-101.lock' - got timeout\n"
            ),
            PctError::LockTimeout {
                path: "/run/lock/lxc/pve-config-101.lock".into()
            }
        );
        assert_eq!(
            err(255, "", "CT is locked (backup)\n"),
            PctError::Locked {
                lock: "backup".into()
            }
        );
        assert_eq!(
            err(255, "", "CT is locked (snapshot-delete)\n"),
            PctError::Locked {
                lock: "snapshot-delete".into()
            }
        );
    }

    #[test]
    fn running_states() {
        assert_eq!(err(255, "", "CT 101 not running\n"), PctError::NotRunning);
        assert_eq!(
            err(255, "", "container '101' not running!\n"),
            PctError::NotRunning
        );
        assert_eq!(err(255, "", "VM 101 not running\n"), PctError::NotRunning);
        assert_eq!(
            err(255, "", "CT 101 already running\n"),
            PctError::AlreadyRunning
        );
        assert_eq!(
            err(255, "", "unable to destroy CT 101 - container is running\n"),
            PctError::Running
        );
        assert_eq!(
            err(255, "", "can't remove CT 101 - protection mode enabled\n"),
            PctError::Protected
        );
        assert_eq!(
            err(
                255,
                "",
                "Configuration file 'nodes/pve/lxc/101.conf' does not exist\n"
            ),
            PctError::NoSuchCt
        );
        assert!(matches!(
            err(255, "", "unable to get PID for CT 101 (not running?)\n"),
            PctError::TaskError(m) if m.contains("unable to get PID")
        ));
    }

    #[test]
    fn param_errors() {
        let e = err(
            255,
            "",
            "400 Parameter verification failed.\nvmid: invalid format - value does not look like a valid VM ID\n\n\
             pct start <vmid> [OPTIONS]\n",
        );
        assert_eq!(
            e,
            PctError::ParamError {
                param: "vmid".into(),
                msg: "invalid format - value does not look like a valid VM ID".into(),
                all: vec![(
                    "vmid".into(),
                    "invalid format - value does not look like a valid VM ID".into()
                )],
            }
        );
        let e = err(
            255,
            "",
            "400 Parameter verification failed.\nmemory: value must have a minimum value of 16\n\
             hostname: invalid format - value does not look like a valid DNS name\n\n\
             pct create <vmid> <ostemplate> [OPTIONS]\n",
        );
        match e {
            PctError::ParamError { param, all, .. } => {
                assert_eq!(param, "memory");
                assert_eq!(all.len(), 2);
                assert_eq!(all[1].0, "hostname");
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn unknown_command() {
        assert_eq!(
            err(
                255,
                "",
                "ERROR: unknown command 'pct foo'\nUSAGE: pct <COMMAND> [ARGS] [OPTIONS]\n"
            ),
            PctError::UnknownCommand("pct foo".into())
        );
    }

    #[test]
    fn task_errors() {
        // Worker output on stdout, the failure message on stderr.
        let e = err(
            255,
            "extracting archive '/tmp/x.tar'\n",
            "startup for container '101' failed\n",
        );
        assert_eq!(
            e,
            PctError::TaskError("startup for container '101' failed".into())
        );
        let e = err(
            255,
            "TASK ERROR: unable to create CT 101 - can't find file 'local:vztmpl/x.tar.zst'\n",
            "",
        );
        assert_eq!(
            e,
            PctError::TaskError(
                "unable to create CT 101 - can't find file 'local:vztmpl/x.tar.zst'".into()
            )
        );
        let e = err(
            255,
            "",
            "unable to create CT 101 - storage 'local' does not support container directories\n",
        );
        assert!(matches!(e, PctError::TaskError(m) if m.contains("does not support")));
        assert_eq!(
            err(255, "", "container did not stop\n"),
            PctError::Other {
                msg: "container did not stop".into()
            }
        );
        assert_eq!(
            err(
                255,
                "",
                "mount points configured, but 'rootfs' not set - aborting\n"
            ),
            PctError::Other {
                msg: "mount points configured, but 'rootfs' not set - aborting".into()
            }
        );
    }

    #[test]
    fn nextid_errors_and_fallbacks() {
        assert!(matches!(
            err(
                255,
                "",
                "unable to get any free VMID in range [100, 1000000]\n"
            ),
            PctError::NoFreeVmid(_)
        ));
        assert_eq!(
            err(2, "", ""),
            PctError::Other {
                msg: "exit status 2".into()
            }
        );
        assert_eq!(
            classify(None, "", "").unwrap_err(),
            PctError::Other {
                msg: "killed by a signal".into()
            }
        );
        assert_eq!(
            err(255, "", "no options specified\n"),
            PctError::Other {
                msg: "no options specified".into()
            }
        );
    }
}
