//! pve-double: a faithful test double of Proxmox VE's `pct` and `pvesh`, backed by real LXC.
//!
//! See README.md for the contract, the state layout and fault injection.

pub mod calls;
pub mod cluster;
pub mod cmd;
pub mod conf;
pub mod error;
pub mod faults;
pub mod getopt;
pub mod idmap;
pub mod latency;
pub mod lock;
pub mod lxc;
pub mod lxcconf;
pub mod manager;
pub mod paths;
pub mod profile;
pub mod propstr;
pub mod pvesh;
pub mod pveversion;
pub mod shape;
pub mod storage;
pub mod vmid;

use std::io::Write;

use error::{PveError, Result};

fn finish(res: Result<()>) -> i32 {
    let _ = std::io::stdout().flush();
    match res {
        Ok(()) => 0,
        Err(e) => {
            let (msg, code) = e.render();
            if !msg.is_empty() {
                let mut err = std::io::stderr().lock();
                let _ = err.write_all(msg.as_bytes());
                let _ = err.flush();
            }
            code
        }
    }
}

fn pct(argv: &[String]) -> Result<()> {
    let root = paths::Root::from_env()?;
    let args = argv.get(1..).unwrap_or(&[]);
    calls::record(&root, "pct", args);
    latency::pause(Some(&root.root));
    let profile = profile::Profile::load(Some(&root.root))?;
    storage::cfg::ensure(&root)?;
    let faults = faults::Faults::load(&root);
    let Some(first) = args.first() else {
        return Err(PveError::UnknownCommand {
            tool: "pct".into(),
            cmdline: "pct".into(),
        });
    };
    let Some(cmd) = getopt::resolve_command(cmd::COMMANDS, first) else {
        return Err(PveError::UnknownCommand {
            tool: "pct".into(),
            cmdline: format!("pct {first}"),
        });
    };
    if let Some(d) = faults.delay(cmd) {
        std::thread::sleep(d);
    }
    let spec = cmd::spec_for(cmd, profile);
    let parsed = spec.parse(&args[1..])?;
    let vmid = parsed.args.contains_key("vmid").then(|| parsed.vmid());
    if let Some(msg) = faults.failure(cmd, vmid) {
        return Err(error::die(msg));
    }
    let ctx = cmd::Ctx {
        root,
        faults,
        spec,
        profile,
    };
    cmd::run(&ctx, cmd, &parsed)
}

/// Entry point of the `pct` binary; returns the exit status.
pub fn pct_main(argv: &[String]) -> i32 {
    finish(pct(argv))
}

fn pvesh(argv: &[String]) -> Result<()> {
    let root = paths::Root::from_env()?;
    let args = argv.get(1..).unwrap_or(&[]);
    calls::record(&root, "pvesh", args);
    latency::pause(Some(&root.root));
    profile::Profile::load(Some(&root.root))?;
    storage::cfg::ensure(&root)?;
    let faults = faults::Faults::load(&root);
    if let Some(d) = faults.delay("pvesh") {
        std::thread::sleep(d);
    }
    pvesh::run(&root, &faults, args)
}

/// Entry point of the `pvesh` binary; returns the exit status.
pub fn pvesh_main(argv: &[String]) -> i32 {
    finish(pvesh(argv))
}

fn pveversion(argv: &[String]) -> Result<()> {
    // pveversion works without PVE_DOUBLE_ROOT (profile from the environment then)
    let root = match std::env::var_os("PVE_DOUBLE_ROOT") {
        Some(_) => Some(paths::Root::from_env()?),
        None => None,
    };
    let args = argv.get(1..).unwrap_or(&[]);
    if let Some(r) = &root {
        calls::record(r, "pveversion", args);
    }
    let root_dir = root.as_ref().map(|r| r.root.as_path());
    latency::pause(root_dir);
    let profile = profile::Profile::load(root_dir)?;
    let out = pveversion::run(profile, &pveversion::kernel_release(), args)?;
    print!("{out}");
    Ok(())
}

/// Entry point of the `pveversion` binary; returns the exit status.
pub fn pveversion_main(argv: &[String]) -> i32 {
    finish(pveversion(argv))
}
