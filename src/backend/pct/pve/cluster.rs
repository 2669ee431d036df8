//! The cluster's VMIDs: `/etc/pve/.vmlist` lists every guest of every node (CTs and VMs share
//! one VMID space); `/etc/pve/datacenter.cfg` may narrow where new ids go (`next-id:
//! lower=N,upper=M`). Both are read under the shim's allocator lock.

use std::collections::BTreeMap;
use std::path::Path;

use super::PVE_DIR;
use crate::error::{Error, Result};

/// A guest the cluster knows about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guest {
    pub node: String,
    /// `lxc` or `qemu`.
    pub kind: String,
}

/// `{"version": N, "ids": {"100": {"node": "pve", "type": "lxc", "version": 3}, ...}}`.
pub fn parse_vmlist(text: &str) -> std::result::Result<BTreeMap<u32, Guest>, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let ids = v
        .get("ids")
        .and_then(|i| i.as_object())
        .ok_or("no \"ids\" object")?;
    let mut out = BTreeMap::new();
    for (k, g) in ids {
        let Ok(id) = k.parse::<u32>() else { continue };
        let s = |f: &str| g.get(f).and_then(|x| x.as_str()).unwrap_or("").to_string();
        out.insert(
            id,
            Guest {
                node: s("node"),
                kind: s("type"),
            },
        );
    }
    Ok(out)
}

/// `next-id: lower=N,upper=M` (either bound optional; PVE's defaults 100 and 1000000).
pub fn parse_next_id(datacenter_cfg: &str) -> Option<(u32, u32)> {
    let line = datacenter_cfg
        .lines()
        .find_map(|l| l.trim().strip_prefix("next-id:"))?;
    let (mut lo, mut hi) = (100u32, 1_000_000u32);
    for kv in line.trim().split(',') {
        match kv.trim().split_once('=') {
            Some(("lower", v)) => lo = v.trim().parse().ok()?,
            Some(("upper", v)) => hi = v.trim().parse().ok()?,
            _ => {}
        }
    }
    Some((lo, hi))
}

/// Every VMID the cluster uses (`.vmlist`); empty when this is not a cluster file system.
pub fn guests() -> Result<BTreeMap<u32, Guest>> {
    let p = Path::new(PVE_DIR).join(".vmlist");
    match super::read_capped(&p, 16 << 20) {
        Ok(Some(t)) => parse_vmlist(&t)
            .map_err(|e| Error::internal(format!("cannot parse {}: {e}", p.display()))),
        Ok(None) => Ok(BTreeMap::new()),
        Err(e) => Err(Error::io(format!("read {}", p.display()), e)),
    }
}

/// The configured VMID range narrowed to the datacenter's `next-id` range, if any.
pub fn effective_range(lo: u32, hi: u32) -> Result<(u32, u32)> {
    let p = Path::new(PVE_DIR).join("datacenter.cfg");
    let text = super::read_capped(&p, 1 << 20)
        .map_err(|e| Error::io(format!("read {}", p.display()), e))?
        .unwrap_or_default();
    narrow(lo, hi, parse_next_id(&text))
}

fn narrow(lo: u32, hi: u32, next_id: Option<(u32, u32)>) -> Result<(u32, u32)> {
    let Some((nlo, nhi)) = next_id else {
        return Ok((lo, hi));
    };
    let (a, b) = (lo.max(nlo), hi.min(nhi));
    if a > b {
        return Err(Error::precondition(format!(
            "[pct] vmid_min..vmid_max = {lo}..{hi} does not overlap the datacenter's next-id \
             range {nlo}..{nhi} (/etc/pve/datacenter.cfg)"
        )));
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmlist() {
        let t = r#"{"version": 7, "ids": {"100": {"node": "pve", "type": "lxc", "version": 3},
                   "101": {"node": "pve2", "type": "qemu", "version": 1}, "x": {}}}"#;
        let g = parse_vmlist(t).unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(g[&101].node, "pve2");
        assert_eq!(g[&101].kind, "qemu");
        assert!(parse_vmlist("{}").is_err());
        assert!(parse_vmlist("not json").is_err());
    }

    #[test]
    fn next_id() {
        assert_eq!(
            parse_next_id("keyboard: en-us\nnext-id: lower=1000,upper=2000\n"),
            Some((1000, 2000))
        );
        assert_eq!(parse_next_id("next-id: lower=500\n"), Some((500, 1_000_000)));
        assert_eq!(parse_next_id("keyboard: de\n"), None);
        assert_eq!(narrow(100, 199, None).unwrap(), (100, 199));
        assert_eq!(narrow(100, 199, Some((150, 1000))).unwrap(), (150, 199));
        assert!(narrow(100, 199, Some((300, 400))).is_err());
    }
}
