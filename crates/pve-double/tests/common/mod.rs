//! Shared helpers of the LXC-backed integration tests (root required).
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const PCT: &str = env!("CARGO_BIN_EXE_pct");
pub const PVESH: &str = env!("CARGO_BIN_EXE_pvesh");
pub const PVEVERSION: &str = env!("CARGO_BIN_EXE_pveversion");

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The workspace's one skip helper (loud, counted, a failure under CI): see that file.
#[path = "../../../../tests/common/skip.rs"]
pub mod skip;

/// For tests on real LXC: true when the test may run; false after a skip (`skip::unavailable`,
/// suite `lxc`: a failure under `CI=true` or with `PVELXC_REQUIRE_LXC` set).
pub fn needs_lxc() -> bool {
    let why = if !is_root() {
        "needs root (real LXC)"
    } else if !std::path::Path::new("/usr/bin/lxc-start").exists() {
        "needs lxc-start (apt-get install lxc)"
    } else {
        return true;
    };
    skip::unavailable("lxc", &["PVELXC_REQUIRE_LXC"], why);
    false
}

/// A private PVE_DOUBLE_ROOT; on drop stops/destroys its CTs and removes everything.
pub struct Env {
    pub root: PathBuf,
    pub vmids: Vec<u32>,
}

impl Env {
    pub fn new(tag: &str, vmids: &[u32]) -> Env {
        let root = PathBuf::from(format!("/tmp/pve-double-it-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        let env = Env {
            root,
            vmids: vmids.to_vec(),
        };
        env.make_template();
        env
    }

    /// busybox-static rootfs packed as local:vztmpl/busybox.tar.
    pub fn make_template(&self) {
        self.pack("busybox.tar", |_| {}, &[]);
    }

    /// Pack a busybox rootfs, after `extra` added files to it, as local:vztmpl/NAME with
    /// extra tar arguments (e.g. `--owner=70000`).
    pub fn pack(&self, name: &str, extra: impl FnOnce(&Path), tar_args: &[&str]) {
        let r = self.root.join(format!("tpl-rootfs-{name}"));
        for d in [
            "bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "etc", "tmp", "root",
        ] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
        // Applet links made here, not by running the fresh copy (exec'ing a file another
        // test thread's fork may still hold open for writing fails with ETXTBSY).
        let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
        assert!(list.status.success());
        for a in String::from_utf8_lossy(&list.stdout).split_whitespace() {
            if a != "busybox" {
                let _ = std::os::unix::fs::symlink("busybox", r.join("bin").join(a));
            }
        }
        fs::write(r.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        extra(&r);
        let cache = self.root.join("storage/local/template/cache");
        fs::create_dir_all(&cache).unwrap();
        let st = Command::new("tar")
            .arg("-C")
            .arg(&r)
            .args(tar_args)
            .arg("-cf")
            .arg(cache.join(name))
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        fs::remove_dir_all(&r).unwrap();
    }

    /// Select the version profile for every later call (the `$ROOT/profile` file).
    pub fn set_profile(&self, p: &str) {
        fs::write(self.root.join("profile"), format!("{p}\n")).unwrap();
    }

    /// Assert a failed call: exit 255 and stderr containing `want`.
    pub fn pct_fails(&self, args: &[&str], want: &str) -> String {
        let o = self.pct(args);
        let all = format!("{}{}", text(&o.stdout), text(&o.stderr));
        assert_eq!(o.status.code(), Some(255), "pct {args:?}: {all}");
        assert!(
            text(&o.stderr).contains(want),
            "pct {args:?}: want {want:?} in {all}"
        );
        all
    }

    pub fn cmd(&self, bin: &str, args: &[&str]) -> Command {
        let mut c = Command::new(bin);
        c.args(args)
            .env("PVE_DOUBLE_ROOT", &self.root)
            .env_remove("PVE_DOUBLE_FAULTS")
            .stdin(Stdio::null());
        c
    }

    pub fn pct(&self, args: &[&str]) -> Output {
        self.cmd(PCT, args).output().unwrap()
    }

    pub fn pct_ok(&self, args: &[&str]) -> String {
        let o = self.pct(args);
        assert!(
            o.status.success(),
            "pct {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn dir_is_empty(&self, rel: &str) -> bool {
        fs::read_dir(self.root.join(rel))
            .map(|mut d| d.next().is_none())
            .unwrap_or(true)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for v in &self.vmids {
            let id = v.to_string();
            let _ = self.pct(&["stop", &id]);
            let _ = self.pct(&["destroy", &id, "--force", "1"]);
            let _ = Command::new("lxc-stop")
                .arg("-P")
                .arg(self.root.join("lxc"))
                .args(["-n", &id, "--kill"])
                .stderr(Stdio::null())
                .status();
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn wait_for(p: &Path, timeout: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < timeout {
        if p.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
