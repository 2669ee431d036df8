//! Networking per profile on a real bridge (root + LXC required; skipped loudly otherwise, a failure under CI=true): only a
//! `host-managed=1` netN (PVE 9.1) is configured and up; otherwise the interface stays down.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::undocumented_unsafe_blocks
)] // a test crate: panics carry the context

use std::fs;
use std::process::Command;

mod common;
use common::*;

const BRIDGE: &str = "vmbrdbl0";

/// The test bridge 10.213.0.1/24; deleted on drop.
struct Bridge;

impl Bridge {
    fn create() -> Bridge {
        let _ = Command::new("ip").args(["link", "del", BRIDGE]).status();
        for args in [
            vec!["link", "add", BRIDGE, "type", "bridge"],
            vec!["addr", "add", "10.213.0.1/24", "dev", BRIDGE],
            vec!["link", "set", BRIDGE, "up"],
        ] {
            let st = Command::new("ip").args(&args).status().unwrap();
            assert!(st.success(), "ip {args:?}");
        }
        Bridge
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", BRIDGE]).status();
    }
}

fn create_on_bridge(env: &Env, vmid: &str, net0: &str) {
    env.pct_ok(&[
        "create",
        vmid,
        "local:vztmpl/busybox.tar",
        "--rootfs",
        "local-lvm:0.1",
        "--net0",
        net0,
    ]);
    // the init: a raw lxc.init.cmd line (honoured on every profile)
    let cf = env.root.join(format!("etc/pve/lxc/{vmid}.conf"));
    let mut c = fs::read_to_string(&cf).unwrap();
    c.push_str("lxc.init.cmd: /bin/sleep 1000\n");
    fs::write(&cf, c).unwrap();
    env.pct_ok(&["start", vmid]);
    let master = fs::read_link(format!("/sys/class/net/veth{vmid}i0/master")).unwrap();
    assert!(
        master.ends_with(BRIDGE),
        "veth not on the bridge: {master:?}"
    );
}

#[test]
fn host_managed_only_on_9_1() {
    if !needs_lxc() {
        return;
    }
    let _br = Bridge::create();

    let new = Env::new("net91", &[8307]);
    create_on_bridge(
        &new,
        "8307",
        "name=eth0,bridge=vmbrdbl0,host-managed=1,ip=10.213.0.7/24,gw=10.213.0.1",
    );
    let o = new.pct(&[
        "exec",
        "8307",
        "--",
        "ping",
        "-c",
        "1",
        "-W",
        "5",
        "10.213.0.1",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "ping from the host-managed CT failed: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let o = new.pct(&["exec", "8307", "--", "ip", "route"]);
    assert!(
        text(&o.stdout).contains("default via 10.213.0.1"),
        "{}",
        text(&o.stdout)
    );
    new.pct_ok(&["stop", "8307"]);
    // host-managed DHCP: refused at start with a clear reason
    new.pct_ok(&[
        "set",
        "8307",
        "--net0",
        "name=eth0,bridge=vmbrdbl0,host-managed=1,ip=dhcp",
    ]);
    let all = new.pct_fails(&["start", "8307"], "startup for container '8307' failed");
    assert!(
        all.contains("host-managed ip=dhcp is not supported"),
        "{all}"
    );
    // without host-managed (9.1): down and unconfigured
    new.pct_ok(&[
        "set",
        "8307",
        "--net0",
        "name=eth0,bridge=vmbrdbl0,ip=10.213.0.7/24",
    ]);
    new.pct_ok(&["start", "8307"]);
    let o = new.pct(&["exec", "8307", "--", "cat", "/sys/class/net/eth0/operstate"]);
    assert_eq!(text(&o.stdout), "down\n");
    new.pct_ok(&["stop", "8307"]);

    let old = Env::new("net8", &[8308]);
    old.set_profile("pve8");
    create_on_bridge(
        &old,
        "8308",
        "name=eth0,bridge=vmbrdbl0,ip=10.213.0.8/24,gw=10.213.0.1",
    );
    let o = old.pct(&["exec", "8308", "--", "cat", "/sys/class/net/eth0/operstate"]);
    assert_eq!(text(&o.stdout), "down\n", "pve8: eth0 must stay down");
    let o = old.pct(&["exec", "8308", "--", "ip", "-4", "addr", "show", "eth0"]);
    assert!(
        !text(&o.stdout).contains("10.213.0.8"),
        "{}",
        text(&o.stdout)
    );
    let o = old.pct(&[
        "exec",
        "8308",
        "--",
        "ping",
        "-c",
        "1",
        "-W",
        "1",
        "10.213.0.1",
    ]);
    assert_ne!(
        o.status.code(),
        Some(0),
        "pve8 CT must not reach the bridge"
    );
    old.pct_ok(&["stop", "8308"]);
    let cfg = fs::read_to_string(old.root.join("lxc/8308/config")).unwrap();
    assert!(
        !cfg.contains("flags = up") && !cfg.contains("ipv4"),
        "{cfg}"
    );
}
