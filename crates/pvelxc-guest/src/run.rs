//! The child's side, between `fork` and `execve`: [`apply`] the prepared process
//! attributes, then [`exec`] (or [`try_exec`]) the program.
//!
//! Async-signal-safe: only raw syscalls on memory [`crate::prepare`] allocated, no heap
//! allocation, no locks, no stdio; messages go to fd 2 from a stack buffer. Safe to run
//! in the child of a multi-threaded parent.

use crate::caps;
use crate::process::Prepared;
use crate::status::exec_failure_code;
use crate::sys::{errno, Failure, StackMsg};

fn check(r: libc::c_int, what: &'static str) -> Result<(), Failure<'static>> {
    if r < 0 {
        Err(Failure::last(what))
    } else {
        Ok(())
    }
}

fn chdir(c: &std::ffi::CStr) -> libc::c_int {
    // SAFETY: valid C string.
    unsafe { libc::chdir(c.as_ptr()) }
}

/// Best effort (lowering it needs CAP_SYS_RESOURCE), as the init always did.
fn write_oom_score_adj(text: &[u8]) {
    // SAFETY: static C string path; write of a live buffer; the fd is closed again.
    unsafe {
        let fd = libc::open(
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        if fd >= 0 {
            libc::write(fd, text.as_ptr().cast(), text.len());
            libc::close(fd);
        }
    }
}

/// Apply rlimits, oom_score_adj, cwd, umask, capabilities, groups, gid, uid and
/// no_new_privs to the calling process, in runc's order: rlimits before dropping
/// privileges; with `capabilities`, the bounding set is dropped before the uid switch
/// (PR_CAPBSET_DROP needs CAP_SETPCAP), PR_SET_KEEPCAPS brackets setgroups/setgid/
/// setuid, then capset and the ambient set; cwd retried after the uid switch when root
/// may not enter it; no_new_privs last. Async-signal-safe.
pub fn apply(p: &Prepared) -> Result<(), Failure<'_>> {
    for (res, lim) in &p.rlimits {
        // SAFETY: valid pointer to an rlimit.
        check(unsafe { libc::setrlimit(*res, lim) }, "setrlimit")?;
    }
    if p.oom_score_adj.is_some() {
        write_oom_score_adj(&p.oom_score_adj_text);
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
    let r = unsafe { libc::setgroups(p.groups.len(), p.groups.as_ptr()) };
    check(r, "setgroups")?;
    // SAFETY: plain syscall.
    check(unsafe { libc::setgid(p.gid) }, "setgid")?;
    // SAFETY: plain syscall.
    check(unsafe { libc::setuid(p.uid) }, "setuid")?;
    if let Some(c) = &p.caps {
        caps::set_keepcaps(false)?;
        caps::apply_sets(c)?;
    }
    if !cwd_done {
        if let Some(c) = &p.cwd {
            if chdir(c) < 0 {
                return Err(Failure::last_on("chdir", c.to_bytes()));
            }
        }
    }
    if p.no_new_privs {
        // SAFETY: plain prctl with integer arguments.
        let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
        check(r, "prctl(NO_NEW_PRIVS)")?;
    }
    Ok(())
}

/// Reset the signal mask and every disposition to default (inherited across exec).
/// Async-signal-safe.
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

pub(crate) fn is_executable_file(c: &std::ffi::CStr) -> Result<(), i32> {
    // SAFETY: valid C string; stat into local storage.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::stat(c.as_ptr(), &mut st) != 0 {
            return Err(errno());
        }
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            return Err(libc::EACCES);
        }
        if libc::access(c.as_ptr(), libc::X_OK) != 0 {
            return Err(errno());
        }
    }
    Ok(())
}

/// Why [`try_exec`] came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecFailure {
    /// The errno of the failed execve, or of the best lookup candidate.
    pub errno: i32,
    /// `args[0]` had no `/` and no PATH entry held an executable of that name.
    pub not_in_path: bool,
}

impl ExecFailure {
    /// runc's exit status: 127 not found, 126 else.
    pub fn code(&self) -> i32 {
        if self.not_in_path {
            127
        } else {
            exec_failure_code(self.errno)
        }
    }

    /// Writes `<tag>: exec: "<arg0>": <reason>\n` to fd 2 (async-signal-safe).
    pub fn report(&self, p: &Prepared, tag: &str) {
        let mut m = StackMsg::new();
        m.push(tag.as_bytes())
            .push(b": exec: \"")
            .push(p.arg0.as_bytes())
            .push(b"\": ");
        if self.not_in_path {
            m.push(b"executable file not found in $PATH");
        } else {
            m.errno(self.errno);
        }
        m.push(b"\n").write_to(2);
    }
}

/// Resolve `args[0]` (PATH of the spec env, like Go's LookPath: a permission error is
/// kept as the answer if nothing better is found) and execve it with exactly the spec
/// env. Only returns on failure, silently. Async-signal-safe.
pub fn try_exec(p: &Prepared) -> ExecFailure {
    let (Some(argv), Some(envp)) = (p.argv_ptrs(), p.envp_ptrs()) else {
        return ExecFailure {
            errno: libc::EINVAL,
            not_in_path: false,
        };
    };
    let search = !p.arg0.contains('/');
    let mut first_err: Option<i32> = None;
    for c in &p.candidates {
        if search {
            if let Err(e) = is_executable_file(c) {
                if e != libc::ENOENT && e != libc::ENOTDIR && first_err.is_none() {
                    first_err = Some(e);
                }
                continue;
            }
        }
        // SAFETY: NUL-terminated argv/envp pointing into the Prepared's live CStrings.
        unsafe { libc::execve(c.as_ptr(), argv, envp) };
        return ExecFailure {
            errno: errno(),
            not_in_path: false,
        };
    }
    match first_err {
        Some(e) => ExecFailure {
            errno: e,
            not_in_path: false,
        },
        None => ExecFailure {
            errno: libc::ENOENT,
            not_in_path: true,
        },
    }
}

/// [`try_exec`], and on failure a runc-like message on fd 2 (`<tag>: exec: ...`);
/// returns the exit status to use (127 not found, 126 else). Async-signal-safe.
pub fn exec(p: &Prepared, tag: &str) -> i32 {
    let f = try_exec(p);
    f.report(p, tag);
    f.code()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn executable_check() {
        let d = std::env::temp_dir().join(format!("pvelxc-guest-ut-{}", std::process::id()));
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
        assert!(is_executable_file(c"/bin/sh").is_ok());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn exec_of_nothing_fails_cleanly() {
        let p = Prepared::default();
        assert_eq!(try_exec(&p).errno, libc::EINVAL);
        let f = ExecFailure {
            errno: libc::ENOENT,
            not_in_path: true,
        };
        assert_eq!(f.code(), 127);
    }
}
