//! The Proxmox container config format (/etc/pve/lxc/<vmid>.conf).
//!
//! ```text
//! #description line, %XX-encoded
//! arch: amd64
//! hostname: CT100
//! ...keys sorted...
//! lxc.init.cmd: /bin/foo        <- raw lxc.* keys, in file order, after the sorted keys
//!
//! [pve:pending]
//! memory: 1024
//! delete: env
//!
//! [snapname]
//! ...
//! ```
//!
//! Which keys are accepted is in `keys` (re-exported).

mod keys;

use std::collections::BTreeMap;

pub use keys::{is_known_key, lxc_key_allowed};

/// One section: keys plus raw lxc entries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Section {
    pub description: Option<String>,
    pub keys: BTreeMap<String, String>,
    pub lxc: Vec<(String, String)>,
}

/// A whole config file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PctConfig {
    pub main: Section,
    /// `[pve:pending]` section (keys and a `delete` list).
    pub pending: Option<Section>,
    /// Snapshot sections, kept verbatim (name, section).
    pub snapshots: Vec<(String, Section)>,
}

/// `PVE::Tools::encode_text`: escape control chars, non-ASCII and ':' as %XX.
pub fn encode_text(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b':' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Inverse of [`encode_text`] (URI unescape).
pub fn decode_text(s: &str) -> String {
    let b = s.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let h = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(h) = h {
                out.push(h);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Section {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.keys.get(k).map(String::as_str)
    }

    fn write(&self, out: &mut String) {
        if let Some(d) = &self.description {
            for l in d.split('\n') {
                out.push('#');
                out.push_str(&encode_text(l));
                out.push('\n');
            }
        }
        for (k, v) in &self.keys {
            out.push_str(&format!("{k}: {v}\n"));
        }
        for (k, v) in &self.lxc {
            out.push_str(&format!("{k}: {v}\n"));
        }
    }
}

impl PctConfig {
    /// Parse a config file; returns the config and warnings for dropped lines.
    pub fn parse(text: &str, vmid: u32) -> (PctConfig, Vec<String>) {
        let mut conf = PctConfig::default();
        let mut warnings = Vec::new();
        // which section we fill: None = main, Some(None) = pending, Some(Some(i)) = snapshot i
        let mut cur: Option<Option<usize>> = None;
        let mut descr: Vec<String> = Vec::new();
        let flush_descr = |descr: &mut Vec<String>, sec: &mut Section| {
            if !descr.is_empty() {
                let d = descr.join("\n");
                sec.description = Some(match sec.description.take() {
                    Some(old) => format!("{old}\n{d}"),
                    None => d,
                });
                descr.clear();
            }
        };
        for line in text.split('\n') {
            let line_t = line.trim_end_matches('\r');
            if line_t.trim().is_empty() {
                continue;
            }
            if let Some(name) = line_t
                .strip_prefix('[')
                .and_then(|r| r.trim_end().strip_suffix(']'))
            {
                let sec = section_mut(&mut conf, cur);
                flush_descr(&mut descr, sec);
                if name == "pve:pending" {
                    conf.pending.get_or_insert_with(Section::default);
                    cur = Some(None);
                } else {
                    conf.snapshots.push((name.to_string(), Section::default()));
                    cur = Some(Some(conf.snapshots.len() - 1));
                }
                continue;
            }
            if let Some(c) = line_t.strip_prefix('#') {
                descr.push(decode_text(c));
                continue;
            }
            let sec = section_mut(&mut conf, cur);
            if line_t.starts_with("lxc.") {
                let sep = line_t.find([':', '=']);
                if let Some(pos) = sep {
                    let k = line_t[..pos].trim();
                    let v = line_t[pos + 1..].trim();
                    if lxc_key_allowed(k) {
                        sec.lxc.push((k.to_string(), v.to_string()));
                        continue;
                    }
                }
                warnings.push(format!("vm {vmid} - unable to parse config: {line_t}"));
                continue;
            }
            match line_t.split_once(':') {
                Some((k, v))
                    if (is_known_key(k) || (cur == Some(None) && k == "delete"))
                        && k != "description" =>
                {
                    sec.keys.insert(k.to_string(), v.trim_start().to_string());
                }
                _ => warnings.push(format!("vm {vmid} - unable to parse config: {line_t}")),
            }
        }
        let sec = section_mut(&mut conf, cur);
        flush_descr(&mut descr, sec);
        (conf, warnings)
    }

    /// Serialise like PVE::LXC::Config::write_pct_config.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        self.main.write(&mut out);
        if let Some(p) = &self.pending {
            if !p.keys.is_empty() || !p.lxc.is_empty() || p.description.is_some() {
                out.push_str("\n[pve:pending]\n");
                p.write(&mut out);
            }
        }
        for (name, s) in &self.snapshots {
            out.push_str(&format!("\n[{name}]\n"));
            s.write(&mut out);
        }
        out
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.main.get(k)
    }

    pub fn set(&mut self, k: &str, v: impl Into<String>) {
        self.main.keys.insert(k.to_string(), v.into());
    }

    pub fn remove(&mut self, k: &str) -> Option<String> {
        self.main.keys.remove(k)
    }

    pub fn lock(&self) -> Option<&str> {
        self.get("lock")
    }

    pub fn is_unprivileged(&self) -> bool {
        self.get("unprivileged") == Some("1")
    }

    pub fn hostname(&self, vmid: u32) -> String {
        self.get("hostname")
            .map(str::to_string)
            .unwrap_or_else(|| format!("CT{vmid}"))
    }

    /// Lines as `pct config` prints them: sorted `key: value` (description encoded, in its
    /// sorted place), then raw lxc entries.
    pub fn print_for_cli(&self, current: bool) -> String {
        let sec = if current {
            self.merged_pending()
        } else {
            self.main.clone()
        };
        let mut keys = sec.keys.clone();
        if let Some(d) = &sec.description {
            keys.insert("description".into(), encode_text(d));
        }
        let mut out = String::new();
        for (k, v) in &keys {
            out.push_str(&format!("{k}: {v}\n"));
        }
        for (k, v) in &sec.lxc {
            out.push_str(&format!("{k}: {v}\n"));
        }
        out
    }

    /// Main section with pending changes applied (not stored).
    pub fn merged_pending(&self) -> Section {
        let mut s = self.main.clone();
        if let Some(p) = &self.pending {
            for (k, v) in &p.keys {
                if k == "delete" {
                    for d in v.split(',').filter(|d| !d.is_empty()) {
                        s.keys.remove(d);
                        if d == "description" {
                            s.description = None;
                        }
                    }
                } else {
                    s.keys.insert(k.clone(), v.clone());
                }
            }
            if p.description.is_some() {
                s.description = p.description.clone();
            }
        }
        s
    }

    /// Apply pending changes to the main section (as vm_start does).
    pub fn apply_pending(&mut self) -> bool {
        if self.pending.is_none() {
            return false;
        }
        self.main = self.merged_pending();
        self.pending = None;
        true
    }

    /// Record a pending change.
    pub fn add_pending(&mut self, k: &str, v: &str) {
        let p = self.pending.get_or_insert_with(Section::default);
        p.keys.insert(k.to_string(), v.to_string());
        remove_from_delete(p, k);
    }

    /// Record a pending deletion.
    pub fn add_pending_delete(&mut self, k: &str) {
        let p = self.pending.get_or_insert_with(Section::default);
        p.keys.remove(k);
        let mut list: Vec<String> = p
            .keys
            .get("delete")
            .map(|d| {
                d.split(',')
                    .filter(|x| !x.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if !list.iter().any(|x| x == k) {
            list.push(k.to_string());
        }
        p.keys.insert("delete".into(), list.join(","));
    }
}

fn remove_from_delete(p: &mut Section, k: &str) {
    if let Some(d) = p.keys.get("delete").cloned() {
        let list: Vec<&str> = d.split(',').filter(|x| !x.is_empty() && *x != k).collect();
        if list.is_empty() {
            p.keys.remove("delete");
        } else {
            p.keys.insert("delete".into(), list.join(","));
        }
    }
}

fn section_mut(conf: &mut PctConfig, cur: Option<Option<usize>>) -> &mut Section {
    match cur {
        None => &mut conf.main,
        Some(None) => conf.pending.get_or_insert_with(Section::default),
        Some(Some(i)) => &mut conf.snapshots[i].1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "#my CT%3A line one\n#second\narch: amd64\ncores: 2\nhostname: web\nmemory: 512\nmp0: /srv/data,mp=/data,ro=1\nostype: unmanaged\nrootfs: local-lvm:subvol-101-disk-0,size=4G\nswap: 512\nunprivileged: 1\nlxc.init.cmd: /bin/sh -c x\nlxc.mount.entry: /a b none bind 0 0\n\n[pve:pending]\ndelete: swap\nentrypoint: /bin/foo\n";

    #[test]
    fn round_trip() {
        let (c, w) = PctConfig::parse(SAMPLE, 101);
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(
            c.main.description.as_deref(),
            Some("my CT: line one\nsecond")
        );
        assert_eq!(c.get("cores"), Some("2"));
        assert_eq!(c.main.lxc.len(), 2);
        assert_eq!(
            c.main.lxc[0],
            ("lxc.init.cmd".into(), "/bin/sh -c x".into())
        );
        assert_eq!(c.to_text(), SAMPLE);
    }

    #[test]
    fn keys_sorted_on_write() {
        let mut c = PctConfig::default();
        c.set("swap", "512");
        c.set("arch", "amd64");
        c.set("memory", "512");
        c.main.lxc.push(("lxc.init.cmd".into(), "/x".into()));
        c.main.description = Some("d".into());
        assert_eq!(
            c.to_text(),
            "#d\narch: amd64\nmemory: 512\nswap: 512\nlxc.init.cmd: /x\n"
        );
    }

    #[test]
    fn unknown_keys_dropped() {
        let (c, w) = PctConfig::parse("memory: 1\nbogus: 2\nlxc.rootfs.path: /x\n", 105);
        assert_eq!(c.get("memory"), Some("1"));
        assert_eq!(
            w,
            vec![
                "vm 105 - unable to parse config: bogus: 2".to_string(),
                "vm 105 - unable to parse config: lxc.rootfs.path: /x".to_string()
            ]
        );
    }

    #[test]
    fn pending() {
        let (mut c, _) = PctConfig::parse(SAMPLE, 101);
        let cur = c.print_for_cli(true);
        assert!(cur.contains("entrypoint: /bin/foo\n"));
        assert!(!cur.contains("swap:"));
        assert!(cur.starts_with(
            "arch: amd64\ncores: 2\ndescription: my CT%3A line one%0Asecond\nentrypoint"
        ));
        assert!(c.apply_pending());
        assert_eq!(c.get("entrypoint"), Some("/bin/foo"));
        assert_eq!(c.get("swap"), None);
        assert!(c.pending.is_none());
        c.add_pending_delete("env");
        c.add_pending("cores", "4");
        c.add_pending_delete("cores");
        assert_eq!(c.pending.as_ref().unwrap().get("delete"), Some("env,cores"));
        c.add_pending("cores", "4");
        assert_eq!(c.pending.as_ref().unwrap().get("delete"), Some("env"));
    }

    #[test]
    fn env_with_nul_survives() {
        let mut c = PctConfig::default();
        c.set("env", "A=1\0B=2");
        let (c2, _) = PctConfig::parse(&c.to_text(), 100);
        assert_eq!(c2.get("env"), Some("A=1\0B=2"));
    }

    #[test]
    fn text_codec() {
        assert_eq!(encode_text("a:b\tc é"), "a%3Ab%09c %C3%A9");
        assert_eq!(decode_text("a%3Ab%09c %C3%A9"), "a:b\tc é");
        assert_eq!(decode_text("100%"), "100%");
    }
}
