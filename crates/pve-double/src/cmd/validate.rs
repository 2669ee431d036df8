//! Format checks and normalisation of config option values (create and set).

use std::io::Read;

use crate::propstr::PropStr;

/// `dns-name` format.
pub fn is_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

/// `pve-tag-list`: split on `;`, `,` or space; returns the normalised `a;b` form.
pub fn normalize_tags(s: &str) -> Result<String, String> {
    let tags: Vec<&str> = s.split([';', ',', ' ']).filter(|t| !t.is_empty()).collect();
    for t in &tags {
        let b = t.as_bytes();
        let ok = (b[0].is_ascii_alphanumeric() || b[0] == b'_')
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'+' | b'.'));
        if !ok {
            return Err(format!("invalid format - invalid characters in tag '{t}'"));
        }
    }
    Ok(tags.join(";"))
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    b
}

/// A random MAC with Proxmox's OUI prefix (BC:24:11).
pub fn random_hwaddr() -> String {
    let b: [u8; 3] = random_bytes();
    format!("BC:24:11:{:02X}:{:02X}:{:02X}", b[0], b[1], b[2])
}

/// netN properties of pve-container 6.0.15+ (`host-managed` is new there).
const NET_KEYS: &[&str] = &[
    "name",
    "bridge",
    "firewall",
    "gw",
    "gw6",
    "host-managed",
    "hwaddr",
    "ip",
    "ip6",
    "link_down",
    "mtu",
    "rate",
    "tag",
    "trunks",
    "type",
];

const NOT_IN_SCHEMA: &str =
    "property is not defined in schema and the schema does not allow additional properties";

/// A property-string schema error as PVE::JSONSchema reports it: `netN: invalid format - format
/// error` plus one `netN.<prop>: ...` line per problem. Entries are (param suffix, message).
fn format_error(details: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut v = vec![(String::new(), "invalid format - format error".to_string())];
    v.extend(details);
    v
}

/// Validate and normalise a netN value: `name` required, `type=veth`, random `hwaddr`.
/// `host_managed`: whether the profile knows the `host-managed` property (6.0.15+).
/// Errors are (param suffix, message) pairs, e.g. (".name", "property is missing ...").
pub fn normalize_net(v: &str, host_managed: bool) -> Result<String, Vec<(String, String)>> {
    let mut p = PropStr::parse(v, None)
        .map_err(|e| vec![(String::new(), format!("invalid format - {e}"))])?;
    let mut details = Vec::new();
    for (k, _) in &p.pairs {
        if !NET_KEYS.contains(&k.as_str()) || (k == "host-managed" && !host_managed) {
            details.push((format!(".{k}"), NOT_IN_SCHEMA.to_string()));
        }
    }
    match p.get("name") {
        None => details.push((
            ".name".into(),
            "property is missing and it is not optional".into(),
        )),
        Some(n) if n.is_empty() || n.len() > 15 || n.contains('/') => {
            return Err(vec![(
                ".name".into(),
                format!("invalid format - invalid interface name '{n}'"),
            )])
        }
        _ => {}
    }
    if let Some(h) = p.get("host-managed") {
        if crate::getopt::parse_bool(h).is_none() {
            details.push((
                ".host-managed".into(),
                format!("type check ('boolean') failed - got '{h}'"),
            ));
        }
    }
    if !details.is_empty() {
        return Err(format_error(details));
    }
    if p.get("type").is_none() {
        p.set("type", "veth");
    }
    if p.get("hwaddr").is_none() {
        p.set("hwaddr", &random_hwaddr());
    }
    Ok(p.print(&["name"]))
}

/// Validate an mpN/rootfs property string (volume + options); returns it parsed.
pub fn parse_mp(v: &str, is_rootfs: bool) -> Result<PropStr, (String, String)> {
    let p = PropStr::parse(v, Some("volume"))
        .map_err(|e| (String::new(), format!("invalid format - {e}")))?;
    const KEYS: &[&str] = &[
        "mp",
        "acl",
        "backup",
        "mountoptions",
        "quota",
        "replicate",
        "ro",
        "shared",
        "size",
        "keepattrs",
        "idmap",
    ];
    for (k, _) in &p.pairs {
        if !KEYS.contains(&k.as_str()) || (is_rootfs && k == "mp") {
            return Err((
                String::new(),
                format!("invalid format - unknown property '{k}'"),
            ));
        }
    }
    if p.default.as_deref().unwrap_or("").is_empty() {
        return Err((
            ".volume".into(),
            "property is missing and it is not optional".into(),
        ));
    }
    if !is_rootfs {
        match p.get("mp") {
            None => {
                return Err((
                    ".mp".into(),
                    "property is missing and it is not optional".into(),
                ))
            }
            Some(m) => {
                crate::lxc::ct_relative(m)
                    .map_err(|e| (".mp".to_string(), format!("invalid format - {e}")))?;
            }
        }
    }
    Ok(p)
}

/// Validate `features`.
pub fn check_features(v: &str) -> Result<(), String> {
    let p = PropStr::parse(v, None).map_err(|e| format!("invalid format - {e}"))?;
    for (k, _) in &p.pairs {
        if ![
            "nesting",
            "keyctl",
            "fuse",
            "mknod",
            "mount",
            "force_rw_sys",
        ]
        .contains(&k.as_str())
        {
            return Err(format!("invalid format - unknown property '{k}'"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns() {
        assert!(is_dns_name("web-1.example"));
        assert!(is_dns_name("CT100"));
        assert!(!is_dns_name("-x"));
        assert!(!is_dns_name("a_b"));
        assert!(!is_dns_name(""));
    }

    #[test]
    fn tags() {
        assert_eq!(normalize_tags("a,b c;d").unwrap(), "a;b;c;d");
        assert!(normalize_tags("ok,bad!").is_err());
    }

    #[test]
    fn net() {
        let n = normalize_net("bridge=vmbr0,name=eth0,ip=dhcp", false).unwrap();
        assert!(
            n.starts_with("name=eth0,bridge=vmbr0,hwaddr=BC:24:11:"),
            "{n}"
        );
        assert!(n.ends_with(",ip=dhcp,type=veth"), "{n}");
        let e = normalize_net("bridge=x", true).unwrap_err();
        assert_eq!(e[0], ("".into(), "invalid format - format error".into()));
        assert_eq!(e[1].0, ".name");
        assert!(normalize_net("name=eth0,bogus=1", true).is_err());
    }

    #[test]
    fn host_managed_gate() {
        let v = "name=eth0,bridge=vmbr0,host-managed=1,ip=10.0.0.2/24";
        let n = normalize_net(v, true).unwrap();
        assert!(n.contains(",host-managed=1,"), "{n}");
        let e = normalize_net(v, false).unwrap_err();
        assert_eq!(
            e,
            vec![
                ("".to_string(), "invalid format - format error".to_string()),
                (".host-managed".to_string(), NOT_IN_SCHEMA.to_string()),
            ]
        );
        assert!(normalize_net("name=eth0,host-managed=maybe", true).is_err());
    }

    #[test]
    fn mp() {
        let p = parse_mp("/srv/x,mp=/data,ro=1", false).unwrap();
        assert_eq!(p.default.as_deref(), Some("/srv/x"));
        assert_eq!(parse_mp("/srv/x", false).unwrap_err().0, ".mp");
        assert!(parse_mp("local-lvm:4,size=4G", true).is_ok());
        assert!(parse_mp("/srv/x,mp=rel", false).is_err());
    }
}
