//! pve-shape end to end (root and LXC required; skipped loudly otherwise, a failure under CI=true).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::undocumented_unsafe_blocks
)] // a test crate: panics carry the context

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const SHAPE: &str = env!("CARGO_BIN_EXE_pve-shape");
const PCT: &str = env!("CARGO_BIN_EXE_pct");

/// The workspace's one skip helper (loud, counted, a failure under CI).
#[path = "../../../tests/common/skip.rs"]
mod skip;

/// True (after `skip::unavailable`, suite `lxc`: a failure under `CI=true` or with
/// `PVELXC_REQUIRE_LXC` set) when the pve-shape tests cannot run here.
fn cannot_run() -> bool {
    let why = if !skip::is_root() {
        "pve-shape tests need root"
    } else if !Path::new("/usr/bin/lxc-start").exists() || !Path::new("/bin/busybox").exists() {
        "pve-shape tests need lxc-start and /bin/busybox"
    } else {
        return false;
    };
    skip::unavailable("lxc", &["PVELXC_REQUIRE_LXC"], why);
    true
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A shape root under /tmp/shape-*; `stop` + removal on drop.
struct Shape {
    root: PathBuf,
    bindir: PathBuf,
}

impl Shape {
    fn new(tag: &str) -> Shape {
        let root = PathBuf::from(format!("/tmp/shape-it-{tag}-{}", std::process::id()));
        let _ = Command::new(SHAPE)
            .arg("--root")
            .arg(&root)
            .arg("stop")
            .output();
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        // pct/pvesh on PATH as on a PVE host
        let bindir = PathBuf::from(PCT).parent().unwrap().to_path_buf();
        Shape { root, bindir }
    }

    fn shape_cmd(&self, pre: &[&str], cmd: &[&str]) -> Command {
        let mut c = Command::new(SHAPE);
        c.arg("--root")
            .arg(&self.root)
            .args(pre)
            .arg("exec")
            .arg("--")
            .args(cmd);
        let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", self.bindir.display());
        c.env("PATH", path)
            .env_remove("PVE_DOUBLE_ROOT")
            .env_remove("PVE_DOUBLE_FAULTS")
            .stdin(Stdio::null());
        c
    }

    fn exec(&self, cmd: &[&str]) -> Output {
        self.shape_cmd(&[], cmd).output().unwrap()
    }

    fn exec_ok(&self, cmd: &[&str]) -> String {
        let o = self.exec(cmd);
        assert!(
            o.status.success(),
            "{cmd:?}: {:?}\nstdout: {}\nstderr: {}",
            o.status,
            text(&o.stdout),
            text(&o.stderr)
        );
        text(&o.stdout)
    }

    fn stop(&self) -> Output {
        Command::new(SHAPE)
            .arg("--root")
            .arg(&self.root)
            .arg("stop")
            .output()
            .unwrap()
    }

    /// busybox rootfs as local:vztmpl/busybox.tar
    fn template(&self) {
        let r = self.root.join("tpl-rootfs");
        for d in [
            "bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "etc", "tmp",
        ] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        fs::copy("/bin/busybox", r.join("bin/busybox")).unwrap();
        for l in ["sh", "sleep", "cat"] {
            std::os::unix::fs::symlink("busybox", r.join("bin").join(l)).unwrap();
        }
        let cache = self.root.join("storage/local/template/cache");
        fs::create_dir_all(&cache).unwrap();
        let st = Command::new("tar")
            .arg("-C")
            .arg(&r)
            .arg("-cf")
            .arg(cache.join("busybox.tar"))
            .arg(".")
            .status()
            .unwrap();
        assert!(st.success());
        fs::remove_dir_all(&r).unwrap();
    }

    fn host_mounts_below_root(&self) -> Vec<String> {
        let prefix = format!("{}/", self.root.display());
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&prefix) || *m == self.root.display().to_string())
            .collect()
    }
}

impl Drop for Shape {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = fs::remove_dir_all(&self.root);
    }
}

#[test]
fn host_shape_cluster_tree_and_namespace() {
    if cannot_run() {
        return;
    }
    let s = Shape::new("a");
    // first exec: foreign guests 960100 (lxc, pve2) 960101 (qemu, pve2) 960102 (lxc, pve3) ...
    let o = s
        .shape_cmd(
            &[
                "--profile",
                "pve9.1",
                "--foreign-from",
                "960100",
                "--foreign",
                "4",
            ],
            &["readlink", "/etc/pve/lxc"],
        )
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "nodes/pve/lxc\n");
    assert_eq!(
        fs::read_to_string(s.root.join("profile")).unwrap(),
        "pve9.1\n"
    );

    // the environment a command gets
    let env = s.exec_ok(&["env"]);
    assert!(
        env.contains(&format!("PVE_DOUBLE_ROOT={}\n", s.root.display())),
        "{env}"
    );
    assert!(env.contains("PVE_DOUBLE_PROFILE=pve9.1\n"), "{env}");

    // /run is noexec in the shape (not on this host): a copied binary fails with EACCES
    let bin = format!("/run/shape-true-{}", std::process::id());
    fs::copy("/bin/true", &bin).unwrap();
    assert!(
        Command::new(&bin).status().unwrap().success(),
        "host /run must allow exec"
    );
    let o = s.exec(&[&bin]);
    let _ = fs::remove_file(&bin);
    assert_eq!(o.status.code(), Some(126), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("Permission denied"),
        "{}",
        text(&o.stderr)
    );
    let mi = s.exec_ok(&["findmnt", "-n", "-o", "OPTIONS", "/run/lock/lxc"]);
    assert!(mi.contains("noexec") && mi.contains("nosuid"), "{mi}");

    // .vmlist (read through /etc/pve) lists the foreign guests
    let vl = s.exec_ok(&["cat", "/etc/pve/.vmlist"]);
    let v: serde_json::Value = serde_json::from_str(&vl).unwrap();
    for (id, node, ty) in [
        ("960100", "pve2", "lxc"),
        ("960101", "pve2", "qemu"),
        ("960102", "pve3", "lxc"),
        ("960103", "pve3", "qemu"),
    ] {
        assert_eq!(v["ids"][id]["node"], node, "{vl}");
        assert_eq!(v["ids"][id]["type"], ty, "{vl}");
    }

    // pct create of a foreign VMID fails before doing anything; the foreign config stays
    s.template();
    let foreign = s.root.join("etc/pve/nodes/pve2/qemu-server/960101.conf");
    let before = fs::read(&foreign).unwrap();
    for (id, msg) in [
        ("960101", "VM 960101 already exists on node 'pve2'\n"),
        ("960102", "CT 960102 already exists on node 'pve3'\n"),
    ] {
        let o = s.exec(&[
            "pct",
            "create",
            id,
            "local:vztmpl/busybox.tar",
            "--rootfs",
            "local-lvm:1",
        ]);
        assert_eq!(o.status.code(), Some(255));
        assert_eq!(text(&o.stderr), msg);
        assert!(!s
            .root
            .join(format!("etc/pve/nodes/pve/lxc/{id}.conf"))
            .exists());
    }
    assert_eq!(fs::read(&foreign).unwrap(), before);
    let list = s.exec_ok(&["pct", "list"]);
    assert_eq!(list, "", "pct list shows only this node's CTs");

    // nextid skips every id of the cluster
    fs::write(
        s.root.join("etc/pve/datacenter.cfg"),
        "next-id: lower=960100,upper=960110\n",
    )
    .unwrap();
    assert_eq!(s.exec_ok(&["pvesh", "get", "/cluster/nextid"]), "960104\n");

    // a local create appears in .vmlist and through /etc/pve/lxc
    s.exec_ok(&[
        "pct",
        "create",
        "960104",
        "local:vztmpl/busybox.tar",
        "--rootfs",
        "local-lvm:1",
    ]);
    let conf = s.exec_ok(&["cat", "/etc/pve/lxc/960104.conf"]);
    assert!(conf.contains("rootfs: local-lvm:"), "{conf}");
    let v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(s.root.join("etc/pve/.vmlist")).unwrap()).unwrap();
    assert_eq!(v["ids"]["960104"]["node"], "pve");
    assert_eq!(s.exec_ok(&["pvesh", "get", "/cluster/nextid"]), "960105\n");
    s.exec_ok(&["pct", "destroy", "960104"]);
    let v: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(s.root.join("etc/pve/.vmlist")).unwrap()).unwrap();
    assert!(v["ids"].get("960104").is_none());

    // a second exec enters the same namespace: a mount made by one is seen by the next,
    // never by the host
    let mark = s.root.join("marker");
    fs::create_dir_all(&mark).unwrap();
    let m = mark.display().to_string();
    s.exec_ok(&["mount", "-t", "tmpfs", "shape-marker", &m]);
    let seen = s.exec_ok(&["findmnt", "-n", "-o", "SOURCE", &m]);
    assert_eq!(seen.trim(), "shape-marker");
    assert!(!s.host_mounts_below_root().contains(&m));
    // settings of a shaped root cannot change under it
    let o = s
        .shape_cmd(&["--profile", "pve8"], &["true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("already shaped with profile 'pve9.1'"));

    // stop: no mounts left, idempotent
    let o = s.stop();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(s.host_mounts_below_root(), Vec::<String>::new());
    assert!(s.stop().status.success());
}

/// pid of the lxc-start running `vmid` for this root.
fn lxc_start_pid(root: &Path, vmid: u32) -> Option<i32> {
    let lxcpath = root.join("lxc").display().to_string();
    for e in fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(c) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = c.split(|b| *b == 0).map(text).collect();
        if args
            .first()
            .map(|a| a.ends_with("lxc-start"))
            .unwrap_or(false)
            && args.contains(&lxcpath)
            && args.contains(&vmid.to_string())
        {
            return Some(pid);
        }
    }
    None
}

fn ppid(pid: i32) -> i32 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn pct_start_goes_through_the_service_manager() {
    if cannot_run() {
        return;
    }
    let s = Shape::new("b");
    s.template();
    let vmid = 960010;
    let id = vmid.to_string();
    s.shape_cmd(&[], &["true"])
        .env("SHAPE_LEAK", "caller-env")
        .output()
        .unwrap();
    s.exec_ok(&[
        "pct",
        "create",
        &id,
        "local:vztmpl/busybox.tar",
        "--rootfs",
        "local-lvm:1",
        "--ostype",
        "unmanaged",
        "--entrypoint",
        "/bin/sleep 1000",
    ]);
    let o = s
        .shape_cmd(&[], &["pct", "start", &id])
        .env("SHAPE_LEAK", "caller-env")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(s.exec_ok(&["pct", "status", &id]), "status: running\n");

    let manager: i32 = fs::read_to_string(s.root.join("run/manager.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pid = lxc_start_pid(&s.root, vmid).expect("lxc-start runs");
    assert_eq!(ppid(pid), manager, "lxc-start must be the manager's child");
    let mut env: Vec<String> = fs::read(format!("/proc/{pid}/environ"))
        .unwrap()
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(text)
        .collect();
    env.sort();
    assert_eq!(
        env,
        vec![
            "LANG=C".to_string(),
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string()
        ]
    );
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(nofile.split_whitespace().nth(3), Some("1024"), "{nofile}");
    let fd1 = fs::read_link(format!("/proc/{pid}/fd/1")).unwrap();
    assert_eq!(fd1, PathBuf::from("/dev/null"));
    let fd2 = fs::read_link(format!("/proc/{pid}/fd/2")).unwrap();
    assert_eq!(fd2, s.root.join(format!("run/pve/ct-{vmid}.stderr")));
    // the unit's cgroup exists while it runs (LXC itself moves the monitor to lxc.monitor/)
    let unit = format!("system.slice/pve-container@{vmid}.service");
    let units: Vec<_> = fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join(&unit).is_dir())
        .collect();
    assert!(!units.is_empty(), "no cgroup {unit} in any hierarchy");

    let o = s.stop();
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains(&format!("stopped CT {vmid}")));
    assert_eq!(lxc_start_pid(&s.root, vmid), None);
    let st = Command::new(PCT)
        .args(["status", &id])
        .env("PVE_DOUBLE_ROOT", &s.root)
        .output()
        .unwrap();
    assert_eq!(text(&st.stdout), "status: stopped\n");
    assert_eq!(s.host_mounts_below_root(), Vec::<String>::new());
    assert!(!s.root.join("run/manager.sock").exists());
    assert!(fs::read_to_string(format!("/proc/{manager}/cmdline"))
        .map(|c| c.is_empty())
        .unwrap_or(true));
    let _ = Command::new(PCT)
        .args(["destroy", &id])
        .env("PVE_DOUBLE_ROOT", &s.root)
        .output();
}

#[test]
fn clear_errors() {
    if cannot_run() {
        return;
    }
    let o = Command::new(SHAPE)
        .args([
            "--root",
            "/tmp/shape-it-does-not-exist",
            "exec",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr)
        .starts_with("pve-shape: root '/tmp/shape-it-does-not-exist' does not exist"));
    let o = Command::new(SHAPE)
        .args(["--root", "/tmp", "--profile", "pve7", "exec", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).starts_with("pve-shape: bad profile 'pve7'"));
}
