//! `.vmlist` as pmxcfs prints it (`cfs_create_vmlist_msg` in pve-cluster's status.c).

use std::collections::BTreeMap;
use std::fs;

use serde_json::Value;

use super::{scan, Guest};
use crate::error::{Context, Result};
use crate::paths::Root;

/// Parsed previous `.vmlist`: global version and per-VMID (node, type, version).
pub type Previous = (u64, BTreeMap<u32, (String, String, u64)>);

fn read_previous(root: &Root) -> Previous {
    let mut ids = BTreeMap::new();
    let Ok(text) = fs::read_to_string(root.vmlist_path()) else {
        return (0, ids);
    };
    let Ok(v) = serde_json::from_str::<Value>(&text) else {
        return (0, ids);
    };
    let version = v.get("version").and_then(Value::as_u64).unwrap_or(0);
    if let Some(m) = v.get("ids").and_then(Value::as_object) {
        for (k, e) in m {
            let (Ok(id), Some(node), Some(ty)) = (
                k.parse::<u32>(),
                e.get("node").and_then(Value::as_str),
                e.get("type").and_then(Value::as_str),
            ) else {
                continue;
            };
            let ver = e.get("version").and_then(Value::as_u64).unwrap_or(0);
            ids.insert(id, (node.to_string(), ty.to_string(), ver));
        }
    }
    (version, ids)
}

/// The `.vmlist` text for `guests` given the previous state, exactly as pmxcfs prints it
/// (`cfs_create_vmlist_msg`): the list version counts changes, an entry keeps its version
/// while its node and type stay the same, a new entry gets the next per-guest counter value.
pub fn render_vmlist(guests: &[Guest], prev: &Previous) -> String {
    let (old_version, old_ids) = prev;
    let mut counter = old_ids.values().map(|e| e.2).max().unwrap_or(0);
    let mut changes = 0u64;
    let mut entries: BTreeMap<u32, (String, &'static str, u64)> = BTreeMap::new();
    for g in guests {
        if entries.contains_key(&g.vmid) {
            continue; // pmxcfs: "detected duplicate VMID", first one wins
        }
        let ver = match old_ids.get(&g.vmid) {
            Some((n, t, v)) if *n == g.node && t == g.kind.as_str() => *v,
            _ => {
                changes += 1;
                counter += 1;
                counter
            }
        };
        entries.insert(g.vmid, (g.node.clone(), g.kind.as_str(), ver));
    }
    changes += old_ids.keys().filter(|k| !entries.contains_key(k)).count() as u64;
    let version = old_version + changes;
    let mut s = String::from("{\n");
    if entries.is_empty() {
        s.push_str(&format!("\"version\": {version}\n"));
    } else {
        s.push_str(&format!("\"version\": {version},\n\"ids\": {{\n"));
        let rows: Vec<String> = entries
            .iter()
            .map(|(id, (node, ty, ver))| {
                format!(
                    "\"{id}\": {{ \"node\": \"{node}\", \"type\": \"{ty}\", \"version\": {ver} }}"
                )
            })
            .collect();
        s.push_str(&rows.join(",\n"));
        s.push_str("}\n");
    }
    s.push_str("\n}\n");
    s
}

pub(super) fn write_vmlist(root: &Root) -> Result<()> {
    let prev = read_previous(root);
    let text = render_vmlist(&scan(root), &prev);
    let path = root.vmlist_path();
    if fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
        return Ok(());
    }
    let tmp = root
        .pve_dir()
        .join(format!(".vmlist.tmp.{}", std::process::id()));
    fs::write(&tmp, &text).ctx(|| format!("unable to write '{}'", tmp.display()))?;
    fs::rename(&tmp, &path).ctx(|| format!("unable to write '{}'", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Kind;

    #[test]
    fn vmlist_format_and_versions() {
        let g = |vmid, node: &str, kind| Guest {
            vmid,
            node: node.into(),
            kind,
        };
        let empty = (0, BTreeMap::new());
        assert_eq!(render_vmlist(&[], &empty), "{\n\"version\": 0\n\n}\n");
        let one = render_vmlist(&[g(100, "pve", Kind::Lxc)], &empty);
        assert_eq!(
            one,
            "{\n\"version\": 1,\n\"ids\": {\n\"100\": { \"node\": \"pve\", \"type\": \"lxc\", \"version\": 1 }}\n\n}\n"
        );
        let v: Value = serde_json::from_str(&one).unwrap();
        assert_eq!(v["ids"]["100"]["node"], "pve");
        // unchanged entries keep their version, new ones count on, removals bump the list
        let mut ids = BTreeMap::new();
        ids.insert(100, ("pve".to_string(), "lxc".to_string(), 1));
        ids.insert(101, ("pve2".to_string(), "qemu".to_string(), 2));
        let t = render_vmlist(
            &[g(100, "pve", Kind::Lxc), g(102, "pve", Kind::Lxc)],
            &(2, ids),
        );
        let v: Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["version"], 4);
        assert_eq!(v["ids"]["100"]["version"], 1);
        assert_eq!(v["ids"]["102"]["version"], 3);
        assert!(v["ids"].get("101").is_none());
    }
}
