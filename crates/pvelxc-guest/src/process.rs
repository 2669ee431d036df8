//! The OCI runtime-spec `Process` subset a guest applies, and [`prepare`]: validation and
//! every allocation the child needs, done before `fork`.
//!
//! Field names are those of config.json (`process`), so the shim can serialise its
//! `oci_spec::runtime::Process` as is (pvelxc-init reads it from `process.json`; see its
//! PROTOCOL.md). `capabilities` is applied like runc does (see [`crate::caps`]); other
//! fields (apparmorProfile, selinuxLabel, ...) are ignored: the CT's own LXC confinement
//! or the VM applies.

use crate::caps::{CapSets, Capabilities};
use crate::rlimit::rlimit_resource;
use serde::{Deserialize, Serialize};
use std::ffi::CString;
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

/// Everything [`crate::run::apply`] and [`crate::run::exec`] need, allocated up front so
/// that the code after `fork` allocates nothing.
#[derive(Debug, Default)]
pub struct Prepared {
    argv: CStrings,
    envp: CStrings,
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
    /// `oom_score_adj` as the decimal text written to `/proc/self/oom_score_adj`.
    pub oom_score_adj_text: Vec<u8>,
    pub caps: Option<CapSets>,
}

/// C strings and the NULL-terminated pointer array `execve` takes, built together so
/// that nothing is allocated after fork. Private: the pointers stay valid because the
/// strings are never changed after construction (their heap buffers do not move when
/// the `Prepared` does).
#[derive(Debug, Default)]
struct CStrings {
    strings: Vec<CString>,
    ptrs: Vec<*const libc::c_char>,
}

// SAFETY: the pointers only point into `strings`, owned by the same value and never
// mutated; sending or sharing the pair is as safe as sending/sharing the CStrings.
unsafe impl Send for CStrings {}
// SAFETY: as above; nothing mutates through the pointers.
unsafe impl Sync for CStrings {}

impl CStrings {
    fn new(v: &[String], what: &str) -> Result<Self, String> {
        let strings = v
            .iter()
            .map(|a| cstr(a.as_bytes(), what))
            .collect::<Result<Vec<_>, _>>()?;
        let mut ptrs: Vec<*const libc::c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        Ok(CStrings { strings, ptrs })
    }

    fn ptrs(&self) -> Option<*const *const libc::c_char> {
        (self.ptrs.last() == Some(&std::ptr::null())).then_some(self.ptrs.as_ptr())
    }
}

impl Prepared {
    /// argv as prepared.
    pub fn argv(&self) -> &[CString] {
        &self.argv.strings
    }

    /// The environment as prepared (exactly the spec's env).
    pub fn envp(&self) -> &[CString] {
        &self.envp.strings
    }

    /// NULL-terminated argv for execve (`None` for a default, unprepared value).
    pub(crate) fn argv_ptrs(&self) -> Option<*const *const libc::c_char> {
        self.argv.ptrs()
    }

    pub(crate) fn envp_ptrs(&self) -> Option<*const *const libc::c_char> {
        self.envp.ptrs()
    }
}

fn cstr(s: &[u8], what: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{what} contains a NUL byte"))
}

/// Validate a Process and convert it into what the child needs.
pub fn prepare(p: &Process) -> Result<Prepared, String> {
    let arg0 = p
        .args
        .first()
        .ok_or_else(|| "args must not be empty".to_string())?
        .clone();
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
        argv: CStrings::new(&p.args, "args")?,
        envp: CStrings::new(&p.env, "env")?,
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
        oom_score_adj_text: p
            .oom_score_adj
            .map(|a| a.to_string().into_bytes())
            .unwrap_or_default(),
        caps: p.capabilities.as_ref().map(|c| c.to_sets()).transpose()?,
    })
}

#[cfg(test)]
mod tests;
