//! `containerd-shim-pvelxc-v2 gc [--all] [--config FILE]`: prune the pct backend's templates.
//! Without `--all`, least recently used templates go until `[pct] template_max_gib` holds (what
//! every create does after packing); with `--all`, every template no create is using right now
//! (a template leased by a running `pct create` is kept). Then the template CTs (linked clones'
//! origin, `backend::pct::linked`) whose packed template is gone — every one with `--all` —
//! are destroyed unless a clone of theirs exists or a create is cloning them. Prints what it
//! removed.

use anyhow::Context;

use crate::backend::pct::{linked, template};
use crate::config::Config;

pub fn main(args: &[String]) -> i32 {
    match run(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("containerd-shim-pvelxc-v2 gc: {e:#}");
            2
        }
    }
}

fn run(args: &[String]) -> anyhow::Result<()> {
    let mut all = false;
    let mut config_path: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--all" => all = true,
            "--config" => config_path = Some(it.next().context("--config needs a file")?.clone()),
            other => {
                anyhow::bail!("unknown argument {other:?} (usage: gc [--all] [--config FILE])")
            }
        }
    }
    let cfg = Config::load(config_path.as_deref())
        .context("load the configuration")?
        .config
        .pct;
    let dir = template::template_dir(&cfg);
    if !dir.is_dir() {
        println!(
            "gc: no template directory {} (nothing to do)",
            dir.display()
        );
        return Ok(());
    }
    let report = if all {
        template::collect_all(&cfg)
    } else {
        template::collect_garbage(&cfg)
    }
    .with_context(|| format!("prune templates in {}", dir.display()))?;
    for p in &report.removed {
        println!("gc: removed {}", p.display());
    }
    println!(
        "gc: {} removed, {} in use kept, {} MiB of templates left in {}",
        report.removed.len(),
        report.in_use,
        report.total >> 20,
        dir.display()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start a runtime")?;
    let cts = rt
        .block_on(async {
            // pct calls are reaped by the SIGCHLD task
            crate::sys::reaper::start()?;
            linked::gc::collect(&cfg, all)
                .await
                .map_err(anyhow::Error::from)
        })
        .context("prune template CTs")?;
    for v in &cts.removed {
        println!("gc: removed template CT {v}");
    }
    println!(
        "gc: {} template CTs removed, {} in use kept",
        cts.removed.len(),
        cts.in_use
    );
    if !cts.failed.is_empty() {
        anyhow::bail!("{}", cts.failed.join("; "));
    }
    Ok(())
}
