//! The manager daemon: listens on `$ROOT/run/manager.sock`, runs units, reaps every child
//! (it is a child subreaper, as systemd is PID 1), logs to `$ROOT/run/manager.log`
//! (its stderr, set up by pve-shape).

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde_json::json;

use super::{read_line, unit, Request};
use crate::error::{die, Context, Result};
use crate::paths::Root;

/// Shared state: which unit runs which lxc-start, and exits seen by the reaper.
#[derive(Default)]
struct State {
    /// vmid -> pid of its lxc-start while it runs
    units: HashMap<u32, i32>,
    /// pids reaped since they were spawned (pid -> exit description)
    exited: HashMap<i32, String>,
}

struct Manager {
    root: Root,
    state: Mutex<State>,
    /// held while spawning and while reaping: std's spawn waits for a child whose exec
    /// failed, which must not race with waitpid(-1)
    spawn_lock: Mutex<()>,
}

pub fn log(msg: &str) {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{t:.3} {msg}");
}

/// Run the manager (never returns on success).
pub fn run(root: Root) -> Result<()> {
    // SAFETY: prctl with integer arguments has no memory-safety preconditions.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let sock = root.manager_socket();
    if sock.as_os_str().len() >= 108 {
        return Err(die(format!(
            "socket path '{}' is too long for a unix socket",
            sock.display()
        )));
    }
    let _ = std::fs::remove_file(&sock);
    let listener =
        UnixListener::bind(&sock).ctx(|| format!("unable to listen on '{}'", sock.display()))?;
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600))
        .ctx(|| format!("unable to chmod '{}'", sock.display()))?;
    log(&format!(
        "manager {} listening on {}",
        std::process::id(),
        sock.display()
    ));
    let m = Arc::new(Manager {
        root,
        state: Mutex::new(State::default()),
        spawn_lock: Mutex::new(()),
    });
    let reaper = Arc::clone(&m);
    std::thread::spawn(move || reap_loop(&reaper));
    for conn in listener.incoming() {
        match conn {
            Ok(c) => {
                let m = Arc::clone(&m);
                std::thread::spawn(move || handle(&m, c));
            }
            Err(e) => log(&format!("accept failed: {e}")),
        }
    }
    Ok(())
}

fn reap_loop(m: &Manager) {
    loop {
        {
            let _g = m.spawn_lock.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(pid, code)) => {
                        reaped(m, pid.as_raw(), format!("exit status {code}"))
                    }
                    Ok(WaitStatus::Signaled(pid, sig, _)) => {
                        reaped(m, pid.as_raw(), format!("signal {sig}"))
                    }
                    Ok(WaitStatus::StillAlive) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn reaped(m: &Manager, pid: i32, how: String) {
    let mut st = m.state.lock().unwrap_or_else(|p| p.into_inner());
    let unit = st.units.iter().find(|(_, p)| **p == pid).map(|(v, _)| *v);
    if let Some(vmid) = unit {
        st.units.remove(&vmid);
        if st.exited.len() > 256 {
            st.exited.clear(); // bounded: only a start in progress still needs its entry
        }
        st.exited.insert(pid, how.clone());
        log(&format!(
            "pve-container@{vmid}.service: lxc-start {pid} ended ({how})"
        ));
        unit::remove_cgroups(vmid);
    } else {
        log(&format!("reaped orphan {pid} ({how})"));
    }
}

fn reply(c: &mut UnixStream, v: serde_json::Value) {
    let _ = c.write_all(format!("{v}\n").as_bytes());
}

fn handle(m: &Manager, mut c: UnixStream) {
    match getsockopt(&c, PeerCredentials) {
        Ok(cred) if cred.uid() == 0 => {}
        Ok(cred) => {
            log(&format!("refused peer uid {}", cred.uid()));
            return reply(&mut c, json!({"ok": false, "error": "permission denied"}));
        }
        Err(e) => {
            log(&format!("no peer credentials: {e}"));
            return;
        }
    }
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let line = match read_line(&c) {
        Ok(l) => l,
        Err(e) => {
            return reply(
                &mut c,
                json!({"ok": false, "error": format!("bad request: {e}")}),
            )
        }
    };
    match Request::parse(&line) {
        Err(e) => {
            log(&format!("bad request: {e}"));
            reply(&mut c, json!({"ok": false, "error": e}))
        }
        Ok(Request::Ping) => reply(&mut c, json!({"ok": true, "pid": std::process::id()})),
        Ok(Request::Start { vmid, timeout_ms }) => {
            let r = start_unit(m, vmid, Duration::from_millis(timeout_ms));
            reply(&mut c, r)
        }
    }
}

fn start_unit(m: &Manager, vmid: u32, timeout: Duration) -> serde_json::Value {
    let unit_name = format!("pve-container@{vmid}.service");
    if let Some(pid) = m
        .state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .units
        .get(&vmid)
    {
        return json!({"ok": false, "unit_ran": false,
            "error": format!("{unit_name} is still active (lxc-start {pid})")});
    }
    let stderr = match crate::lxc::start_files(&m.root, vmid) {
        Ok(f) => f,
        Err(e) => return json!({"ok": false, "unit_ran": false, "error": e.to_string()}),
    };
    let (cg_fds, cg_log) = unit::prepare_cgroups(vmid);
    for l in cg_log.iter().chain(unit::rlimit_shortfalls().iter()) {
        log(&format!("{unit_name}: {l}"));
    }
    let pid = {
        let _g = m.spawn_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut cmd = unit::command(&m.root, vmid, stderr, &cg_fds);
        match cmd.spawn() {
            Ok(child) => {
                let pid = child.id() as i32;
                m.state
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .units
                    .insert(vmid, pid);
                pid
            }
            Err(e) => {
                log(&format!("{unit_name}: unable to run lxc-start - {e}"));
                unit::remove_cgroups(vmid);
                return json!({"ok": false, "unit_ran": false,
                    "error": format!("unable to run lxc-start - {e}")});
            }
        }
    };
    drop(cg_fds);
    log(&format!("{unit_name}: started lxc-start {pid}"));
    let mut exited = || {
        m.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .exited
            .contains_key(&pid)
    };
    let ok = crate::lxc::wait_started(&m.root, vmid, timeout, &mut exited);
    if ok {
        m.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .exited
            .remove(&pid);
        return json!({"ok": true, "pid": pid});
    }
    if !exited() {
        log(&format!(
            "{unit_name}: init not started in time, killing {pid}"
        ));
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    m.state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .exited
        .remove(&pid);
    json!({"ok": false, "unit_ran": true, "error": format!("{unit_name} failed")})
}
