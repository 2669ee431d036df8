//! Create as real hosts do it, per profile and storage (root + LXC required; skipped loudly otherwise, a failure under CI=true):
//! extraction inside the user namespace, lvmthin's hard size cap, mpN mounted during
//! extraction, entrypoint/env gates, raw lxc.* lines.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::undocumented_unsafe_blocks
)] // a test crate: panics carry the context

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

mod common;
use common::*;

/// Nothing of CT `vmid` is left: no config, no volume, no image, no mount.
fn assert_gone(env: &Env, vmid: u32) {
    assert!(!env.root.join(format!("etc/pve/lxc/{vmid}.conf")).exists());
    assert!(env.dir_is_empty("storage/local-lvm"), "volume left behind");
    assert!(
        env.dir_is_empty("storage/local-lvm.thin"),
        "image left behind"
    );
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&env.root.display().to_string()),
        "mount left behind: {mounts}"
    );
}

#[test]
fn unprivileged_extraction_runs_in_the_user_namespace() {
    if !needs_lxc() {
        return;
    }
    let env = Env::new("userns", &[8301, 8302]);
    env.pack(
        "owned.tar",
        |r| {
            fs::write(r.join("etc/owned"), "x").unwrap();
            std::os::unix::fs::chown(r.join("etc/owned"), Some(1000), Some(1000)).unwrap();
        },
        &[],
    );
    let out = env.pct_ok(&[
        "create",
        "8301",
        "local:vztmpl/owned.tar",
        "--rootfs",
        "local-lvm:0.1",
    ]);
    assert!(out.contains("Total bytes read"), "{out}");
    let conf = env.pct_ok(&["config", "8301"]);
    assert!(
        conf.contains("rootfs: local-lvm:vm-8301-disk-0,size=102M\n"),
        "{conf}"
    );
    let vol = env.root.join("storage/local-lvm/vm-8301-disk-0");
    assert_eq!(fs::metadata(&vol).unwrap().uid(), 100_000);
    assert_eq!(fs::metadata(vol.join("etc/owned")).unwrap().uid(), 101_000);
    assert_eq!(
        fs::metadata(vol.join("bin/busybox")).unwrap().gid(),
        100_000
    );

    // an entry owned by a uid outside the 65536 mapped ids fails the create
    env.pack("bad.tar", |_| {}, &["--owner=70000"]);
    let all = env.pct_fails(
        &[
            "create",
            "8302",
            "local:vztmpl/bad.tar",
            "--rootfs",
            "local-lvm:0.1",
        ],
        "unable to create CT 8302 - command 'lxc-usernsexec -m u:0:100000:65536 -m g:0:100000:65536 -- tar xpf - --totals --one-file-system -p --sparse --numeric-owner --acls --xattrs '--xattrs-include=user.*' --xattrs-include=security.capability --warning=no-file-ignored --warning=no-xattr-write -C ",
    );
    assert!(
        all.contains("Cannot change ownership to uid 70000"),
        "{all}"
    );
    assert!(all.ends_with("failed: exit code 2\n"), "{all}");
    assert!(!env.root.join("etc/pve/lxc/8302.conf").exists());
    assert!(!env.root.join("storage/local-lvm/vm-8302-disk-0").exists());
    assert!(!env
        .root
        .join("storage/local-lvm.thin/vm-8302-disk-0.raw")
        .exists());

    // pct mount works on the loop volume; destroy unmounts and removes it
    let m = env.pct_ok(&["mount", "8301"]);
    assert!(m.starts_with("mounted CT 8301 in '"), "{m}");
    assert!(env.root.join("lxc/8301/rootfs/etc/owned").exists());
    env.pct_ok(&["unmount", "8301"]);
    env.pct_ok(&["destroy", "8301"]);
    assert_gone(&env, 8301);
}

#[test]
fn lvmthin_size_is_a_hard_cap() {
    if !needs_lxc() {
        return;
    }
    let env = Env::new("thin", &[8303]);
    env.pack(
        "big.tar",
        |r| {
            let f = fs::File::create(r.join("root/big")).unwrap();
            f.set_len(160 * 1024 * 1024).unwrap();
        },
        &[],
    );
    let all = env.pct_fails(
        &[
            "create",
            "8303",
            "local:vztmpl/big.tar",
            "--rootfs",
            "local-lvm:0.1",
        ],
        "unable to create CT 8303 - command 'lxc-usernsexec",
    );
    assert!(all.contains("No space left on device"), "{all}");
    assert_gone(&env, 8303);
    // the same archive fits a bigger volume, and the CT runs from the loop-mounted volume
    env.pct_ok(&[
        "create",
        "8303",
        "local:vztmpl/big.tar",
        "--rootfs",
        "local-lvm:0.5",
        "--entrypoint",
        "/bin/sleep 1000",
    ]);
    // a fresh mount namespace view: start must (re)activate the volume itself
    let vol = env.root.join("storage/local-lvm/vm-8303-disk-0");
    nix::mount::umount2(&vol, nix::mount::MntFlags::empty()).unwrap();
    env.pct_ok(&["start", "8303"]);
    let o = env.pct(&["exec", "8303", "--", "df", "-k", "/"]);
    let df = text(&o.stdout);
    assert!(df.contains("/dev/loop"), "{df}");
    env.pct_ok(&["stop", "8303"]);
    env.pct_ok(&["destroy", "8303"]);
    assert_gone(&env, 8303);

    // lvmthin cannot make a size-0 (directory) volume; unknown storage; no rootdir content
    env.pct_fails(
        &[
            "create",
            "8303",
            "local:vztmpl/busybox.tar",
            "--rootfs",
            "local-lvm:0",
        ],
        "unable to create CT 8303 - unsupported format 'subvol'",
    );
    assert_gone(&env, 8303);
    env.pct_fails(
        &[
            "create",
            "8303",
            "local:vztmpl/busybox.tar",
            "--rootfs",
            "nas:1",
        ],
        "storage 'nas' does not exist",
    );
    env.pct_fails(
        &["create", "8303", "local:vztmpl/busybox.tar"],
        "storage: storage 'local' does not support container directories",
    );
    let cfg = fs::read_to_string(env.root.join("etc/pve/storage.cfg")).unwrap();
    assert!(
        cfg.contains("lvmthin: local-lvm\n\tthinpool data\n"),
        "{cfg}"
    );
}

#[test]
fn zfs_install_has_local_zfs_directories() {
    if !needs_lxc() {
        return;
    }
    let env = Env::new("zfs", &[8304]);
    fs::write(env.root.join("install"), "zfs\n").unwrap();
    env.pct_fails(
        &[
            "create",
            "8304",
            "local:vztmpl/busybox.tar",
            "--rootfs",
            "local-lvm:1",
        ],
        "storage 'local-lvm' does not exist",
    );
    env.pct_ok(&[
        "create",
        "8304",
        "local:vztmpl/busybox.tar",
        "--rootfs",
        "local-zfs:0",
    ]);
    let conf = env.pct_ok(&["config", "8304"]);
    assert!(
        conf.contains("rootfs: local-zfs:subvol-8304-disk-0,size=0T\n"),
        "{conf}"
    );
    let vol = env.root.join("storage/local-zfs/subvol-8304-disk-0");
    assert!(vol.join("bin/busybox").is_file());
    assert_eq!(fs::metadata(&vol).unwrap().uid(), 100_000);
    env.pct_ok(&["destroy", "8304"]);
    assert!(!vol.exists());
}

#[test]
fn mount_points_are_mounted_during_extraction() {
    if !needs_lxc() {
        return;
    }
    let env = Env::new("mpx", &[8305]);
    env.pack(
        "data.tar",
        |r| {
            fs::create_dir_all(r.join("data")).unwrap();
            fs::write(r.join("data/x"), "from the archive\n").unwrap();
        },
        &[],
    );
    let host = env.root.join("hostdir");
    fs::create_dir(&host).unwrap();
    std::os::unix::fs::chown(&host, Some(100_000), Some(100_000)).unwrap();
    fs::set_permissions(&host, fs::Permissions::from_mode(0o755)).unwrap();
    let mp0 = format!("{},mp=/data,ro=1", host.display());
    env.pct_ok(&[
        "create",
        "8305",
        "local:vztmpl/data.tar",
        "--rootfs",
        "local-lvm:0.1",
        "--mp0",
        &mp0,
    ]);
    assert_eq!(
        fs::read_to_string(host.join("x")).unwrap(),
        "from the archive\n",
        "the archive's /data/x must land in the bind-mounted host dir (mounted rw during create)"
    );
    let data = env.root.join("storage/local-lvm/vm-8305-disk-0/data");
    assert!(data.is_dir());
    assert!(
        fs::read_dir(&data).unwrap().next().is_none(),
        "mp0 must be unmounted after create"
    );
    env.pct_ok(&["destroy", "8305"]);
    assert!(
        host.join("x").exists(),
        "bind-mounted host dir survives destroy"
    );
}

#[test]
fn pve8_grammar_and_raw_lxc_lines() {
    if !needs_lxc() {
        return;
    }
    let env = Env::new("pve8", &[8306]);
    env.set_profile("pve8");
    let o = env.pct(&[
        "create",
        "8306",
        "local:vztmpl/busybox.tar",
        "--rootfs",
        "local-lvm:0.1",
        "--entrypoint",
        "/bin/sleep 1000",
    ]);
    assert_eq!(o.status.code(), Some(255));
    assert_eq!(
        text(&o.stderr),
        "Unknown option: entrypoint\n400 unable to parse option\n\npct create <vmid> <ostemplate> [OPTIONS]\n"
    );
    assert_gone(&env, 8306);
    let o = env.pct(&[
        "create",
        "8306",
        "local:vztmpl/busybox.tar",
        "--rootfs",
        "local-lvm:0.1",
        "--net0",
        "name=eth0,bridge=vmbr0,host-managed=1,ip=10.0.0.2/24",
    ]);
    assert_eq!(o.status.code(), Some(255));
    assert_eq!(
        text(&o.stderr),
        "400 Parameter verification failed.\nnet0: invalid format - format error\nnet0.host-managed: property is not defined in schema and the schema does not allow additional properties\n\npct create <vmid> <ostemplate> [OPTIONS]\n"
    );
    assert_gone(&env, 8306);

    env.pct_ok(&[
        "create",
        "8306",
        "local:vztmpl/busybox.tar",
        "--rootfs",
        "local-lvm:0.1",
    ]);
    env.pct_fails(&["set", "8306", "--env", "A=1"], "Unknown option: env\n");
    // root edits the config file: raw lxc.* lines are honoured on every version
    let cf = env.root.join("etc/pve/lxc/8306.conf");
    let mut c = fs::read_to_string(&cf).unwrap();
    c.push_str("lxc.init.cmd: /bin/sleep 4242\n");
    fs::write(&cf, c).unwrap();
    env.pct_ok(&["start", "8306"]);
    let o = env.pct(&["exec", "8306", "--", "cat", "/proc/1/cmdline"]);
    assert_eq!(text(&o.stdout), "/bin/sleep\u{0}4242\u{0}");
    let conf = env.pct_ok(&["config", "8306"]);
    assert!(conf.ends_with("lxc.init.cmd: /bin/sleep 4242\n"), "{conf}");
    assert!(!conf.contains("entrypoint"));
    env.pct_ok(&["stop", "8306"]);
    env.pct_ok(&["destroy", "8306"]);

    let v = env.cmd(PVEVERSION, &["-v"]).output().unwrap();
    let v = text(&v.stdout);
    assert!(v.contains("\npve-container: 5.2.7\n"), "{v}");
    assert!(v.starts_with("proxmox-ve: 8.4.0 (running kernel: "), "{v}");
}

#[test]
fn unknown_profile_is_an_error() {
    if !needs_lxc() {
        return;
    }
    let env = Env::new("badprof", &[]);
    let o = env
        .cmd(PCT, &["list"])
        .env("PVE_DOUBLE_PROFILE", "pve7")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(255));
    assert!(
        text(&o.stderr).contains("unknown profile 'pve7'"),
        "{}",
        text(&o.stderr)
    );
    let o = env
        .cmd(PVEVERSION, &[])
        .env("PVE_DOUBLE_PROFILE", "pve9.0")
        .output()
        .unwrap();
    assert!(text(&o.stdout).starts_with("pve-manager/9.0.11/"));
}
