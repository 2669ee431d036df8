//! The OCI runtime-spec `Process` subset the init applies, and how it applies it.
//!
//! Field names are those of config.json (`process`), so the shim can serialise its
//! `oci_spec::runtime::Process` as is. `capabilities` is applied like runc does (see
//! [`crate::caps`]); other unknown fields (apparmorProfile, selinuxLabel, ...) are
//! ignored: the CT's own LXC confinement applies.
//!
//! Never resolves user or group names (no NSS: the binary is static): ids are numeric.

use crate::caps::{self, CapSets, Capabilities};
use serde::{Deserialize, Serialize};
use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// PATH used for the lookup of `args[0]` when the spec's env has no PATH.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    #[serde(default)]
    pub terminal: bool,
    #[serde(default)]
    pub console_size: Option<ConsoleSize>,
    #[serde(default)]
    pub user: User,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub cwd: String,
    #[serde(default)]
    pub rlimits: Vec<Rlimit>,
    #[serde(default)]
    pub no_new_privileges: bool,
    #[serde(default)]
    pub oom_score_adj: Option<i32>,
    /// Absent: capabilities are left as the uid switch makes them (all kept for uid 0,
    /// none for another uid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleSize {
    pub height: u32,
    pub width: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    #[serde(default)]
    pub umask: Option<u32>,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    #[serde(rename = "type")]
    pub kind: String,
    pub hard: u64,
    pub soft: u64,
}

impl Process {
    pub fn from_json(b: &[u8]) -> Result<Self, String> {
        let p: Process = serde_json::from_slice(b).map_err(|e| format!("process json: {e}"))?;
        if p.args.is_empty() {
            return Err("process json: args must not be empty".into());
        }
        Ok(p)
    }

    /// The PATH the spec's env sets (last one wins, like execve's environment), or
    /// [`DEFAULT_PATH`].
    pub fn path_var(&self) -> &str {
        self.env
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH)
    }
}

/// Map an OCI rlimit type (`RLIMIT_NOFILE`) to the resource number.
pub fn rlimit_resource(kind: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match kind {
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        _ => return None,
    })
}

/// Candidate paths for `arg0`, in lookup order: `arg0` itself if it contains a `/`,
/// else each PATH entry joined with it (an empty entry means the cwd, as in execvp).
pub fn exec_candidates(arg0: &str, path: &str) -> Vec<PathBuf> {
    if arg0.contains('/') {
        return vec![PathBuf::from(arg0)];
    }
    path.split(':')
        .map(|d| {
            if d.is_empty() {
                PathBuf::from(".").join(arg0)
            } else {
                Path::new(d).join(arg0)
            }
        })
        .collect()
}

/// runc-compatible exit status for an exec failure errno: 127 "not found", 126 else.
pub fn exec_failure_code(errno: i32) -> i32 {
    if errno == libc::ENOENT || errno == libc::ENOTDIR {
        127
    } else {
        126
    }
}

/// (exit_code, signal) of a `waitpid` status: exit_code = 128+sig when signalled.
pub fn decode_wait_status(status: libc::c_int) -> (i32, Option<i32>) {
    if libc::WIFSIGNALED(status) {
        let s = libc::WTERMSIG(status);
        (128 + s, Some(s))
    } else if libc::WIFEXITED(status) {
        (libc::WEXITSTATUS(status), None)
    } else {
        (255, None)
    }
}

/// Everything [`apply`] and [`exec`] need, allocated up front so the code that runs
/// after `fork` stays small.
#[derive(Debug)]
pub struct Prepared {
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub candidates: Vec<CString>,
    pub arg0: String,
    pub cwd: Option<CString>,
    pub rlimits: Vec<(libc::__rlimit_resource_t, libc::rlimit)>,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<libc::gid_t>,
    pub umask: Option<u32>,
    pub no_new_privs: bool,
    pub oom_score_adj: Option<i32>,
    pub caps: Option<CapSets>,
}

fn cstr(s: &[u8], what: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{what} contains a NUL byte"))
}

/// Validate and convert a Process.
pub fn prepare(p: &Process) -> Result<Prepared, String> {
    let arg0 = p
        .args
        .first()
        .ok_or_else(|| "args must not be empty".to_string())?
        .clone();
    let argv = p
        .args
        .iter()
        .map(|a| cstr(a.as_bytes(), "args"))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = p
        .env
        .iter()
        .map(|e| cstr(e.as_bytes(), "env"))
        .collect::<Result<Vec<_>, _>>()?;
    let candidates = exec_candidates(&arg0, p.path_var())
        .iter()
        .map(|c| cstr(c.as_os_str().as_bytes(), "PATH"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut rlimits = Vec::new();
    for r in &p.rlimits {
        let res = rlimit_resource(&r.kind).ok_or_else(|| format!("unknown rlimit {}", r.kind))?;
        rlimits.push((
            res,
            libc::rlimit {
                rlim_cur: r.soft,
                rlim_max: r.hard,
            },
        ));
    }
    let cwd = if p.cwd.is_empty() {
        None
    } else {
        if !p.cwd.starts_with('/') {
            return Err(format!("cwd {:?} is not absolute", p.cwd));
        }
        Some(cstr(p.cwd.as_bytes(), "cwd")?)
    };
    Ok(Prepared {
        argv,
        envp,
        candidates,
        arg0,
        cwd,
        rlimits,
        uid: p.user.uid,
        gid: p.user.gid,
        groups: p.user.additional_gids.clone(),
        umask: p.user.umask,
        no_new_privs: p.no_new_privileges,
        oom_score_adj: p.oom_score_adj,
        caps: p.capabilities.as_ref().map(|c| c.to_sets()).transpose()?,
    })
}

fn check(r: libc::c_int, what: &str) -> Result<(), String> {
    if r < 0 {
        Err(format!("{what}: {}", io::Error::last_os_error()))
    } else {
        Ok(())
    }
}

fn chdir(c: &CString) -> libc::c_int {
    // SAFETY: valid C string.
    unsafe { libc::chdir(c.as_ptr()) }
}

/// Apply rlimits, oom_score_adj, cwd, umask, capabilities, groups, gid, uid and
/// no_new_privs to the calling process, in runc's order: rlimits before dropping
/// privileges; with `capabilities`, the bounding set is dropped before the uid switch
/// (PR_CAPBSET_DROP needs CAP_SETPCAP), PR_SET_KEEPCAPS brackets setgroups/setgid/
/// setuid, then capset and the ambient set; cwd retried after the uid switch when root
/// may not enter it; no_new_privs last.
pub fn apply(p: &Prepared) -> Result<(), String> {
    for (res, lim) in &p.rlimits {
        // SAFETY: valid pointer to an rlimit.
        check(unsafe { libc::setrlimit(*res, lim) }, "setrlimit")?;
    }
    if let Some(adj) = p.oom_score_adj {
        // Best effort: needs CAP_SYS_RESOURCE to lower it.
        let _ = std::fs::write("/proc/self/oom_score_adj", adj.to_string());
    }
    let mut cwd_done = true;
    if let Some(c) = &p.cwd {
        cwd_done = chdir(c) == 0;
    }
    if let Some(m) = p.umask {
        // SAFETY: umask cannot fail.
        unsafe { libc::umask(m as libc::mode_t) };
    }
    if let Some(c) = &p.caps {
        caps::drop_bounding(c.bounding)?;
        caps::set_keepcaps(true)?;
    }
    // SAFETY: valid slice pointer/len; numeric ids only.
    check(
        unsafe { libc::setgroups(p.groups.len(), p.groups.as_ptr()) },
        "setgroups",
    )?;
    // SAFETY: plain syscalls.
    check(unsafe { libc::setgid(p.gid) }, "setgid")?;
    // SAFETY: plain syscall.
    check(unsafe { libc::setuid(p.uid) }, "setuid")?;
    if let Some(c) = &p.caps {
        caps::set_keepcaps(false)?;
        caps::apply_sets(c)?;
    }
    if !cwd_done {
        if let Some(c) = &p.cwd {
            check(
                chdir(c),
                &format!(
                    "chdir {}",
                    OsStr::from_bytes(c.as_bytes()).to_string_lossy()
                ),
            )?;
        }
    }
    if p.no_new_privs {
        // SAFETY: plain prctl.
        check(
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
            "prctl(NO_NEW_PRIVS)",
        )?;
    }
    Ok(())
}

/// Reset the signal mask and every disposition to default (inherited across exec).
pub fn reset_signals() {
    // SAFETY: sigset/sigaction calls on local storage.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        for s in 1..libc::SIGRTMAX() {
            if s != libc::SIGKILL && s != libc::SIGSTOP {
                libc::signal(s, libc::SIG_DFL);
            }
        }
    }
}

fn is_executable_file(c: &CString) -> Result<(), i32> {
    // SAFETY: valid C string; stat into local storage.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::stat(c.as_ptr(), &mut st) != 0 {
            return Err(*libc::__errno_location());
        }
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            return Err(libc::EACCES);
        }
        if libc::access(c.as_ptr(), libc::X_OK) != 0 {
            return Err(*libc::__errno_location());
        }
    }
    Ok(())
}

/// Write a message to fd 2 without allocating more than needed.
pub fn write_stderr(msg: &str) {
    let b = msg.as_bytes();
    // SAFETY: writing a live buffer to fd 2.
    unsafe {
        libc::write(2, b.as_ptr() as *const libc::c_void, b.len());
    }
}

/// Resolve `args[0]` (PATH of the spec env) and execve it with exactly the spec env.
/// Only returns on failure, with the exit status to use (127 not found, 126 else)
/// after printing a runc-like message on stderr.
pub fn exec(p: &Prepared) -> i32 {
    let mut argv: Vec<*const libc::c_char> = p.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = p.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let search = !p.arg0.contains('/');
    let mut first_err: Option<i32> = None;
    for c in &p.candidates {
        if search {
            match is_executable_file(c) {
                Ok(()) => {}
                Err(e) => {
                    // Like Go's LookPath: keep a permission error as the answer if
                    // nothing better is found.
                    if e != libc::ENOENT && e != libc::ENOTDIR && first_err.is_none() {
                        first_err = Some(e);
                    }
                    continue;
                }
            }
        }
        // SAFETY: NUL-terminated argv/envp of live CStrings.
        unsafe { libc::execve(c.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        let e = io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        let code = exec_failure_code(e);
        write_stderr(&format!(
            "pvelxc-init: exec: \"{}\": {}\n",
            p.arg0,
            io::Error::from_raw_os_error(e)
        ));
        return code;
    }
    match first_err {
        Some(e) => {
            write_stderr(&format!(
                "pvelxc-init: exec: \"{}\": {}\n",
                p.arg0,
                io::Error::from_raw_os_error(e)
            ));
            exec_failure_code(e)
        }
        None => {
            write_stderr(&format!(
                "pvelxc-init: exec: \"{}\": executable file not found in $PATH\n",
                p.arg0
            ));
            127
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"{
        "terminal": false,
        "consoleSize": {"height": 24, "width": 80},
        "user": {"uid": 1000, "gid": 1001, "umask": 18, "additionalGids": [5, 6]},
        "args": ["sh", "-c", "echo hi"],
        "env": ["PATH=/usr/bin:/bin", "FOO=bar"],
        "cwd": "/tmp",
        "capabilities": {"bounding": ["CAP_KILL"]},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 512}],
        "noNewPrivileges": true,
        "apparmorProfile": "x",
        "oomScoreAdj": 100
    }"#;

    #[test]
    fn parse_oci_process() {
        let p = Process::from_json(SPEC.as_bytes()).unwrap();
        assert_eq!(p.user.uid, 1000);
        assert_eq!(p.user.gid, 1001);
        assert_eq!(p.user.umask, Some(0o22));
        assert_eq!(p.user.additional_gids, vec![5, 6]);
        assert_eq!(
            p.console_size,
            Some(ConsoleSize {
                height: 24,
                width: 80
            })
        );
        assert_eq!(p.rlimits[0].kind, "RLIMIT_NOFILE");
        assert!(p.no_new_privileges);
        assert_eq!(p.oom_score_adj, Some(100));
        assert_eq!(p.path_var(), "/usr/bin:/bin");
        let pr = prepare(&p).unwrap();
        assert_eq!(pr.rlimits[0].0, libc::RLIMIT_NOFILE);
        assert_eq!(pr.rlimits[0].1.rlim_cur, 512);
        assert_eq!(pr.candidates.len(), 2);
        assert_eq!(pr.candidates[0].to_str().unwrap(), "/usr/bin/sh");
        assert_eq!(pr.groups, vec![5, 6]);
        assert_eq!(pr.caps.unwrap().bounding, 1 << 5);
        assert_eq!(pr.caps.unwrap().permitted, 0);
    }

    #[test]
    fn capabilities_parse_and_validate() {
        let p = Process::from_json(br#"{"args":["x"]}"#).unwrap();
        assert!(p.capabilities.is_none());
        assert!(prepare(&p).unwrap().caps.is_none());
        let p = Process::from_json(
            br#"{"args":["x"],"capabilities":{"bounding":["CAP_NET_BIND_SERVICE","CAP_CHOWN"],
                "effective":["CAP_NET_BIND_SERVICE"],"permitted":["CAP_NET_BIND_SERVICE"],
                "inheritable":["CAP_NET_BIND_SERVICE"],"ambient":["CAP_NET_BIND_SERVICE"]}}"#,
        )
        .unwrap();
        let c = prepare(&p).unwrap().caps.unwrap();
        assert_eq!(c.bounding, 1 << 10 | 1);
        assert_eq!(
            (c.effective, c.permitted, c.inheritable, c.ambient),
            (1 << 10, 1 << 10, 1 << 10, 1 << 10)
        );
        // An empty object means "no capabilities at all", not "unchanged".
        let p = Process::from_json(br#"{"args":["x"],"capabilities":{}}"#).unwrap();
        assert_eq!(prepare(&p).unwrap().caps, Some(CapSets::default()));
        let p = Process::from_json(br#"{"args":["x"],"capabilities":{"ambient":["CAP_FLY"]}}"#)
            .unwrap();
        assert!(prepare(&p).unwrap_err().contains("CAP_FLY"));
    }

    #[test]
    fn minimal_and_invalid_specs() {
        let p = Process::from_json(br#"{"args":["/bin/true"]}"#).unwrap();
        assert_eq!(p.user.uid, 0);
        assert_eq!(p.path_var(), DEFAULT_PATH);
        assert!(prepare(&p).unwrap().cwd.is_none());
        assert!(Process::from_json(br#"{"args":[]}"#).is_err());
        assert!(Process::from_json(b"not json").is_err());
        let mut p = Process {
            args: vec!["x".into()],
            cwd: "relative".into(),
            ..Default::default()
        };
        assert!(prepare(&p).is_err());
        p.cwd = "/".into();
        p.rlimits.push(Rlimit {
            kind: "RLIMIT_BOGUS".into(),
            hard: 1,
            soft: 1,
        });
        assert!(prepare(&p).unwrap_err().contains("RLIMIT_BOGUS"));
        p.rlimits.clear();
        p.env.push("A=\0".into());
        assert!(prepare(&p).is_err());
    }

    #[test]
    fn path_lookup_order() {
        assert_eq!(
            exec_candidates("/bin/sh", "/x"),
            vec![PathBuf::from("/bin/sh")]
        );
        assert_eq!(exec_candidates("./a", "/x"), vec![PathBuf::from("./a")]);
        assert_eq!(
            exec_candidates("ls", "/a::/b"),
            vec![
                PathBuf::from("/a/ls"),
                PathBuf::from("./ls"),
                PathBuf::from("/b/ls")
            ]
        );
        let p = Process {
            args: vec!["x".into()],
            env: vec!["PATH=/first".into(), "PATH=/second".into()],
            ..Default::default()
        };
        assert_eq!(p.path_var(), "/second");
    }

    #[test]
    fn all_rlimits_known() {
        for k in [
            "RLIMIT_AS",
            "RLIMIT_CORE",
            "RLIMIT_CPU",
            "RLIMIT_DATA",
            "RLIMIT_FSIZE",
            "RLIMIT_LOCKS",
            "RLIMIT_MEMLOCK",
            "RLIMIT_MSGQUEUE",
            "RLIMIT_NICE",
            "RLIMIT_NOFILE",
            "RLIMIT_NPROC",
            "RLIMIT_RSS",
            "RLIMIT_RTPRIO",
            "RLIMIT_RTTIME",
            "RLIMIT_SIGPENDING",
            "RLIMIT_STACK",
        ] {
            assert!(rlimit_resource(k).is_some(), "{k}");
        }
        assert!(rlimit_resource("nofile").is_none());
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exec_failure_code(libc::ENOENT), 127);
        assert_eq!(exec_failure_code(libc::ENOTDIR), 127);
        assert_eq!(exec_failure_code(libc::EACCES), 126);
        assert_eq!(exec_failure_code(libc::ENOEXEC), 126);
        // status encodings as waitpid returns them
        assert_eq!(decode_wait_status(3 << 8), (3, None));
        assert_eq!(decode_wait_status(9), (137, Some(9)));
        assert_eq!(decode_wait_status(15 | 0x80), (143, Some(15))); // core dumped bit
    }

    #[test]
    fn executable_check() {
        let d = std::env::temp_dir().join(format!("pvelxc-init-ut-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("noexec");
        std::fs::write(&f, "x").unwrap();
        let c = CString::new(f.as_os_str().as_bytes()).unwrap();
        let cd = CString::new(d.as_os_str().as_bytes()).unwrap();
        let missing = CString::new(d.join("missing").as_os_str().as_bytes()).unwrap();
        assert_eq!(is_executable_file(&missing), Err(libc::ENOENT));
        assert_eq!(is_executable_file(&cd), Err(libc::EACCES));
        // Root passes X_OK only if some x bit is set.
        assert_eq!(is_executable_file(&c), Err(libc::EACCES));
        assert!(is_executable_file(&CString::new("/bin/sh").unwrap()).is_ok());
        let _ = std::fs::remove_dir_all(&d);
    }
}
