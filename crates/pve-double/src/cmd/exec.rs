//! `pct exec <vmid> [--keep-env] -- cmd...`: no lock; replaces itself with lxc-attach.

use super::{load_config, Ctx};
use crate::error::{die, Result};
use crate::getopt::Parsed;
use crate::lxc;

pub fn run(ctx: &Ctx, p: &Parsed) -> Result<()> {
    let (root, vmid) = (&ctx.root, p.vmid());
    load_config(root, vmid)?;
    if !lxc::is_running(root, vmid) {
        return Err(die(format!("container '{vmid}' not running!")));
    }
    if p.extra.is_empty() {
        return Err(die("missing command"));
    }
    let err = lxc::exec_attach(root, vmid, p.flag("keep-env"), &p.extra);
    Err(die(format!("exec failed: {err}")))
}
