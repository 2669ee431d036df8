//! The pct backend's test host: a private containerd whose shims drive the pve-double `pct`
//! (real LXC underneath), inside a host shaped like a Proxmox node (`pve-shape`: /run noexec,
//! /etc/pve the double's cluster tree, foreign guests holding the first VMIDs of the range).
//! Every [`Pve`] has its own `PVE_DOUBLE_ROOT`, state dir and VMID range; `PVE_PROFILE`
//! (pve8, pve9.0, pve9.1) picks the Proxmox version the double plays.

use super::*;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

pub const T: Duration = Duration::from_secs(60);
/// Foreign guests (other nodes' CTs and VMs) seeded at the bottom of every test's VMID range.
pub const FOREIGN: u32 = 10;

/// The PVE version profile the double plays (`PVE_PROFILE`: pve8, pve9.0, pve9.1).
pub fn profile() -> String {
    std::env::var("PVE_PROFILE").unwrap_or_else(|_| "pve9.1".into())
}

pub fn shape_bin() -> PathBuf {
    let p = shim_dir().join("pve-shape");
    assert!(
        p.is_file(),
        "{} missing: cargo build --release -p pve-double",
        p.display()
    );
    p
}

/// The static init: `PVELXC_INIT_BIN` (scripts/test.sh points it at the installed build), else
/// the `--target` release build.
pub fn static_init() -> PathBuf {
    let p = std::env::var_os("PVELXC_INIT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            target_dir()
                .join("x86_64-unknown-linux-gnu")
                .join("release")
                .join("pvelxc-init")
        });
    assert!(
        p.is_file(),
        "static init missing: {} (see this file's header)",
        p.display()
    );
    p
}

pub fn pct_bin() -> PathBuf {
    let p = shim_dir().join("pct");
    assert!(
        p.is_file(),
        "{} missing: cargo build --release -p pve-double",
        p.display()
    );
    p
}

/// `pve-shape … exec --`: the test's host shape over `root`, with `foreign` foreign guests from
/// VMID `lo`.
pub fn shape_argv(root: &std::path::Path, lo: u32, foreign: u32) -> Vec<std::ffi::OsString> {
    vec![
        shape_bin().into_os_string(),
        "--root".into(),
        root.as_os_str().to_owned(),
        "--profile".into(),
        profile().into(),
        "--foreign-from".into(),
        lo.to_string().into(),
        "--foreign".into(),
        foreign.to_string().into(),
        "exec".into(),
        "--".into(),
    ]
}

/// A shim config for the pct backend over the double root `root` (state in `root/ct`).
pub fn config_text(root: &std::path::Path, lo: u32, hi: u32, extra: &str) -> String {
    format!(
        "backend = \"pct\"\n[pct]\nvmid_min = {lo}\nvmid_max = {hi}\n\
         init_path = {init:?}\ntemplate_dir = {tpl:?}\ntimeout_secs = 60\n\
         state_dir = {st:?}\n{extra}",
        st = root.join("ct").display().to_string(),
        init = static_init().display().to_string(),
        tpl = root
            .join("storage/local/template/cache")
            .display()
            .to_string(),
    )
}

/// A private containerd whose default backend is pct, with its own double root and VMIDs,
/// running inside a host shaped like a Proxmox node (`pve-shape`: /run noexec, /etc/pve the
/// double's cluster tree with foreign guests holding the first VMIDs of the range).
pub struct Pve {
    env: Option<TestEnv>,
    pub root: PathBuf,
    pub state: PathBuf,
    pub lo: u32,
    pub hi: u32,
    /// Foreign guests seeded at `lo..lo+foreign` on other nodes.
    pub foreign: u32,
}

impl Pve {
    pub fn new(lo: u32, hi: u32) -> Pve {
        Self::with(lo, hi, "", true)
    }

    /// `config = false`: no config file at all (defaults), the backend chosen by annotation.
    pub fn with(lo: u32, hi: u32, extra: &str, config: bool) -> Pve {
        let root = tempfile::Builder::new()
            .prefix("pvr-")
            .tempdir_in("/tmp")
            .expect("double root")
            .keep();
        let state = root.join("ct");
        let foreign = FOREIGN.min((hi - lo + 1) / 3);
        let mut b = TestEnv::builder().wrap(shape_argv(&root, lo, foreign));
        if config {
            let cfg = root.join("pvelxc.toml");
            fs::write(&cfg, config_text(&root, lo, hi, extra)).expect("write config");
            b = b.env("PVELXC_CONFIG", &cfg);
        } else {
            // No config: the static init must sit next to the shim binary, so run a copy of
            // the shim from a private directory first on PATH.
            let dir = root.join("bin");
            fs::create_dir_all(&dir).expect("bin dir");
            fs::copy(shim_dir().join(SHIM_BINARY), dir.join(SHIM_BINARY)).expect("copy shim");
            fs::copy(static_init(), dir.join("pvelxc-init")).expect("copy init");
            let mut path = dir.into_os_string();
            path.push(":");
            path.push(shim_dir());
            path.push(":");
            path.push(std::env::var_os("PATH").unwrap_or_default());
            b = b.env("PATH", path);
        }
        Pve {
            env: Some(b.start()),
            root,
            state,
            lo,
            hi,
            foreign,
        }
    }

    pub fn env_mut(&mut self) -> &mut TestEnv {
        self.env.as_mut().expect("env")
    }

    pub fn env(&self) -> &TestEnv {
        self.env.as_ref().expect("env")
    }

    pub fn pct(&self, args: &[&str]) -> Output {
        run_cmd(self.shaped(pct_bin().as_os_str(), args), None, T)
    }

    /// A command run inside this test's host shape.
    pub fn shaped(&self, prog: &std::ffi::OsStr, args: &[&str]) -> Command {
        let mut c = Command::new(shape_bin());
        c.arg("--root")
            .arg(&self.root)
            .args(["exec", "--"])
            .arg(prog)
            .args(args);
        c
    }

    /// VMIDs `pct list` shows, the shim's template CTs (linked clones' origin) left out.
    pub fn list(&self) -> Vec<u32> {
        let t = self.templates();
        self.all_cts()
            .into_iter()
            .filter(|v| !t.contains(v))
            .collect()
    }

    /// Every VMID `pct list` shows.
    pub fn all_cts(&self) -> Vec<u32> {
        stdout(&self.pct(&["list"]))
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    }

    /// This node's template CTs of the shim (`template: 1`, tag `pvelxc-template`), read from
    /// the config files (not through pct: the call log stays the shim's).
    pub fn templates(&self) -> Vec<u32> {
        let dir = self.root.join("etc/pve/nodes/pve/lxc");
        let mut v: Vec<u32> = fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let id = e
                    .file_name()
                    .to_str()?
                    .strip_suffix(".conf")?
                    .parse()
                    .ok()?;
                let text = fs::read_to_string(e.path()).ok()?;
                let tpl = text.lines().any(|l| l == "template: 1")
                    && text.lines().any(|l| {
                        l.strip_prefix("tags: ")
                            .is_some_and(|t| t.split(';').any(|x| x == "pvelxc-template"))
                    });
                tpl.then_some(id)
            })
            .collect();
        v.sort_unstable();
        v
    }

    /// The double's rootfs accounting: (op, vmid, bytes) per created or cloned volume.
    pub fn rootfs_writes(&self) -> Vec<(String, u32, u64)> {
        fs::read_to_string(self.root.join("rootfs-writes.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                Some((
                    v.get("op")?.as_str()?.to_string(),
                    u32::try_from(v.get("vmid")?.as_u64()?).ok()?,
                    v.get("bytes")?.as_u64()?,
                ))
            })
            .collect()
    }

    pub fn calls(&self) -> Vec<Vec<String>> {
        fs::read_to_string(self.root.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                Some(
                    v.get("argv")?
                        .as_array()?
                        .iter()
                        .filter_map(|a| a.as_str().map(str::to_string))
                        .collect(),
                )
            })
            .collect()
    }

    pub fn state_dirs(&self) -> Vec<u32> {
        fs::read_dir(&self.state)
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                    .filter(|v| (self.lo..=self.hi).contains(v))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn reservations(&self) -> Vec<u32> {
        fs::read_to_string(self.state.join("vmid.reservations"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.parse::<u32>().ok())
            .filter(|v| (self.lo..=self.hi).contains(v))
            .collect()
    }

    /// No CT, no per-container dir, no reserved VMID, no volume left (the shim's template CTs
    /// and their base volumes stay: they are the images' linked-clone origins).
    pub fn assert_clean(&self) {
        wait_until("no CT, D dir or reservation left", T, || {
            (self.list().is_empty()
                && self.state_dirs().is_empty()
                && self.reservations().is_empty())
            .then_some(())
        });
        let vols: Vec<_> = fs::read_dir(self.root.join("storage/local-lvm"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name())
                    .filter(|n| !n.to_string_lossy().starts_with("base-"))
                    .collect()
            })
            .unwrap_or_default();
        assert!(vols.is_empty(), "volumes left: {vols:?}");
        // Foreign guests (other nodes' CTs and VMs in the range) are never touched.
        let vmlist = fs::read_to_string(self.root.join("etc/pve/.vmlist")).unwrap_or_default();
        for v in self.lo..self.lo + self.foreign {
            let on_other_node = ["pve2", "pve3"].iter().any(|n| {
                ["lxc", "qemu-server"].iter().any(|k| {
                    self.root
                        .join(format!("etc/pve/nodes/{n}/{k}/{v}.conf"))
                        .is_file()
                })
            });
            assert!(on_other_node, "foreign guest {v} lost its config");
            assert!(
                vmlist.contains(&format!("\"{v}\"")),
                "foreign guest {v} not in .vmlist"
            );
        }
    }
}

impl Drop for Pve {
    fn drop(&mut self) {
        drop(self.env.take());
        for v in self.all_cts() {
            let s = v.to_string();
            let _ = self.pct(&["destroy", &s, "--force", "1", "--purge", "1"]);
        }
        let mut stop = Command::new(shape_bin());
        stop.arg("--root").arg(&self.root).arg("stop");
        let _ = run_cmd(stop, None, T);
        if std::env::var_os("PVELXC_TEST_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

pub fn vmid_of(p: &Pve, name: &str) -> u32 {
    let out = stdout(&p.pct(&["list"]));
    out.lines()
        .find(|l| l.split_whitespace().last() == Some(name))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no CT named {name} in pct list:\n{out}"))
}
