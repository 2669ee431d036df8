//! `start`: give containerd the address of a task server for this container.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Stdio};

use std::path::Path;

use containerd_shim::Flags;
use nix::fcntl::{Flock, FlockArg};

use super::{bundle_of, group_of, socket_path};
use crate::error::{Error, Result};
use crate::options;

pub fn run(flags: &Flags) -> Result<()> {
    let mut stdin = Vec::new();
    let _ = std::io::stdin().take(1 << 20).read_to_end(&mut stdin);
    let ropts = options::decode_bytes(&stdin)?;
    let bundle = bundle_of(flags);
    let grouping = group_of(&bundle).unwrap_or_else(|| flags.id.clone());
    let address = containerd_shim::socket_address(&flags.address, &flags.namespace, &grouping);
    if let Some(listener) = bind_unless_served(socket_path(&address))? {
        spawn_server(flags, &bundle, &address, listener, &ropts)?;
    }
    std::fs::write(bundle.join("address"), &address).map_err(|e| Error::io("write address", e))?;
    let mut out = std::io::stdout().lock();
    out.write_all(address.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| Error::io("write the address to containerd", e))
}

/// A listening socket at `path`, or None when a server (the pod's) already listens there.
/// Under a lock on the socket directory, so that two containers of a pod starting at once
/// neither both serve nor remove each other's socket; a socket nobody listens on (its shim
/// died) is replaced.
fn bind_unless_served(path: &Path) -> Result<Option<UnixListener>> {
    if UnixStream::connect(path).is_ok() {
        return Ok(None);
    }
    let dir = path
        .parent()
        .ok_or_else(|| Error::invalid(format!("socket path {}", path.display())))?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let dir_fd =
        std::fs::File::open(dir).map_err(|e| Error::io(format!("open {}", dir.display()), e))?;
    let _lock = Flock::lock(dir_fd, FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::io(format!("lock {}", dir.display()), e.into()))?;
    match UnixStream::connect(path) {
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
    UnixListener::bind(path)
        .map(Some)
        .map_err(|e| Error::io(format!("bind {}", path.display()), e))
}

/// The server process, in its own process group, serving `listener` (its stdin).
fn spawn_server(
    flags: &Flags,
    bundle: &Path,
    address: &str,
    listener: UnixListener,
    ropts: &crate::options::RuntimeOptions,
) -> Result<()> {
    let exe = std::env::current_exe().map_err(|e| Error::io("current_exe", e))?;
    let mut cmd = Command::new(exe);
    cmd.current_dir(bundle)
        .stdin(Stdio::from(OwnedFd::from(listener)))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .args([
            "-namespace",
            &flags.namespace,
            "-id",
            &flags.id,
            "-address",
            &flags.address,
            "-socket",
            address,
        ]);
    if flags.debug {
        cmd.arg("-debug");
    }
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let child = cmd
        .spawn()
        .map_err(|e| Error::io("spawn the shim server", e))?;
    let pid = child.id();
    if let Some(cg) = ropts.shim_cgroup.as_deref() {
        if let Err(e) = containerd_shim::cgroup::add_task_to_cgroup(cg, pid) {
            log::warn!("cannot move shim into cgroup {cg}: {e}");
        }
    }
    if let Err(e) = containerd_shim::cgroup::adjust_oom_score(pid) {
        // Hosts without CAP_SYS_RESOURCE (nested, unprivileged) refuse this: not fatal.
        log::warn!("cannot adjust the shim's oom_score_adj: {e}");
    }
    Ok(())
}
