//! The pod's network. CRI's CNI plugins set up a network namespace before the sandbox is
//! created (the sandbox spec names it in `linux.namespaces`) and report its address as the
//! pod's IP. A CT cannot be started inside that namespace through `pct`, so once the CT runs,
//! the shim moves the namespace's interfaces into the CT's own network namespace and gives them
//! back their addresses and routes: the pod's IP then reaches the CT. (The host side of a CNI
//! veth stays where CNI put it; CNI's DEL finds the interface gone, which its plugins accept,
//! and the pair disappears with the CT.)
//!
//! Every step is an `ip` command (iproute2, on every Proxmox VE node) run through `nsenter`, as
//! an argv vector; its JSON output is parsed here.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::sys::command::Cmd;

const TIMEOUT: Duration = Duration::from_secs(20);

/// The network namespace CNI made for the pod: None when the sandbox has none of its own
/// (`hostNetwork: true`), which a CT cannot honour.
pub fn cni_netns(spec: &Spec) -> Result<Option<PathBuf>> {
    let nss = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    match nss.iter().find(|n| n.typ() == LinuxNamespaceType::Network) {
        None => Err(Error::Unimplemented(
            "hostNetwork: a pod on the host's network cannot run as a Proxmox CT (a CT always \
             has its own network namespace); run it with a runtime handler routed to crun or runc"
                .into(),
        )),
        Some(n) => Ok(n.path().clone()),
    }
}

#[derive(Debug, Deserialize)]
struct Link {
    ifname: String,
    #[serde(default)]
    addr_info: Vec<Addr>,
}

#[derive(Debug, Deserialize)]
struct Addr {
    #[serde(default)]
    local: String,
    #[serde(default)]
    prefixlen: u8,
    #[serde(default)]
    scope: String,
}

#[derive(Debug, Deserialize)]
struct Route {
    #[serde(default)]
    dst: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    dev: Option<String>,
}

/// What moves: interfaces (not `lo`) with their global addresses, and routes via a gateway.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub links: Vec<(String, Vec<String>)>,
    pub routes: Vec<(String, String, String)>,
}

/// The plan from `ip -j addr show` and `ip -j route show` (v4 and v6) output.
pub fn plan(addrs: &str, routes: &[&str]) -> Result<Plan> {
    let links: Vec<Link> =
        serde_json::from_str(addrs).map_err(|e| Error::internal(format!("ip -j addr: {e}")))?;
    let mut p = Plan::default();
    for l in links.into_iter().filter(|l| l.ifname != "lo") {
        if !valid_ifname(&l.ifname) {
            return Err(Error::internal(format!(
                "odd interface name {:?}",
                l.ifname
            )));
        }
        let a = l
            .addr_info
            .iter()
            .filter(|a| a.scope == "global" && !a.local.is_empty())
            .map(|a| format!("{}/{}", a.local, a.prefixlen))
            .collect();
        p.links.push((l.ifname, a));
    }
    for text in routes {
        let rs: Vec<Route> =
            serde_json::from_str(text).map_err(|e| Error::internal(format!("ip -j route: {e}")))?;
        for r in rs {
            if let (Some(gw), Some(dev)) = (r.gateway, r.dev) {
                if p.links.iter().any(|(n, _)| *n == dev) {
                    p.routes.push((r.dst, gw, dev));
                }
            }
        }
    }
    Ok(p)
}

fn valid_ifname(s: &str) -> bool {
    !s.is_empty()
        && s.len() < 16
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn nsenter(netns: &Path, ip: &[&str]) -> Cmd {
    let mut argv: Vec<OsString> = vec![
        "nsenter".into(),
        OsString::from(format!("--net={}", netns.display())),
        "ip".into(),
    ];
    argv.extend(ip.iter().map(OsString::from));
    Cmd::new(argv).timeout(TIMEOUT)
}

async fn run(netns: &Path, ip: &[&str]) -> Result<String> {
    nsenter(netns, ip).checked_stdout().await
}

/// Move the interfaces of `netns` into the network namespace of host pid `ct_pid` (the CT's
/// init) with their addresses and routes; returns the addresses moved.
pub async fn move_into(netns: &Path, ct_pid: u32) -> Result<Vec<String>> {
    let addrs = run(netns, &["-j", "addr", "show"]).await?;
    let r4 = run(netns, &["-j", "-4", "route", "show"]).await?;
    let r6 = run(netns, &["-j", "-6", "route", "show"]).await?;
    let p = plan(&addrs, &[&r4, &r6])?;
    let ct = PathBuf::from(format!("/proc/{ct_pid}/ns/net"));
    let pid = ct_pid.to_string();
    let mut moved = Vec::new();
    run(&ct, &["link", "set", "dev", "lo", "up"]).await?;
    for (ifname, addrs) in &p.links {
        run(netns, &["link", "set", "dev", ifname, "netns", &pid]).await?;
        for a in addrs {
            run(&ct, &["addr", "add", a, "dev", ifname]).await?;
            moved.push(a.clone());
        }
        run(&ct, &["link", "set", "dev", ifname, "up"]).await?;
    }
    for (dst, gw, dev) in &p.routes {
        run(&ct, &["route", "replace", dst, "via", gw, "dev", dev]).await?;
    }
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_from_ip_json() {
        let addrs = r#"[{"ifindex":1,"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host"}]},
            {"ifindex":3,"ifname":"eth0","addr_info":[{"family":"inet","local":"10.88.0.5","prefixlen":16,"scope":"global"},
            {"family":"inet6","local":"fe80::1","prefixlen":64,"scope":"link"}]}]"#;
        let r4 = r#"[{"dst":"default","gateway":"10.88.0.1","dev":"eth0"},{"dst":"10.88.0.0/16","dev":"eth0","protocol":"kernel","scope":"link","prefsrc":"10.88.0.5"}]"#;
        let p = plan(addrs, &[r4, "[]"]).unwrap();
        assert_eq!(
            p.links,
            vec![("eth0".to_string(), vec!["10.88.0.5/16".to_string()])]
        );
        assert_eq!(
            p.routes,
            vec![(
                "default".to_string(),
                "10.88.0.1".to_string(),
                "eth0".to_string()
            )]
        );
    }

    #[test]
    fn odd_names_and_garbage_are_refused() {
        let bad = r#"[{"ifname":"eth0; rm -rf /","addr_info":[]}]"#;
        assert!(plan(bad, &[]).is_err());
        assert!(plan("not json", &[]).is_err());
    }
}
