//! `pct config <vmid> [--current] [--snapshot NAME]`.

use std::io::Write;

use super::{load_config, Ctx};
use crate::conf::PctConfig;
use crate::error::{die, Result};
use crate::getopt::Parsed;

pub fn run(ctx: &Ctx, p: &Parsed) -> Result<()> {
    let vmid = p.vmid();
    let conf = load_config(&ctx.root, vmid)?;
    let text = match p.opt("snapshot") {
        Some(name) => {
            let Some((_, s)) = conf.snapshots.iter().find(|(n, _)| n == name) else {
                return Err(die(format!("snapshot '{name}' does not exist")));
            };
            PctConfig {
                main: s.clone(),
                ..Default::default()
            }
            .print_for_cli(false)
        }
        None => conf.print_for_cli(p.flag("current")),
    };
    // env may contain NULs: write raw bytes
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    Ok(())
}
