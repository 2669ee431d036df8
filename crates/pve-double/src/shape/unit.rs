//! `pve-shape unit VMID`: the ExecStart of the double's `pve-container@.service` on a host
//! whose PID 1 is systemd (crates/pve-double/systemd/). systemd has set up the unit as for
//! Proxmox's (environment, rlimits, cgroup, stdout /dev/null); this finds the CT's double root
//! (registered by `pct start`), sends stderr to the CT's stderr file (Proxmox's unit:
//! `StandardError=file:/run/pve/ct-%i.stderr`, which the shape's /run/pve is), joins the
//! root's shape and execs `lxc-start -F` with the argv the stand-in manager uses.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use super::ns::{self, Res};
use super::read_setting;
use crate::paths::Root;

pub fn exec_lxc_start(vmid: u32) -> Res<()> {
    let root = crate::manager::systemd::registered_root(vmid)?;
    if !ns::is_active(&root) {
        return Err(format!(
            "the shape of '{}' is not up (no live '{}')",
            root.display(),
            ns::ns_file(&root).display()
        ));
    }
    let r = Root {
        node: read_setting(&root, "node").unwrap_or_else(|| "pve".into()),
        root,
    };
    let stderr = crate::lxc::start_files(&r, vmid).map_err(|e| e.to_string())?;
    // SAFETY: dup2 of an fd we own onto stderr; nothing else uses fd 2 concurrently (pve-shape
    // is single-threaded).
    if unsafe { libc::dup2(stderr.as_raw_fd(), 2) } < 0 {
        return Err(format!(
            "unable to redirect stderr - {}",
            std::io::Error::last_os_error()
        ));
    }
    drop(stderr);
    ns::enter(&r.root)?;
    let argv = crate::lxc::start_argv(&r, vmid);
    let e = Command::new(&argv[0])
        .args(&argv[1..])
        .current_dir(Path::new("/"))
        .exec();
    Err(format!("unable to run lxc-start - {e}"))
}
