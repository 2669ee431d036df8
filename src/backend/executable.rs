//! Whether a process's `args[0]` can be executed inside a rootfs, checked from the host before
//! anything is created (backends whose init only execs the user's program at Start).
//!
//! Resolution follows execvp(3): a name with a slash is a path (relative ones against the
//! process's cwd), a bare name is searched in the process env's PATH. Symlinks are followed
//! inside the rootfs (an absolute target is relative to the rootfs; `..` never leaves it).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::Process;

use crate::error::{Error, Result};

/// execvp's PATH when the environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Symlinks followed before giving up (Linux: 40).
const MAX_HOPS: usize = 40;

#[derive(Debug, PartialEq, Eq)]
enum Found {
    Executable,
    /// Exists but execve would fail with EACCES (not a regular file, or no execute bit).
    NotExecutable,
    Missing,
}

fn push_front(todo: &mut VecDeque<OsString>, p: &Path) {
    for c in p.components().rev() {
        match c {
            Component::Normal(n) => todo.push_front(n.to_os_string()),
            Component::ParentDir => todo.push_front(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
}

/// The host path of `path` (absolute, in the rootfs's terms) with every symlink resolved inside
/// `root`; None when a component is missing, not a directory, or the links loop.
fn resolve(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut cur: Vec<OsString> = Vec::new();
    let mut todo: VecDeque<OsString> = VecDeque::new();
    push_front(&mut todo, path);
    let mut hops = 0usize;
    while let Some(name) = todo.pop_front() {
        if name == ".." {
            cur.pop();
            continue;
        }
        let mut host = root.to_path_buf();
        host.extend(&cur);
        host.push(&name);
        let md = std::fs::symlink_metadata(&host).ok()?;
        if md.file_type().is_symlink() {
            hops += 1;
            if hops > MAX_HOPS {
                return None;
            }
            let target = std::fs::read_link(&host).ok()?;
            if target.is_absolute() {
                cur.clear();
            }
            push_front(&mut todo, &target);
        } else {
            cur.push(name);
        }
    }
    let mut host = root.to_path_buf();
    host.extend(&cur);
    Some(host)
}

fn probe(root: &Path, path: &Path) -> Found {
    let Some(host) = resolve(root, path) else {
        return Found::Missing;
    };
    match std::fs::symlink_metadata(&host) {
        Ok(md) if md.is_file() && md.permissions().mode() & 0o111 != 0 => Found::Executable,
        Ok(_) => Found::NotExecutable,
        Err(_) => Found::Missing,
    }
}

/// Fail when `process.args[0]` could not be executed inside `root`.
pub fn check(root: &Path, process: &Process) -> Result<()> {
    let name = process
        .args()
        .as_ref()
        .and_then(|a| a.first())
        .filter(|a| !a.is_empty())
        .ok_or_else(|| Error::invalid("the process has no args"))?;
    let cwd = Path::new("/").join(process.cwd());
    if name.contains('/') {
        let path = cwd.join(name);
        return match probe(root, &path) {
            Found::Executable => Ok(()),
            Found::NotExecutable => Err(Error::precondition(format!(
                "exec: {name:?}: permission denied"
            ))),
            Found::Missing => Err(Error::precondition(format!(
                "exec: {name:?}: no such file or directory"
            ))),
        };
    }
    let path_var = process
        .env()
        .as_ref()
        .and_then(|env| env.iter().rev().find_map(|e| e.strip_prefix("PATH=")))
        .unwrap_or(DEFAULT_PATH);
    let mut denied = false;
    for dir in path_var.split(':') {
        // An empty entry means the current directory.
        let dir = if dir.is_empty() { "." } else { dir };
        match probe(root, &cwd.join(dir).join(name)) {
            Found::Executable => return Ok(()),
            Found::NotExecutable => {
                // execvp skips directories silently but remembers EACCES for files.
                if let Some(host) = resolve(root, &cwd.join(dir).join(name)) {
                    if !host.is_dir() {
                        denied = true;
                    }
                }
            }
            Found::Missing => {}
        }
    }
    if denied {
        return Err(Error::precondition(format!(
            "exec: {name:?}: permission denied"
        )));
    }
    Err(Error::precondition(format!(
        "exec: {name:?}: executable file not found in $PATH"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::ProcessBuilder;
    use std::os::unix::fs::symlink;

    fn proc_(args: &[&str], env: Option<&[&str]>, cwd: &str) -> Process {
        let mut b = ProcessBuilder::default()
            .args(args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .cwd(cwd);
        if let Some(env) = env {
            b = b.env(env.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        }
        b.build().expect("process")
    }

    fn exe(p: &Path, mode: u32) {
        std::fs::write(p, b"#!/bin/true\n").expect("write");
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        let r = d.path();
        for sub in ["bin", "usr/bin", "usr/local/bin", "opt/app", "home"] {
            std::fs::create_dir_all(r.join(sub)).expect("mkdir");
        }
        exe(&r.join("bin/busybox"), 0o755);
        // Absolute symlink: relative to the rootfs, not the host.
        symlink("/bin/busybox", r.join("bin/sh")).expect("ln");
        // Relative symlink through a directory.
        symlink("../../bin/busybox", r.join("usr/bin/sleep")).expect("ln");
        // Chain of links.
        symlink("sleep", r.join("usr/bin/snooze")).expect("ln");
        exe(&r.join("opt/app/run"), 0o644);
        std::fs::create_dir(r.join("usr/local/bin/tool")).expect("mkdir");
        exe(&r.join("usr/bin/tool"), 0o700);
        // Escapes: must stay inside the rootfs.
        symlink("../../../../../../../bin/busybox", r.join("usr/bin/up")).expect("ln");
        symlink("/../../etc/passwd", r.join("usr/bin/passwd")).expect("ln");
        symlink("loop2", r.join("usr/bin/loop1")).expect("ln");
        symlink("loop1", r.join("usr/bin/loop2")).expect("ln");
        symlink("/nowhere", r.join("usr/bin/dangling")).expect("ln");
        exe(&r.join("home/script"), 0o755);
        d
    }

    fn msg(r: Result<()>) -> String {
        match r {
            Err(Error::FailedPrecondition(m)) => m,
            other => panic!("expected FailedPrecondition, got {other:?}"),
        }
    }

    #[test]
    fn found() {
        let d = tree();
        let r = d.path();
        for args in [
            &["sh", "-c", "true"][..],
            &["/bin/sh"],
            &["sleep", "1"],
            &["snooze"],
            &["busybox"],
            &["/usr/bin/sleep"],
            &["up"],
            &["tool"],
        ] {
            check(r, &proc_(args, None, "/")).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
        check(r, &proc_(&["./script"], None, "/home")).expect("relative to cwd");
        check(r, &proc_(&["../bin/sh"], None, "/home")).expect("relative with ..");
        check(r, &proc_(&["script"], Some(&["PATH=/home"]), "/")).expect("env PATH");
        check(r, &proc_(&["script"], Some(&["PATH="]), "/home")).expect("empty entry = cwd");
    }

    #[test]
    fn missing() {
        let d = tree();
        let r = d.path();
        let m = msg(check(r, &proc_(&["nothing"], None, "/")));
        assert_eq!(m, "exec: \"nothing\": executable file not found in $PATH");
        let m = msg(check(r, &proc_(&["/bin/nothing"], None, "/")));
        assert!(m.contains("no such file or directory"), "{m}");
        // The host's /etc/passwd exists; the rootfs's does not.
        msg(check(r, &proc_(&["passwd"], None, "/")));
        msg(check(r, &proc_(&["/etc/passwd"], None, "/")));
        msg(check(r, &proc_(&["loop1"], None, "/")));
        msg(check(r, &proc_(&["dangling"], None, "/")));
        msg(check(r, &proc_(&["/bin/sh/x"], None, "/")));
        // PATH from env replaces the default.
        msg(check(r, &proc_(&["sh"], Some(&["PATH=/home"]), "/")));
        msg(check(r, &proc_(&["script"], None, "/")));
        assert!(matches!(
            check(r, &proc_(&[], None, "/")),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn not_executable() {
        let d = tree();
        let r = d.path();
        let m = msg(check(r, &proc_(&["/opt/app/run"], None, "/")));
        assert!(m.contains("permission denied"), "{m}");
        let m = msg(check(r, &proc_(&["run"], Some(&["PATH=/opt/app"]), "/")));
        assert!(m.contains("permission denied"), "{m}");
        let m = msg(check(r, &proc_(&["/usr/local/bin/tool"], None, "/")));
        assert!(m.contains("permission denied"), "{m}");
        // A directory named like the binary alone is "not found".
        let m = msg(check(
            r,
            &proc_(&["tool"], Some(&["PATH=/usr/local/bin"]), "/"),
        ));
        assert!(m.contains("not found in $PATH"), "{m}");
        let m = msg(check(r, &proc_(&["bin"], None, "/")));
        assert!(m.contains("not found"), "{m}");
    }
}
