//! pct subcommands: schemas, dispatch and shared helpers.

use std::fs;
use std::io::Write;

use crate::conf::PctConfig;
use crate::error::{die, Context, Result};
use crate::faults::Faults;
use crate::getopt::{Opt, Parsed, Spec, Ty};
use crate::paths::Root;
use crate::profile::Profile;

pub mod clone;
pub mod config;
pub mod create;
pub mod destroy;
pub mod exec;
pub mod extract;
pub mod list;
pub mod misc;
pub mod set;
pub mod start;
pub mod status;
pub mod stop;
pub mod template;
pub mod validate;

/// Everything a subcommand needs.
pub struct Ctx {
    pub root: Root,
    pub faults: Faults,
    pub spec: Spec,
    pub profile: Profile,
}

/// pct's commands (for prefix resolution).
pub const COMMANDS: &[&str] = &[
    "clone", "config", "create", "destroy", "exec", "help", "list", "mount", "reboot", "resume",
    "set", "shutdown", "start", "status", "stop", "suspend", "template", "unlock", "unmount",
];

/// Lock values (`lock:` key).
pub const LOCKS: &[&str] = &[
    "backup",
    "create",
    "destroyed",
    "disk",
    "fstrim",
    "migrate",
    "mounted",
    "rollback",
    "snapshot",
    "snapshot-delete",
];

pub const OSTYPES: &[&str] = &[
    "debian",
    "devuan",
    "ubuntu",
    "centos",
    "fedora",
    "opensuse",
    "archlinux",
    "alpine",
    "gentoo",
    "nixos",
    "unmanaged",
];

const ARCHES: &[&str] = &["amd64", "i386", "arm64", "armhf", "riscv32", "riscv64"];

/// Options shared by create and set (the container config schema of the profile's
/// pve-container: no `entrypoint`/`env` before 6.0.15).
pub fn ct_opts(profile: Profile) -> Vec<Opt> {
    let mut v = vec![
        Opt::new("arch", Ty::Enum(ARCHES)),
        Opt::new("cmode", Ty::Enum(&["shell", "console", "tty"])),
        Opt::new("console", Ty::Bool),
        Opt::new("cores", Ty::Int(Some(1), Some(8192))),
        Opt::new("cpulimit", Ty::Num(Some(0.0), Some(8192.0))),
        Opt::new("cpuunits", Ty::Int(Some(0), Some(500_000))),
        Opt::new("debug", Ty::Bool),
        Opt::new("description", Ty::Str),
        Opt::indexed("dev", Ty::Str, 256),
        Opt::new("entrypoint", Ty::Str),
        Opt::new("env", Ty::Str),
        Opt::new("features", Ty::Str),
        Opt::new("hookscript", Ty::Str),
        Opt::new("hostname", Ty::Str),
        Opt::new("memory", Ty::Int(Some(16), None)),
        Opt::indexed("mp", Ty::Str, 256),
        Opt::new("nameserver", Ty::Str),
        Opt::indexed("net", Ty::Str, 32),
        Opt::new("onboot", Ty::Bool),
        Opt::new("ostype", Ty::Enum(OSTYPES)),
        Opt::new("protection", Ty::Bool),
        Opt::new("rootfs", Ty::Str),
        Opt::new("searchdomain", Ty::Str),
        Opt::new("startup", Ty::Str),
        Opt::new("swap", Ty::Int(Some(0), None)),
        Opt::new("tags", Ty::Str),
        Opt::new("template", Ty::Bool),
        Opt::new("timezone", Ty::Str),
        Opt::new("tty", Ty::Int(Some(0), Some(6))),
        Opt::new("unprivileged", Ty::Bool),
        Opt::indexed("unused", Ty::Str, 256),
    ];
    if !profile.has_entrypoint_env() {
        v.retain(|o| !matches!(o.name, "entrypoint" | "env"));
    }
    v
}

/// The parameter schema of a command.
pub fn spec_for(cmd: &'static str, profile: Profile) -> Spec {
    let vmid = vec![("vmid", Ty::Vmid)];
    let (args, extra_args, opts): (Vec<(&'static str, Ty)>, bool, Vec<Opt>) = match cmd {
        "create" => {
            let mut o = ct_opts(profile);
            o.extend([
                Opt::new("force", Ty::Bool),
                Opt::new("ha-managed", Ty::Bool),
                Opt::new("ignore-unpack-errors", Ty::Bool),
                Opt::new("password", Ty::Str),
                Opt::new("pool", Ty::Str),
                Opt::new("restore", Ty::Bool),
                Opt::new("ssh-public-keys", Ty::Str),
                Opt::new("start", Ty::Bool),
                Opt::new("storage", Ty::Str),
                Opt::new("unique", Ty::Bool),
            ]);
            (vec![("vmid", Ty::Vmid), ("ostemplate", Ty::Str)], false, o)
        }
        "set" => {
            let mut o = ct_opts(profile);
            o.extend([
                Opt::new("delete", Ty::Str),
                Opt::new("digest", Ty::Str),
                Opt::new("lock", Ty::Enum(LOCKS)),
                Opt::new("revert", Ty::Str),
            ]);
            (vmid, false, o)
        }
        "start" => (
            vmid,
            false,
            vec![Opt::new("debug", Ty::Bool), Opt::new("skiplock", Ty::Bool)],
        ),
        "stop" => (
            vmid,
            false,
            vec![
                Opt::new("overrule-shutdown", Ty::Bool),
                Opt::new("skiplock", Ty::Bool),
                Opt::new("timeout", Ty::Int(Some(0), None)),
            ],
        ),
        "shutdown" => (
            vmid,
            false,
            vec![
                Opt::new("forceStop", Ty::Bool),
                Opt::new("timeout", Ty::Int(Some(0), None)),
            ],
        ),
        "reboot" => (
            vmid,
            false,
            vec![Opt::new("timeout", Ty::Int(Some(0), None))],
        ),
        "destroy" => (
            vmid,
            false,
            vec![
                Opt::new("destroy-unreferenced-disks", Ty::Bool),
                Opt::new("force", Ty::Bool),
                Opt::new("purge", Ty::Bool),
            ],
        ),
        "status" => (vmid, false, vec![Opt::new("verbose", Ty::Bool)]),
        "clone" => (
            vec![("vmid", Ty::Vmid), ("newid", Ty::Vmid)],
            false,
            vec![
                Opt::new("bwlimit", Ty::Num(Some(0.0), None)),
                Opt::new("description", Ty::Str),
                Opt::new("full", Ty::Bool),
                Opt::new("hostname", Ty::Str),
                Opt::new("pool", Ty::Str),
                Opt::new("snapname", Ty::Str),
                Opt::new("storage", Ty::Str),
                Opt::new("target", Ty::Str),
            ],
        ),
        "config" => (
            vmid,
            false,
            vec![Opt::new("current", Ty::Bool), Opt::new("snapshot", Ty::Str)],
        ),
        "exec" => (vmid, true, vec![Opt::new("keep-env", Ty::Bool)]),
        "list" | "help" => (vec![], false, vec![]),
        // unlock, mount, unmount, suspend, resume, template
        _ => (vmid, false, vec![]),
    };
    Spec {
        tool: "pct",
        cmd,
        args,
        extra_args,
        opts,
    }
}

/// Run a resolved command.
pub fn run(ctx: &Ctx, cmd: &str, p: &Parsed) -> Result<()> {
    match cmd {
        "create" => create::run(ctx, p),
        "clone" => clone::run(ctx, p),
        "template" => template::run(ctx, p),
        "start" => start::run(ctx, p),
        "stop" => stop::stop(ctx, p),
        "shutdown" => stop::shutdown(ctx, p),
        "reboot" => stop::reboot(ctx, p),
        "destroy" => destroy::run(ctx, p),
        "status" => status::run(ctx, p),
        "list" => list::run(ctx),
        "config" => config::run(ctx, p),
        "set" => set::run(ctx, p),
        "exec" => exec::run(ctx, p),
        "unlock" => misc::unlock(ctx, p),
        "mount" => misc::mount(ctx, p),
        "unmount" => misc::unmount(ctx, p),
        "suspend" | "resume" => Err(die(
            "pve-double: suspend/resume (CRIU checkpoint/restore) is not supported; use lxc-freeze/lxc-unfreeze",
        )),
        "help" => {
            let mut out = String::from("USAGE: pct <COMMAND> [ARGS] [OPTIONS]\n");
            for c in COMMANDS {
                out.push_str(&format!("       {}\n", spec_for(c, ctx.profile).usage()));
            }
            print!("{out}");
            Ok(())
        }
        _ => Err(die(format!("unknown command '{cmd}'"))),
    }
}

pub fn config_exists(root: &Root, vmid: u32) -> bool {
    root.conf_path(vmid).exists()
}

/// Load a CT config; parse warnings go to stderr like PVE's.
pub fn load_config(root: &Root, vmid: u32) -> Result<PctConfig> {
    let path = root.conf_path(vmid);
    let text = match fs::read(&path) {
        Ok(t) => String::from_utf8_lossy(&t).into_owned(),
        Err(_) => {
            return Err(die(format!(
                "Configuration file '{}' does not exist",
                root.conf_display(vmid)
            )))
        }
    };
    let (mut conf, warnings) = PctConfig::parse(&text, vmid);
    for w in warnings {
        eprintln!("{w}");
    }
    // keys the profile's pve-container does not know are dropped with PVE's parse warning
    if !Profile::load(Some(&root.root))?.has_entrypoint_env() {
        for k in ["entrypoint", "env"] {
            if let Some(v) = conf.remove(k) {
                eprintln!("vm {vmid} - unable to parse config: {k}: {v}");
            }
            if let Some(p) = conf.pending.as_mut() {
                p.keys.remove(k);
            }
        }
    }
    Ok(conf)
}

/// Write a CT config atomically (temp file + rename, like pmxcfs' atomic writes).
pub fn write_config(root: &Root, vmid: u32, conf: &PctConfig) -> Result<()> {
    let path = root.conf_path(vmid);
    let tmp = root
        .conf_dir()
        .join(format!(".{vmid}.conf.tmp.{}", std::process::id()));
    {
        let mut f =
            fs::File::create(&tmp).ctx(|| format!("unable to write '{}'", tmp.display()))?;
        f.write_all(conf.to_text().as_bytes())
            .ctx(|| format!("unable to write '{}'", tmp.display()))?;
    }
    fs::rename(&tmp, &path).ctx(|| format!("unable to write '{}'", path.display()))
}

/// `CT is locked (<lock>)` unless unlocked.
pub fn check_lock(conf: &PctConfig) -> Result<()> {
    match conf.lock() {
        Some(l) => Err(die(format!("CT is locked ({l})"))),
        None => Ok(()),
    }
}

/// All VMIDs with a config file, sorted numerically.
pub fn all_vmids(root: &Root) -> Vec<u32> {
    let mut out: Vec<u32> = fs::read_dir(root.conf_dir())
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    let id = n.strip_suffix(".conf")?;
                    crate::vmid::parse_vmid(id).ok()
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn entrypoint_env_only_from_6_0_15() {
        for cmd in ["create", "set"] {
            let args: &[&str] = if cmd == "create" {
                &["100", "local:vztmpl/x.tar", "--entrypoint", "/bin/sh"]
            } else {
                &["100", "--entrypoint", "/bin/sh"]
            };
            let ok = spec_for(cmd, Profile::Pve91).parse(&v(args)).unwrap();
            assert_eq!(ok.opt("entrypoint"), Some("/bin/sh"));
            for p in [Profile::Pve8, Profile::Pve90] {
                let spec = spec_for(cmd, p);
                let (msg, code) = spec.parse(&v(args)).unwrap_err().render();
                assert_eq!(code, 255);
                assert_eq!(
                    msg,
                    format!(
                        "Unknown option: entrypoint\n400 unable to parse option\n\n{}\n",
                        spec.usage()
                    )
                );
                let e = spec
                    .parse(&v(&["100", "x", "--env", "A=1"]))
                    .unwrap_err()
                    .render()
                    .0;
                assert!(e.starts_with("Unknown option: env\n"), "{e}");
            }
        }
    }
}
