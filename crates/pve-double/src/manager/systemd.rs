//! Real systemd as the service manager: on a host whose PID 1 is systemd and which has the
//! double's `pve-container@.service` installed (the lab host, `scripts/lab.sh`), `pct start`
//! is `systemctl start pve-container@<vmid>` as on Proxmox VE, and lxc-start runs as that
//! unit (systemd's environment, rlimits, cgroup `system.slice/system-pve\x2dcontainer.slice/
//! pve-container@<vmid>.service`, stdout /dev/null) instead of under pve-shape's stand-in.
//!
//! The unit knows only the VMID (`%i`), so `pct start` registers the CT's double root first
//! (`/run/pve-double/ct/<vmid>`: VMIDs are host-global anyway, see the README); the unit's
//! `ExecStart=pve-shape unit %i` reads it, joins that root's shape and execs lxc-start
//! (`crate::shape::unit`).

use std::fs;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::StartError;
use crate::error::{Context, Result};
use crate::paths::Root;

/// Where the double's unit must be installed for systemd mode.
pub const UNIT_FILE: &str = "/etc/systemd/system/pve-container@.service";
/// VMID -> double root registry read by the unit.
pub const REGISTRY: &str = "/run/pve-double/ct";
/// Bound for one systemctl call.
const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(30);

/// Is systemd PID 1 here (sd_booted) with the double's unit installed?
pub fn available() -> std::result::Result<(), String> {
    if !Path::new("/run/systemd/system").is_dir() {
        return Err("systemd is not PID 1 here (no /run/systemd/system)".into());
    }
    if !Path::new(UNIT_FILE).is_file() {
        return Err(format!(
            "{UNIT_FILE} is not installed (crates/pve-double/systemd/pve-container@.service)"
        ));
    }
    Ok(())
}

fn registry_path(vmid: u32) -> PathBuf {
    Path::new(REGISTRY).join(vmid.to_string())
}

/// Record which double root VMID belongs to (atomically: the unit may read it at any time).
pub fn register(root: &Root, vmid: u32) -> Result<()> {
    fs::create_dir_all(REGISTRY).ctx(|| format!("unable to create '{REGISTRY}'"))?;
    let p = registry_path(vmid);
    let tmp = p.with_extension("tmp");
    let mut text = root.root.as_os_str().as_encoded_bytes().to_vec();
    text.push(b'\n');
    fs::write(&tmp, text).ctx(|| format!("unable to write '{}'", tmp.display()))?;
    fs::rename(&tmp, &p).ctx(|| format!("unable to write '{}'", p.display()))
}

/// The double root registered for VMID (absolute, an existing directory).
pub fn registered_root(vmid: u32) -> std::result::Result<PathBuf, String> {
    let p = registry_path(vmid);
    let t = fs::read_to_string(&p).map_err(|e| {
        format!(
            "CT {vmid} has no double root registered ('{}': {e})",
            p.display()
        )
    })?;
    let r = PathBuf::from(t.trim_end_matches('\n'));
    if !r.is_absolute() || !r.is_dir() {
        return Err(format!(
            "'{}' names '{}', not an existing absolute directory",
            p.display(),
            r.display()
        ));
    }
    Ok(r)
}

/// Remove the registrations that point at `root` (pve-shape stop).
pub fn unregister_root(root: &Path) {
    let Ok(rd) = fs::read_dir(REGISTRY) else {
        return;
    };
    for e in rd.flatten() {
        let points_here = fs::read_to_string(e.path())
            .map(|t| Path::new(t.trim_end_matches('\n')) == root)
            .unwrap_or(false);
        if points_here {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// `systemctl ARGS` with a bound; Ok(stdout) on success, Err(message) otherwise.
fn systemctl(args: &[&str]) -> std::result::Result<String, String> {
    let what = format!("systemctl {}", args.join(" "));
    let mut child = Command::new("systemctl")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("unable to run {what} - {e}"))?;
    let deadline = Instant::now() + SYSTEMCTL_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{what} did not return within {} s",
                    SYSTEMCTL_TIMEOUT.as_secs()
                ));
            }
            Err(e) => return Err(format!("{what}: wait failed - {e}")),
        }
    };
    // systemctl's output is a few lines: the pipes cannot have filled up while it ran
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    if status.success() {
        Ok(out)
    } else {
        Err(format!("{what} failed ({status}): {}", err.trim()))
    }
}

/// A pidfd for `pid` (None: no such process any more).
fn pidfd(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes two integers and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just gave us this fd and nobody else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Has the process behind `fd` ended? (A pidfd polls readable once it has.)
fn ended(fd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, timeout 0.
    unsafe { libc::poll(&mut p, 1, 0) > 0 }
}

/// `systemctl start pve-container@<vmid>`, then wait (bounded) until LXC logged that init was
/// started, like the stand-in manager; a unit that ends first or overruns is a failed start.
pub fn start(root: &Root, vmid: u32, timeout: Duration) -> std::result::Result<(), StartError> {
    register(root, vmid).map_err(|e| StartError::Manager(e.to_string()))?;
    let unit = format!("pve-container@{vmid}.service");
    systemctl(&["start", &unit]).map_err(StartError::Manager)?;
    let main_pid = systemctl(&["show", "-p", "MainPID", "--value", &unit])
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .filter(|p| *p > 0);
    // MainPID 0: the unit already ended (lxc-start failed at once)
    let fd = main_pid.and_then(pidfd);
    let mut exited = || fd.as_ref().map(ended).unwrap_or(true);
    if crate::lxc::wait_started(root, vmid, timeout, &mut exited) {
        crate::lxc::wait_running(root, vmid);
        return Ok(());
    }
    if !exited() {
        let _ = systemctl(&["kill", "--signal=SIGKILL", &unit]);
    }
    Err(StartError::Failed)
}

/// The mode a shape records for its root (`$ROOT/manager`): `systemd` or `double`.
pub fn choose() -> std::result::Result<&'static str, String> {
    match std::env::var("PVE_DOUBLE_SERVICE_MANAGER").as_deref() {
        Ok("systemd") => available()
            .map(|()| "systemd")
            .map_err(|e| format!("PVE_DOUBLE_SERVICE_MANAGER=systemd: {e}")),
        Ok("double") => Ok("double"),
        Ok("") | Err(_) => Ok(if available().is_ok() {
            "systemd"
        } else {
            "double"
        }),
        Ok(other) => Err(format!(
            "PVE_DOUBLE_SERVICE_MANAGER: '{}' is neither systemd nor double",
            other.escape_debug()
        )),
    }
}

/// Does this root's shape use systemd (recorded by pve-shape in `$ROOT/manager`)?
pub fn is_used(root: &Root) -> bool {
    fs::read_to_string(root.root.join("manager"))
        .map(|t| t.trim() == "systemd")
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pidfd_sees_an_end() {
        let mut c = Command::new("true").spawn().unwrap();
        let fd = pidfd(c.id() as i32).unwrap();
        c.wait().unwrap();
        assert!(ended(&fd));
        let mut c = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let fd = pidfd(c.id() as i32).unwrap();
        assert!(!ended(&fd));
        drop(c.stdin.take());
        c.wait().unwrap();
        assert!(ended(&fd));
    }

    #[test]
    fn mode_from_the_environment() {
        // only the explicit values; auto depends on the host
        std::env::set_var("PVE_DOUBLE_SERVICE_MANAGER", "double");
        assert_eq!(choose(), Ok("double"));
        std::env::set_var("PVE_DOUBLE_SERVICE_MANAGER", "upstart");
        assert!(choose().unwrap_err().contains("neither systemd nor double"));
        std::env::remove_var("PVE_DOUBLE_SERVICE_MANAGER");
    }
}
