//! Container-level settings the shim hands the init in `/.pvelxc/ct.json` (host-written,
//! read-only for the CT), applied by the init before it runs the process:
//! - `readonly_root`: remount `/` read-only (OCI `root.readonly`; Proxmox has no such option);
//! - `net`: give an interface its IPv4 address and default route, for pve-container versions
//!   without host-managed networking (before 6.0.15, where PVE leaves an `unmanaged` CT's
//!   interface down and unconfigured).

use std::ffi::CString;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CtSettings {
    #[serde(default)]
    pub readonly_root: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<NetConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetConfig {
    /// Interface name in the CT (`eth0`).
    pub iface: String,
    /// IPv4 address with prefix length, `10.0.0.5/24`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

impl CtSettings {
    pub fn from_json(b: &[u8]) -> Result<CtSettings, String> {
        serde_json::from_slice(b).map_err(|e| format!("ct.json: {e}"))
    }
}

/// `10.0.0.5/24` → (address, netmask).
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, Ipv4Addr), String> {
    let (a, p) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: expected ADDRESS/PREFIX"))?;
    let addr: Ipv4Addr = a.parse().map_err(|_| format!("{s:?}: bad IPv4 address"))?;
    let prefix: u32 = p.parse().map_err(|_| format!("{s:?}: bad prefix length"))?;
    if prefix > 32 {
        return Err(format!("{s:?}: prefix length above 32"));
    }
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    Ok((addr, Ipv4Addr::from(mask)))
}

/// Apply everything; the first failure is returned (the init then fails the start).
pub fn apply(s: &CtSettings) -> Result<(), String> {
    if let Some(n) = &s.net {
        configure_net(n)?;
    }
    if s.readonly_root {
        remount_root_ro()?;
    }
    Ok(())
}

fn remount_root_ro() -> Result<(), String> {
    let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
    // SAFETY: mount(2) with static C strings.
    let r = unsafe {
        libc::mount(
            c"none".as_ptr(),
            c"/".as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(format!(
            "remount / read-only: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn sockaddr(a: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux; plain old data.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ifreq(name: &str) -> Result<libc::ifreq, String> {
    let c = CString::new(name).map_err(|_| format!("bad interface name {name:?}"))?;
    let b = c.as_bytes_with_nul();
    if b.len() > libc::IFNAMSIZ {
        return Err(format!("interface name {name:?} too long"));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(b) {
        *d = *s as libc::c_char;
    }
    Ok(r)
}

fn ioctl(
    fd: libc::c_int,
    req: libc::Ioctl,
    arg: *mut libc::c_void,
    what: &str,
) -> Result<(), String> {
    // SAFETY: the caller passes a pointer to the struct this request expects.
    if unsafe { libc::ioctl(fd, req, arg) } < 0 {
        return Err(format!("{what}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn configure_net(n: &NetConfig) -> Result<(), String> {
    let (addr, mask) = parse_cidr(&n.address)?;
    let gw: Option<Ipv4Addr> = match &n.gateway {
        Some(g) if !g.is_empty() => Some(g.parse().map_err(|_| format!("bad gateway {g:?}"))?),
        _ => None,
    };
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    let res = (|| {
        let w = |what: &str| format!("{}: {what}", n.iface);
        let mut r = ifreq(&n.iface)?;
        r.ifr_ifru.ifru_addr = sockaddr(addr);
        ioctl(
            fd,
            libc::SIOCSIFADDR as _,
            (&mut r as *mut libc::ifreq).cast(),
            &w("set address"),
        )?;
        let mut r = ifreq(&n.iface)?;
        r.ifr_ifru.ifru_netmask = sockaddr(mask);
        ioctl(
            fd,
            libc::SIOCSIFNETMASK as _,
            (&mut r as *mut libc::ifreq).cast(),
            &w("set netmask"),
        )?;
        let mut r = ifreq(&n.iface)?;
        ioctl(
            fd,
            libc::SIOCGIFFLAGS as _,
            (&mut r as *mut libc::ifreq).cast(),
            &w("get flags"),
        )?;
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        let flags = unsafe { r.ifr_ifru.ifru_flags };
        r.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        ioctl(
            fd,
            libc::SIOCSIFFLAGS as _,
            (&mut r as *mut libc::ifreq).cast(),
            &w("bring up"),
        )?;
        if let Some(g) = gw {
            // SAFETY: rtentry is plain old data; all-zero is a valid value.
            let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
            rt.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
            rt.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
            rt.rt_gateway = sockaddr(g);
            rt.rt_flags = (libc::RTF_UP | libc::RTF_GATEWAY) as libc::c_ushort;
            ioctl(
                fd,
                libc::SIOCADDRT as _,
                (&mut rt as *mut libc::rtentry).cast(),
                &w("default route"),
            )?;
        }
        Ok(())
    })();
    // SAFETY: closing the fd we opened.
    unsafe { libc::close(fd) };
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr() {
        assert_eq!(
            parse_cidr("10.0.0.5/24").unwrap(),
            (Ipv4Addr::new(10, 0, 0, 5), Ipv4Addr::new(255, 255, 255, 0))
        );
        assert_eq!(parse_cidr("1.2.3.4/0").unwrap().1, Ipv4Addr::UNSPECIFIED);
        assert!(parse_cidr("10.0.0.5").is_err());
        assert!(parse_cidr("10.0.0.5/33").is_err());
        assert!(parse_cidr("x/24").is_err());
    }

    #[test]
    fn json() {
        let s = CtSettings::from_json(br#"{"readonly_root":true}"#).unwrap();
        assert!(s.readonly_root && s.net.is_none());
        let s = CtSettings::from_json(
            br#"{"net":{"iface":"eth0","address":"10.1.0.2/24","gateway":"10.1.0.1"}}"#,
        )
        .unwrap();
        assert_eq!(s.net.unwrap().gateway.as_deref(), Some("10.1.0.1"));
        assert!(CtSettings::from_json(b"7").is_err());
    }
}
