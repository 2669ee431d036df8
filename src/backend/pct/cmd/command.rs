//! `pct` and `pvesh` invocations and their argv.

use std::ffi::OsString;

use super::super::vmid::Vmid;
use super::values::storage_id;
use super::{b, invalid, plain, prop_value, push, CloneArgs, CmdError, CreateArgs, CtOptions};

fn check_template(t: &str) -> Result<(), CmdError> {
    plain("ostemplate", t)?;
    const EXT: [&str; 5] = [".tar", ".tar.gz", ".tar.xz", ".tar.zst", ".tar.bz2"];
    let has_ext = EXT.iter().any(|e| t.ends_with(e)) || t.ends_with(".tgz");
    let ok = if t.starts_with('/') {
        has_ext
    } else {
        match t.split_once(':') {
            Some((st, rest)) => {
                storage_id("ostemplate", st).is_ok() && rest.starts_with("vztmpl/") && has_ext
            }
            None => false,
        }
    };
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "ostemplate",
            format!(
                "{t:?} is neither STORAGE:vztmpl/NAME.tar[.gz|.xz|.zst|.bz2] nor an absolute path"
            ),
        ))
    }
}

/// Keys `pct set --delete` may name.
fn check_delete_key(k: &str) -> Result<(), CmdError> {
    if matches!(k, "memory" | "rootfs" | "ostype") {
        return Err(invalid(
            "delete",
            format!("unable to delete required option '{k}'"),
        ));
    }
    if k == "unprivileged" {
        return Err(invalid(
            "delete",
            "unable to modify read-only option: 'unprivileged'",
        ));
    }
    let ok = !k.is_empty()
        && k.starts_with(|c: char| c.is_ascii_lowercase())
        && k.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(invalid("delete", format!("bad option name {k:?}")))
    }
}

/// A pct invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum PctCommand {
    Create(Box<CreateArgs>),
    Start {
        vmid: Vmid,
        skiplock: bool,
    },
    /// Immediate stop (`lxc-stop --kill`).
    Stop {
        vmid: Vmid,
        skiplock: bool,
        overrule_shutdown: bool,
    },
    /// Clean shutdown (`lxc.signal.halt`, then wait `timeout` s, then kill if `force_stop`).
    Shutdown {
        vmid: Vmid,
        timeout: Option<u32>,
        force_stop: bool,
    },
    Destroy {
        vmid: Vmid,
        purge: bool,
        force: bool,
    },
    Status {
        vmid: Vmid,
        verbose: bool,
    },
    List,
    Config {
        vmid: Vmid,
        current: bool,
    },
    Set {
        vmid: Vmid,
        options: Box<CtOptions>,
        delete: Vec<String>,
    },
    /// `pct exec VMID [--keep-env 0|1] -- args...`.
    Exec {
        vmid: Vmid,
        keep_env: Option<bool>,
        args: Vec<OsString>,
    },
    Unlock {
        vmid: Vmid,
    },
    /// Turn a stopped CT into a template (its volumes become base volumes).
    Template {
        vmid: Vmid,
    },
    /// A linked (or full) clone of a CT or template.
    Clone(Box<CloneArgs>),
}

impl PctCommand {
    pub fn subcommand(&self) -> &'static str {
        match self {
            PctCommand::Create(_) => "create",
            PctCommand::Start { .. } => "start",
            PctCommand::Stop { .. } => "stop",
            PctCommand::Shutdown { .. } => "shutdown",
            PctCommand::Destroy { .. } => "destroy",
            PctCommand::Status { .. } => "status",
            PctCommand::List => "list",
            PctCommand::Config { .. } => "config",
            PctCommand::Set { .. } => "set",
            PctCommand::Exec { .. } => "exec",
            PctCommand::Unlock { .. } => "unlock",
            PctCommand::Template { .. } => "template",
            PctCommand::Clone(_) => "clone",
        }
    }

    pub fn vmid(&self) -> Option<Vmid> {
        match self {
            PctCommand::Create(c) => Some(c.vmid),
            PctCommand::Clone(c) => Some(c.vmid),
            PctCommand::List => None,
            PctCommand::Start { vmid, .. }
            | PctCommand::Stop { vmid, .. }
            | PctCommand::Shutdown { vmid, .. }
            | PctCommand::Destroy { vmid, .. }
            | PctCommand::Status { vmid, .. }
            | PctCommand::Config { vmid, .. }
            | PctCommand::Set { vmid, .. }
            | PctCommand::Exec { vmid, .. }
            | PctCommand::Unlock { vmid }
            | PctCommand::Template { vmid } => Some(*vmid),
        }
    }

    /// Whether pct takes the per-CT config flock (so it can fail with a lock timeout): every
    /// worker task, and `set`.
    pub fn takes_lock(&self) -> bool {
        self.is_worker_task() || matches!(self, PctCommand::Set { .. })
    }

    /// Whether pct runs it as a worker task (progress on stdout, `TASK ERROR`, warnings).
    pub fn is_worker_task(&self) -> bool {
        matches!(
            self,
            PctCommand::Create(_)
                | PctCommand::Start { .. }
                | PctCommand::Stop { .. }
                | PctCommand::Shutdown { .. }
                | PctCommand::Destroy { .. }
                | PctCommand::Template { .. }
                | PctCommand::Clone(_)
        )
    }

    /// Arguments after the program name.
    pub fn argv(&self) -> Result<Vec<OsString>, CmdError> {
        let mut a: Vec<OsString> = vec![self.subcommand().into()];
        if let Some(v) = self.vmid() {
            a.push(v.to_string().into());
        }
        match self {
            PctCommand::Create(c) => {
                check_template(&c.ostemplate)?;
                a.push(c.ostemplate.clone().into());
                if let Some(s) = &c.storage {
                    storage_id("storage", s)?;
                    push(&mut a, "storage", s.as_str());
                }
                if let Some(u) = c.unprivileged {
                    push(&mut a, "unprivileged", b(u));
                }
                if let Some(p) = &c.pool {
                    prop_value("pool", p)?;
                    push(&mut a, "pool", p.as_str());
                }
                if c.force {
                    push(&mut a, "force", "1");
                }
                if c.start {
                    push(&mut a, "start", "1");
                }
                if !c.options.mps.is_empty() && c.options.rootfs.is_none() {
                    return Err(invalid(
                        "rootfs",
                        "mount points configured, but 'rootfs' not set - aborting",
                    ));
                }
                c.options.render(&mut a)?;
            }
            PctCommand::Start { skiplock, .. } => {
                if *skiplock {
                    push(&mut a, "skiplock", "1");
                }
            }
            PctCommand::Stop {
                skiplock,
                overrule_shutdown,
                ..
            } => {
                if *skiplock {
                    push(&mut a, "skiplock", "1");
                }
                if *overrule_shutdown {
                    push(&mut a, "overrule-shutdown", "1");
                }
            }
            PctCommand::Shutdown {
                timeout,
                force_stop,
                ..
            } => {
                if let Some(t) = timeout {
                    push(&mut a, "timeout", t.to_string());
                }
                if *force_stop {
                    push(&mut a, "forceStop", "1");
                }
            }
            PctCommand::Destroy { purge, force, .. } => {
                if *force {
                    push(&mut a, "force", "1");
                }
                if *purge {
                    push(&mut a, "purge", "1");
                }
            }
            PctCommand::Status { verbose, .. } => {
                if *verbose {
                    push(&mut a, "verbose", "1");
                }
            }
            PctCommand::List | PctCommand::Unlock { .. } | PctCommand::Template { .. } => {}
            PctCommand::Clone(c) => c.render(&mut a)?,
            PctCommand::Config { current, .. } => {
                if *current {
                    push(&mut a, "current", "1");
                }
            }
            PctCommand::Set {
                options, delete, ..
            } => {
                let before = a.len();
                options.render(&mut a)?;
                if !delete.is_empty() {
                    for k in delete {
                        check_delete_key(k)?;
                    }
                    push(&mut a, "delete", delete.join(","));
                }
                if a.len() == before {
                    return Err(invalid("set", "no options specified"));
                }
            }
            PctCommand::Exec { keep_env, args, .. } => {
                if args.is_empty() {
                    return Err(invalid("exec", "missing command"));
                }
                if args.iter().any(|x| x.as_encoded_bytes().contains(&0)) {
                    return Err(invalid("exec", "argument contains a NUL byte"));
                }
                if let Some(k) = keep_env {
                    push(&mut a, "keep-env", b(*k));
                }
                a.push("--".into());
                a.extend(args.iter().cloned());
            }
        }
        Ok(a)
    }
}

/// A pvesh invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PveshCommand {
    /// `pvesh get /cluster/nextid [--vmid N]` (with a vmid: is it free?). Reserves nothing.
    NextId { vmid: Option<Vmid> },
}

impl PveshCommand {
    pub fn argv(&self) -> Result<Vec<OsString>, CmdError> {
        match self {
            PveshCommand::NextId { vmid } => {
                let mut a: Vec<OsString> = vec!["get".into(), "/cluster/nextid".into()];
                if let Some(v) = vmid {
                    push(&mut a, "vmid", v.to_string());
                }
                Ok(a)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{
        Arch, Features, Hostname, IpConfig, MountPoint, NetSpec, OsType, Rootfs, Tag,
    };
    use super::*;

    fn v(n: u32) -> Vmid {
        Vmid::new(n).unwrap()
    }

    fn s(a: Vec<OsString>) -> Vec<String> {
        a.into_iter().map(|x| x.into_string().unwrap()).collect()
    }

    #[test]
    fn create_full() {
        let mut c = CreateArgs::new(v(1001), "local:vztmpl/pvelxc-abc.tar.zst");
        c.unprivileged = Some(true);
        let o = &mut c.options;
        o.rootfs = Some(Rootfs::Alloc {
            storage: "local-lvm".into(),
            size_gib: 4,
        });
        o.hostname = Some(Hostname::sanitize("default_web"));
        o.memory_mb = Some(512);
        o.swap_mb = Some(0);
        o.cores = Some(2);
        o.cpulimit = Some(1.5);
        o.cpuunits = Some(1024);
        let mut n = NetSpec::new(0, "eth0");
        n.bridge = Some("vmbr0".into());
        n.ip = Some(IpConfig::Dhcp);
        o.nets.push(n);
        o.features = Some(Features {
            nesting: Some(true),
            keyctl: Some(true),
            mount: vec!["nfs".into(), "cifs".into()],
            ..Default::default()
        });
        o.ostype = Some(OsType::Unmanaged);
        o.arch = Some(Arch::Amd64);
        let mut mp = MountPoint::bind(0, "/run/pvelxc/default/web", "/.pvelxc");
        mp.ro = true;
        o.mps.push(mp);
        o.entrypoint = Some("/.pvelxc/init".into());
        o.env = Some("PVELXC=1".into());
        o.description = Some("namespace: default\nid: web\n".into());
        o.tags = vec![Tag::new("pvelxc").unwrap(), Tag::sanitize("default")];
        let a = s(PctCommand::Create(Box::new(c)).argv().unwrap());
        assert_eq!(
            a,
            [
                "create",
                "1001",
                "local:vztmpl/pvelxc-abc.tar.zst",
                "--unprivileged",
                "1",
                "--rootfs",
                "local-lvm:4",
                "--hostname",
                "default-web",
                "--memory",
                "512",
                "--swap",
                "0",
                "--cores",
                "2",
                "--cpulimit",
                "1.5",
                "--cpuunits",
                "1024",
                "--net0",
                "name=eth0,bridge=vmbr0,ip=dhcp,type=veth",
                "--mp0",
                "/run/pvelxc/default/web,mp=/.pvelxc,ro=1",
                "--features",
                "nesting=1,keyctl=1,mount=nfs;cifs",
                "--ostype",
                "unmanaged",
                "--arch",
                "amd64",
                "--entrypoint",
                "/.pvelxc/init",
                "--env",
                "PVELXC=1",
                "--description",
                "namespace: default\nid: web\n",
                "--tags",
                "pvelxc;default",
            ]
        );
    }

    #[test]
    fn create_validation() {
        let base = || CreateArgs::new(v(101), "local:vztmpl/x.tar");
        let bad = |c: CreateArgs| PctCommand::Create(Box::new(c)).argv().unwrap_err();
        let mut c = base();
        c.ostemplate = "x.tar".into();
        bad(c);
        let mut c = base();
        c.ostemplate = "local:iso/x.iso".into();
        bad(c);
        assert!(
            PctCommand::Create(Box::new(CreateArgs::new(v(101), "/tmp/t.tar.gz")))
                .argv()
                .is_ok()
        );
        let mut c = base();
        c.options.mps.push(MountPoint::bind(0, "/a", "/b"));
        assert!(bad(c).to_string().contains("'rootfs' not set"));
        let mut c = base();
        c.options.memory_mb = Some(8);
        bad(c);
        let mut c = base();
        c.options.cores = Some(0);
        bad(c);
        let mut c = base();
        c.options.env = Some("NOEQUALS".into());
        bad(c);
        let mut c = base();
        c.options.description = Some("nul\0".into());
        bad(c);
        let mut c = base();
        c.options.nets = vec![NetSpec::new(0, "eth0"), NetSpec::new(0, "eth1")];
        bad(c);
        let mut c = base();
        c.options.rootfs = Some(Rootfs::Alloc {
            storage: "Local".into(),
            size_gib: 1,
        });
        bad(c);
    }

    #[test]
    fn lifecycle_commands() {
        let cases: Vec<(PctCommand, Vec<&str>)> = vec![
            (
                PctCommand::Start {
                    vmid: v(101),
                    skiplock: false,
                },
                vec!["start", "101"],
            ),
            (
                PctCommand::Stop {
                    vmid: v(101),
                    skiplock: true,
                    overrule_shutdown: true,
                },
                vec!["stop", "101", "--skiplock", "1", "--overrule-shutdown", "1"],
            ),
            (
                PctCommand::Shutdown {
                    vmid: v(101),
                    timeout: Some(10),
                    force_stop: true,
                },
                vec!["shutdown", "101", "--timeout", "10", "--forceStop", "1"],
            ),
            (
                PctCommand::Destroy {
                    vmid: v(101),
                    purge: true,
                    force: true,
                },
                vec!["destroy", "101", "--force", "1", "--purge", "1"],
            ),
            (
                PctCommand::Status {
                    vmid: v(101),
                    verbose: true,
                },
                vec!["status", "101", "--verbose", "1"],
            ),
            (PctCommand::List, vec!["list"]),
            (
                PctCommand::Config {
                    vmid: v(101),
                    current: false,
                },
                vec!["config", "101"],
            ),
            (PctCommand::Unlock { vmid: v(101) }, vec!["unlock", "101"]),
            (
                PctCommand::Exec {
                    vmid: v(101),
                    keep_env: Some(false),
                    args: vec![
                        "/.pvelxc/init".into(),
                        "exec".into(),
                        "/.pvelxc/exec-a b.json".into(),
                    ],
                },
                vec![
                    "exec",
                    "101",
                    "--keep-env",
                    "0",
                    "--",
                    "/.pvelxc/init",
                    "exec",
                    "/.pvelxc/exec-a b.json",
                ],
            ),
        ];
        for (c, want) in cases {
            assert_eq!(s(c.argv().unwrap()), want, "{c:?}");
        }
        assert!(PctCommand::Exec {
            vmid: v(101),
            keep_env: None,
            args: vec![]
        }
        .argv()
        .is_err());
        assert!(PctCommand::Start {
            vmid: v(101),
            skiplock: false
        }
        .takes_lock());
        assert!(!PctCommand::Exec {
            vmid: v(101),
            keep_env: None,
            args: vec![]
        }
        .takes_lock());
        assert!(!PctCommand::List.is_worker_task());
    }

    #[test]
    fn set_command() {
        let mut o = CtOptions {
            memory_mb: Some(1024),
            entrypoint: Some("/.pvelxc/init".into()),
            ..Default::default()
        };
        o.mps
            .push(MountPoint::bind(0, "/run/pvelxc/ns/id", "/.pvelxc"));
        let c = PctCommand::Set {
            vmid: v(150),
            options: Box::new(o),
            delete: vec!["net0".into(), "description".into()],
        };
        assert_eq!(
            s(c.argv().unwrap()),
            [
                "set",
                "150",
                "--memory",
                "1024",
                "--mp0",
                "/run/pvelxc/ns/id,mp=/.pvelxc",
                "--entrypoint",
                "/.pvelxc/init",
                "--delete",
                "net0,description"
            ]
        );
        let empty = PctCommand::Set {
            vmid: v(150),
            options: Box::default(),
            delete: vec![],
        };
        assert!(empty
            .argv()
            .unwrap_err()
            .to_string()
            .contains("no options specified"));
        for k in ["memory", "rootfs", "ostype", "unprivileged", "Bad", "a,b"] {
            let c = PctCommand::Set {
                vmid: v(150),
                options: Box::default(),
                delete: vec![k.into()],
            };
            assert!(c.argv().is_err(), "{k}");
        }
    }

    #[test]
    fn pvesh() {
        assert_eq!(
            s(PveshCommand::NextId { vmid: None }.argv().unwrap()),
            ["get", "/cluster/nextid"]
        );
        assert_eq!(
            s(PveshCommand::NextId { vmid: Some(v(123)) }.argv().unwrap()),
            ["get", "/cluster/nextid", "--vmid", "123"]
        );
    }
}
