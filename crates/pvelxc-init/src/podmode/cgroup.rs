//! Cgroups of pod containers. `container`: the helper makes `<its cgroup>/<name>` in every
//! hierarchy of `/proc/self/cgroup` (v1 `N:ctrl,...:/path`, v2 `0::/path`; found through
//! `/proc/self/mountinfo`), writes the limits that apply there and opens its `cgroup.procs`;
//! the child writes `0` (itself) into each. `exec-in`: the cgroups of a running process.
//!
//! A hierarchy the CT may not write (EACCES, EROFS, EPERM) is skipped unless it is where a
//! requested limit goes; a requested limit that no hierarchy takes is an error.

use super::cglimits::{limit_writes, requested, Limit, LimitWrite};
use super::read_bounded;
use super::sys;
use pvelxc_init::pod::CgroupSpec;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const MAX_CGROUP_FILE: u64 = 64 << 10;
const MAX_MOUNTINFO: u64 = 4 << 20;

/// One line of `/proc/<pid>/cgroup`; v2: id 0, no controllers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub id: u32,
    pub controllers: Vec<String>,
    pub path: String,
}

impl Hierarchy {
    fn v2(&self) -> bool {
        self.id == 0 && self.controllers.is_empty()
    }
}

pub fn parse_proc_cgroup(text: &str) -> Vec<Hierarchy> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let id = it.next()?.parse().ok()?;
            let ctrls = it.next()?;
            let path = it.next()?;
            Some(Hierarchy {
                id,
                controllers: ctrls
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(String::from)
                    .collect(),
                path: path.to_string(),
            })
        })
        .collect()
}

/// The fields of a `/proc/self/mountinfo` line a cgroup lookup needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub root: String,
    pub mountpoint: String,
    pub fstype: String,
    pub super_opts: Vec<String>,
}

/// mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct.iter().fold(0u32, |a, c| a * 8 + u32::from(c - b'0'));
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            Some(MountEntry {
                root: unescape(pre.get(3)?),
                mountpoint: unescape(pre.get(4)?),
                fstype: post.first()?.to_string(),
                super_opts: post.get(2)?.split(',').map(String::from).collect(),
            })
        })
        .collect()
}

/// Where the cgroup of `h` is in this mount namespace (None: its hierarchy is not mounted,
/// or the mount shows another part of it).
pub fn hierarchy_dir(h: &Hierarchy, mounts: &[MountEntry]) -> Option<PathBuf> {
    let m = mounts.iter().find(|m| {
        if h.v2() {
            m.fstype == "cgroup2"
        } else {
            m.fstype == "cgroup" && h.controllers.iter().all(|c| m.super_opts.contains(c))
        }
    })?;
    let rel = if m.root == "/" {
        h.path.as_str()
    } else {
        h.path
            .strip_prefix(m.root.as_str())
            .filter(|r| r.is_empty() || r.starts_with('/'))?
    };
    Some(Path::new(&m.mountpoint).join(rel.trim_start_matches('/')))
}

fn denied(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EACCES) | Some(libc::EROFS) | Some(libc::EPERM)
    )
}

fn write_file(path: &Path, val: &str) -> Result<(), String> {
    // O_TRUNC as a shell's `>`: cgroupfs ignores it, a plain file (unit tests) shows the
    // last value written.
    File::options()
        .write(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(val.as_bytes()))
        .map_err(|e| format!("cgroup: write {val:?} to {}: {e}", path.display()))
}

fn read_text(path: &Path) -> Result<String, String> {
    read_bounded(path, MAX_CGROUP_FILE).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// `cgroup.procs` files a process joins by writing `0`.
#[derive(Debug, Default)]
pub struct Procs(pub Vec<(PathBuf, File)>);

impl Procs {
    /// Move the calling process into each cgroup.
    pub fn join(&self) -> Result<(), String> {
        for (dir, f) in &self.0 {
            sys::write_all(f.as_raw_fd(), b"0")
                .map_err(|e| format!("cgroup: join {}: {e}", dir.display()))?;
        }
        Ok(())
    }
}

/// A container's cgroups, made by the helper.
#[derive(Debug, Default)]
pub struct Container {
    pub procs: Procs,
    /// The directories this helper made (removed again by [`Container::remove`]).
    pub created: Vec<PathBuf>,
}

impl Container {
    /// Best effort: rmdir of every cgroup made (fails while a process is still in it).
    pub fn remove(&self) {
        for d in self.created.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Make the container's cgroups below the helper's, with their limits.
pub fn create(spec: &CgroupSpec) -> Result<Container, String> {
    let hiers = parse_proc_cgroup(&read_text(Path::new("/proc/self/cgroup"))?);
    let mi = read_bounded(Path::new("/proc/self/mountinfo"), MAX_MOUNTINFO)?;
    let mounts = parse_mountinfo(&String::from_utf8_lossy(&mi));
    let mut c = Container::default();
    match create_in(spec, &hiers, &mounts, &mut c) {
        Ok(()) => Ok(c),
        Err(e) => {
            c.remove();
            Err(e)
        }
    }
}

/// [`create`] on given hierarchies and mounts (unit tests use a fake tree).
pub fn create_in(
    spec: &CgroupSpec,
    hiers: &[Hierarchy],
    mounts: &[MountEntry],
    c: &mut Container,
) -> Result<(), String> {
    let mut applied: Vec<Limit> = Vec::new();
    for h in hiers {
        let Some(parent) = hierarchy_dir(h, mounts) else {
            continue;
        };
        let writes = if h.v2() {
            let avail = read_text(&parent.join("cgroup.controllers")).unwrap_or_default();
            let avail: Vec<String> = avail.split_whitespace().map(String::from).collect();
            limit_writes(true, &avail, spec)
        } else {
            limit_writes(false, &h.controllers, spec)
        };
        if h.v2() {
            enable_controllers(&parent, &writes)?;
        }
        let dir = parent.join(&spec.name);
        match std::fs::create_dir(&dir) {
            Ok(()) => c.created.push(dir.clone()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) if denied(&e) && writes.is_empty() => continue,
            Err(e) => return Err(format!("cgroup: mkdir {}: {e}", dir.display())),
        }
        if h.controllers.iter().any(|x| x == "cpuset") {
            copy_cpuset(&parent, &dir)?;
        }
        for (_, file, val, covers) in &writes {
            write_file(&dir.join(file), val)?;
            applied.extend(covers);
        }
        let procs = dir.join("cgroup.procs");
        match File::options().write(true).open(&procs) {
            Ok(f) => c.procs.0.push((dir, f)),
            Err(e) if denied(&e) && writes.is_empty() => {}
            Err(e) => return Err(format!("cgroup: open {}: {e}", procs.display())),
        }
    }
    for l in requested(spec) {
        if !applied.contains(&l) {
            return Err(format!(
                "cgroup: {} requested but no writable hierarchy has its controller",
                l.name()
            ));
        }
    }
    Ok(())
}

/// cgroup v2: the controllers the limits need, enabled for the parent's children.
fn enable_controllers(parent: &Path, writes: &[LimitWrite]) -> Result<(), String> {
    let file = parent.join("cgroup.subtree_control");
    let on = read_text(&file).unwrap_or_default();
    let mut done: Vec<&str> = on.split_whitespace().collect();
    for (ctrl, ..) in writes {
        if !done.contains(ctrl) {
            write_file(&file, &format!("+{ctrl}"))?;
            done.push(ctrl);
        }
    }
    Ok(())
}

/// cgroup v1 cpuset: a new cgroup has no cpus or mems (no process may join) until set.
fn copy_cpuset(parent: &Path, dir: &Path) -> Result<(), String> {
    for f in ["cpuset.cpus", "cpuset.mems"] {
        if read_text(&dir.join(f))?.trim().is_empty() {
            write_file(&dir.join(f), read_text(&parent.join(f))?.trim())?;
        }
    }
    Ok(())
}

/// The `cgroup.procs` files of process `pid`'s cgroups, as this mount namespace shows them
/// (those it may not write are left out).
pub fn procs_of(pid: i32) -> Result<Procs, String> {
    let hiers = parse_proc_cgroup(&read_text(Path::new(&format!("/proc/{pid}/cgroup")))?);
    let mi = read_bounded(Path::new("/proc/self/mountinfo"), MAX_MOUNTINFO)?;
    let mounts = parse_mountinfo(&String::from_utf8_lossy(&mi));
    let mut p = Procs::default();
    for h in &hiers {
        let Some(dir) = hierarchy_dir(h, &mounts) else {
            continue;
        };
        let procs = dir.join("cgroup.procs");
        match File::options().write(true).open(&procs) {
            Ok(f) => p.0.push((dir, f)),
            Err(e) if denied(&e) || e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cgroup: open {}: {e}", procs.display())),
        }
    }
    Ok(p)
}

#[cfg(test)]
#[path = "cgroup_tests.rs"]
mod tests;
