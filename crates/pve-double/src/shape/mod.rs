//! `pve-shape`: run a command inside a host shaped like a Proxmox VE node (see README).
//!
//! ```text
//! pve-shape --root R [--profile pve8|pve9.0|pve9.1] [--install lvm|zfs|btrfs] [--node pve]
//!           [--foreign-from VMID --foreign N] exec [--] CMD ARGS...
//! pve-shape --root R stop
//! pve-shape unit VMID        (ExecStart of the double's pve-container@.service)
//! ```

pub mod daemon;
pub mod ns;
pub mod unit;

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::fcntl::{Flock, FlockArg};

use crate::cluster::{self, Kind};
use crate::paths::{valid_node_name, Root};
use ns::Res;

pub const PROFILES: &[&str] = &["pve8", "pve9.0", "pve9.1"];
pub const INSTALLS: &[&str] = &["lvm", "zfs", "btrfs"];

/// Parsed command line.
#[derive(Debug, Default, PartialEq)]
pub struct Args {
    pub root: Option<PathBuf>,
    pub profile: Option<String>,
    pub install: Option<String>,
    pub node: Option<String>,
    pub foreign_from: Option<u32>,
    pub foreign: u32,
    pub action: Action,
}

#[derive(Debug, Default, PartialEq)]
pub enum Action {
    #[default]
    None,
    Exec(Vec<OsString>),
    Stop,
    /// internal: run the service manager (started by `exec`)
    Manager,
    /// `unit VMID`: what systemd runs for `pve-container@VMID` (see manager/systemd.rs)
    Unit(u32),
}

const USAGE: &str = "usage: pve-shape --root R [--profile pve8|pve9.0|pve9.1] [--install lvm|zfs|btrfs] [--node NAME] [--foreign-from VMID --foreign N] exec [--] CMD [ARGS...]\n       pve-shape --root R stop\n       pve-shape unit VMID";

pub fn parse_args(argv: &[OsString]) -> Res<Args> {
    let mut a = Args::default();
    let mut i = 0;
    while i < argv.len() {
        let arg = argv[i].to_string_lossy().into_owned();
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || -> Res<String> {
            if let Some(v) = inline.clone() {
                return Ok(v);
            }
            i += 1;
            argv.get(i)
                .map(|v| v.to_string_lossy().into_owned())
                .ok_or_else(|| format!("option {name} needs a value\n{USAGE}"))
        };
        match name.as_str() {
            "--root" => a.root = Some(PathBuf::from(value()?)),
            "--profile" => {
                let v = value()?;
                if !PROFILES.contains(&v.as_str()) {
                    return Err(format!(
                        "bad profile '{v}' (one of {})",
                        PROFILES.join(", ")
                    ));
                }
                a.profile = Some(v);
            }
            "--install" => {
                let v = value()?;
                if !INSTALLS.contains(&v.as_str()) {
                    return Err(format!(
                        "bad install '{v}' (one of {})",
                        INSTALLS.join(", ")
                    ));
                }
                a.install = Some(v);
            }
            "--node" => {
                let v = value()?;
                if !valid_node_name(&v) {
                    return Err(format!("bad node name '{v}'"));
                }
                a.node = Some(v);
            }
            "--foreign-from" => {
                let v = value()?;
                a.foreign_from =
                    Some(crate::vmid::parse_vmid(&v).map_err(|e| format!("--foreign-from: {e}"))?);
            }
            "--foreign" => {
                let v = value()?;
                a.foreign = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n <= 1000)
                    .ok_or_else(|| format!("--foreign: '{v}' is not a number 0..1000"))?;
            }
            "exec" => {
                let mut rest = &argv[i + 1..];
                if rest.first().map(|s| s == "--").unwrap_or(false) {
                    rest = &rest[1..];
                }
                if rest.is_empty() {
                    return Err(format!("exec needs a command\n{USAGE}"));
                }
                a.action = Action::Exec(rest.to_vec());
                break;
            }
            "stop" => a.action = Action::Stop,
            "unit" => {
                let v = argv
                    .get(i + 1)
                    .map(|v| v.to_string_lossy().into_owned())
                    .ok_or_else(|| format!("unit needs a VMID\n{USAGE}"))?;
                a.action =
                    Action::Unit(crate::vmid::parse_vmid(&v).map_err(|e| format!("unit: {e}"))?);
                break;
            }
            "__manager" => a.action = Action::Manager,
            _ => return Err(format!("unknown argument '{arg}'\n{USAGE}")),
        }
        i += 1;
    }
    if a.action == Action::None {
        return Err(format!("missing action (exec or stop)\n{USAGE}"));
    }
    if a.foreign > 0 && a.foreign_from.is_none() {
        return Err("--foreign N needs --foreign-from VMID".into());
    }
    Ok(a)
}

/// The root: given, absolute, an existing directory; canonical (mountinfo lists real paths).
fn resolve_root(a: &Args) -> Res<PathBuf> {
    let r = a
        .root
        .as_ref()
        .ok_or_else(|| format!("--root is required\n{USAGE}"))?;
    if !r.is_absolute() {
        return Err(format!(
            "--root must be an absolute path, got '{}'",
            r.display()
        ));
    }
    if !r.is_dir() {
        return Err(format!(
            "root '{}' does not exist or is not a directory",
            r.display()
        ));
    }
    fs::canonicalize(r).map_err(|e| format!("root '{}': {e}", r.display()))
}

fn shape_lock(root: &Path) -> Res<Flock<File>> {
    let p = root.join("shape.lock");
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .map_err(|e| format!("unable to open '{}' - {e}", p.display()))?;
    Flock::lock(f, FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("unable to lock '{}' - {e}", p.display()))
}

pub(crate) fn read_setting(root: &Path, name: &str) -> Option<String> {
    fs::read_to_string(root.join(name))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// A setting given again on a later `exec` must match the shape's.
fn check_same(root: &Path, name: &str, given: &Option<String>, default: Option<&str>) -> Res<()> {
    if let Some(g) = given {
        let have = read_setting(root, name).or(default.map(str::to_string));
        if have.as_deref() != Some(g.as_str()) {
            return Err(format!(
                "root '{}' is already shaped with {name} '{}' (run 'pve-shape --root {} stop' first)",
                root.display(),
                have.unwrap_or_else(|| "(none)".into()),
                root.display()
            ));
        }
    }
    Ok(())
}

/// First `exec`: the double's layout, settings, foreign guests.
fn init_root(root: &Path, a: &Args, node: &str) -> Res<()> {
    for (name, v) in [("profile", &a.profile), ("install", &a.install)] {
        if let Some(v) = v {
            fs::write(root.join(name), format!("{v}\n"))
                .map_err(|e| format!("unable to write '{}' - {e}", root.join(name).display()))?;
        }
    }
    fs::write(root.join("node"), format!("{node}\n"))
        .map_err(|e| format!("unable to write node - {e}"))?;
    // `pct start` of this shape: real systemd where it is PID 1 with the double's unit
    // installed, else the stand-in (recorded: the shim's pct calls run with its own env)
    let manager = crate::manager::systemd::choose()?;
    fs::write(root.join("manager"), format!("{manager}\n"))
        .map_err(|e| format!("unable to write manager - {e}"))?;
    let r = Root {
        root: root.to_path_buf(),
        node: node.to_string(),
    };
    r.ensure_layout().map_err(|e| e.to_string())?;
    // A node has its storage.cfg before anyone asks pct anything (the shim reads it first).
    crate::storage::cfg::ensure(&r).map_err(|e| e.to_string())?;
    let others: Vec<&str> = ["pve2", "pve3", "pve4"]
        .into_iter()
        .filter(|n| *n != node)
        .take(2)
        .collect();
    if let Some(from) = a.foreign_from {
        for i in 0..a.foreign {
            let vmid = from
                .checked_add(i)
                .filter(|v| *v <= 999_999_999)
                .ok_or("--foreign-from + --foreign leaves the VMID range")?;
            let fnode = others[((i / 2) % 2) as usize];
            let kind = if i % 2 == 0 { Kind::Lxc } else { Kind::Qemu };
            cluster::seed_foreign(&r, fnode, kind, vmid).map_err(|e| e.to_string())?;
        }
    }
    cluster::refresh_vmlist(&r).map_err(|e| e.to_string())
}

/// Does this shape start CTs through systemd (`$ROOT/manager`, written at the first exec)?
fn uses_systemd(root: &Path) -> bool {
    read_setting(root, "manager").as_deref() == Some("systemd")
}

fn exec(a: &Args, cmd: &[OsString]) -> Res<()> {
    let root = resolve_root(a)?;
    let lock = shape_lock(&root)?;
    let node;
    if ns::is_active(&root) {
        check_same(&root, "profile", &a.profile, None)?;
        check_same(&root, "install", &a.install, None)?;
        check_same(&root, "node", &a.node, Some("pve"))?;
        node = read_setting(&root, "node").unwrap_or_else(|| "pve".into());
        ns::enter(&root)?;
        if !uses_systemd(&root) && daemon::ping(&root).is_err() {
            daemon::spawn(&root)?; // the manager died: start a new one
        }
    } else {
        node = a.node.clone().unwrap_or_else(|| "pve".into());
        let _ = daemon::kill(&root); // a manager of an earlier shape of this root
        init_root(&root, a, &node)?;
        ns::create(&root)?;
        ns::enter(&root)?;
        if !uses_systemd(&root) {
            daemon::spawn(&root)?;
        }
    }
    drop(lock);
    let mut c = Command::new(&cmd[0]);
    c.args(&cmd[1..])
        .env("PVE_DOUBLE_ROOT", &root)
        .env("PVE_DOUBLE_NODE", &node);
    for (file, var) in [
        ("profile", "PVE_DOUBLE_PROFILE"),
        ("install", "PVE_DOUBLE_INSTALL"),
    ] {
        if let Some(v) = read_setting(&root, file) {
            c.env(var, v);
        }
    }
    let e = c.exec();
    let code = if e.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    eprintln!("pve-shape: cannot run '{}' - {e}", cmd[0].to_string_lossy());
    std::process::exit(code)
}

fn stop(a: &Args) -> Res<()> {
    let root = resolve_root(a)?;
    let _lock = shape_lock(&root)?;
    let node = read_setting(&root, "node").unwrap_or_else(|| "pve".into());
    let r = Root {
        root: root.clone(),
        node,
    };
    let mut vmids: Vec<u32> = fs::read_dir(r.lxc_path())
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| crate::vmid::parse_vmid(&e.file_name().to_string_lossy()).ok())
                .collect()
        })
        .unwrap_or_default();
    vmids.sort_unstable();
    let mut errors = Vec::new();
    for vmid in &vmids {
        if crate::lxc::is_running(&r, *vmid) {
            match crate::lxc::stop_kill(&r, *vmid) {
                Ok(()) => eprintln!("pve-shape: stopped CT {vmid}"),
                Err(e) => errors.push(format!("CT {vmid}: {e}")),
            }
        }
    }
    // let the manager reap its lxc-start processes before it goes
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while daemon::lxc_starts_of(&r.lxc_path()) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    if let Err(e) = daemon::kill(&root) {
        errors.push(e);
    }
    for vmid in &vmids {
        crate::manager::unit::remove_cgroups(*vmid);
    }
    crate::manager::systemd::unregister_root(&root);
    if let Err(e) = ns::release(&root) {
        errors.push(e);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Entry point of the `pve-shape` binary; returns the exit status.
pub fn main(argv: &[OsString]) -> i32 {
    let res = parse_args(argv.get(1..).unwrap_or(&[])).and_then(|a| {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("must be run as root".into());
        }
        match &a.action {
            Action::Exec(cmd) => exec(&a, cmd),
            Action::Stop => stop(&a),
            Action::Manager => daemon::run_manager(&resolve_root(&a)?),
            Action::Unit(vmid) => unit::exec_lxc_start(*vmid),
            Action::None => Err(USAGE.into()),
        }
    });
    match res {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("pve-shape: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Res<Args> {
        parse_args(&v.iter().map(OsString::from).collect::<Vec<_>>())
    }

    #[test]
    fn parsing() {
        let a = args(&[
            "--root",
            "/tmp/x",
            "--profile=pve9.1",
            "--foreign-from",
            "960100",
            "--foreign",
            "3",
            "exec",
            "--",
            "pct",
            "list",
        ])
        .unwrap();
        assert_eq!(a.root, Some(PathBuf::from("/tmp/x")));
        assert_eq!(a.profile.as_deref(), Some("pve9.1"));
        assert_eq!(a.foreign, 3);
        assert_eq!(a.action, Action::Exec(vec!["pct".into(), "list".into()]));
        assert_eq!(
            args(&["--root", "/r", "stop"]).unwrap().action,
            Action::Stop
        );
        assert!(args(&["--root", "/r", "--profile", "pve7", "stop"])
            .unwrap_err()
            .starts_with("bad profile 'pve7'"));
        assert!(args(&["--root", "/r", "--install", "ext4", "stop"]).is_err());
        assert!(args(&["--root", "/r", "--node", "a/b", "stop"]).is_err());
        assert!(args(&["--root", "/r", "exec"]).is_err());
        assert_eq!(
            args(&["unit", "960123"]).unwrap().action,
            Action::Unit(960123)
        );
        assert!(args(&["unit", "../1"]).is_err());
        assert!(args(&["unit"]).is_err());
        assert!(args(&["--root", "/r"]).is_err());
        assert!(args(&["--root", "/r", "--foreign", "2", "stop"]).is_err());
        assert!(args(&["--root", "/r", "--foreign-from", "99", "stop"]).is_err());
    }
}
