//! `--netN`: network interfaces and their IP configuration.

use super::{b, invalid, prop_value, CmdError};

/// `ip=` / `ip6=` of a network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpConfig {
    Dhcp,
    /// `auto` (SLAAC), ip6 only.
    Auto,
    Manual,
    /// An address in CIDR notation (`10.0.0.5/24`).
    Cidr(String),
}

impl IpConfig {
    fn render(&self, param: &str) -> Result<String, CmdError> {
        Ok(match self {
            IpConfig::Dhcp => "dhcp".into(),
            IpConfig::Auto => "auto".into(),
            IpConfig::Manual => "manual".into(),
            IpConfig::Cidr(c) => {
                prop_value(param, c)?;
                if !c.contains('/') {
                    return Err(invalid(param, format!("{c:?} is not in CIDR notation")));
                }
                c.clone()
            }
        })
    }
}

/// `--netN name=eth0[,bridge=..][,ip=..]...`.
#[derive(Debug, Clone, PartialEq)]
pub struct NetSpec {
    pub index: u8,
    pub name: String,
    pub bridge: Option<String>,
    pub ip: Option<IpConfig>,
    pub gw: Option<String>,
    pub ip6: Option<IpConfig>,
    pub gw6: Option<String>,
    pub hwaddr: Option<String>,
    pub mtu: Option<u16>,
    pub tag: Option<u16>,
    pub firewall: Option<bool>,
    pub rate: Option<f64>,
    pub link_down: Option<bool>,
    pub host_managed: Option<bool>,
}

impl NetSpec {
    pub fn new(index: u8, name: &str) -> Self {
        NetSpec {
            index,
            name: name.to_string(),
            bridge: None,
            ip: None,
            gw: None,
            ip6: None,
            gw6: None,
            hwaddr: None,
            mtu: None,
            tag: None,
            firewall: None,
            rate: None,
            link_down: None,
            host_managed: None,
        }
    }

    pub fn option(&self) -> String {
        format!("--net{}", self.index)
    }

    /// The property string, e.g. `name=eth0,bridge=vmbr0,ip=dhcp,type=veth`.
    pub fn render(&self) -> Result<String, CmdError> {
        let p = format!("net{}", self.index);
        if self.name.is_empty()
            || self.name.len() > 15
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(invalid(&p, format!("bad interface name {:?}", self.name)));
        }
        let mut parts = vec![format!("name={}", self.name)];
        if let Some(br) = &self.bridge {
            prop_value(&p, br)?;
            parts.push(format!("bridge={br}"));
        }
        if let Some(ip) = &self.ip {
            if *ip == IpConfig::Auto {
                return Err(invalid(&p, "ip=auto is only valid for ip6"));
            }
            parts.push(format!("ip={}", ip.render(&p)?));
        }
        if let Some(gw) = &self.gw {
            prop_value(&p, gw)?;
            parts.push(format!("gw={gw}"));
        }
        if let Some(ip6) = &self.ip6 {
            parts.push(format!("ip6={}", ip6.render(&p)?));
        }
        if let Some(gw6) = &self.gw6 {
            prop_value(&p, gw6)?;
            parts.push(format!("gw6={gw6}"));
        }
        if let Some(hw) = &self.hwaddr {
            let ok = hw.len() == 17
                && hw.split(':').count() == 6
                && hw
                    .split(':')
                    .all(|o| o.len() == 2 && o.chars().all(|c| c.is_ascii_hexdigit()));
            if !ok {
                return Err(invalid(&p, format!("bad hwaddr {hw:?}")));
            }
            parts.push(format!("hwaddr={hw}"));
        }
        if let Some(m) = self.mtu {
            if m < 64 {
                return Err(invalid(&p, "mtu must be at least 64"));
            }
            parts.push(format!("mtu={m}"));
        }
        if let Some(t) = self.tag {
            if !(1..=4094).contains(&t) {
                return Err(invalid(&p, "VLAN tag must be 1..4094"));
            }
            parts.push(format!("tag={t}"));
        }
        if let Some(f) = self.firewall {
            parts.push(format!("firewall={}", b(f)));
        }
        if let Some(r) = self.rate {
            if !(r.is_finite() && r >= 0.0) {
                return Err(invalid(&p, "rate must be a non-negative number (MB/s)"));
            }
            parts.push(format!("rate={r}"));
        }
        if let Some(l) = self.link_down {
            parts.push(format!("link_down={}", b(l)));
        }
        if let Some(h) = self.host_managed {
            parts.push(format!("host-managed={}", b(h)));
        }
        parts.push("type=veth".into());
        Ok(parts.join(","))
    }
}
