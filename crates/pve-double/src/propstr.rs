//! Property strings (`vol,mp=/x,ro=1`) as used by rootfs/mpN/netN/features.

/// Parsed property string: optional leading default-key value plus ordered key=value pairs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PropStr {
    pub default: Option<String>,
    pub pairs: Vec<(String, String)>,
}

impl PropStr {
    /// Parse; `default_key` is the key a bare first element stands for (e.g. "volume").
    pub fn parse(s: &str, default_key: Option<&str>) -> Result<PropStr, String> {
        let mut p = PropStr::default();
        for part in s.split(',') {
            if part.is_empty() {
                continue;
            }
            match part.split_once('=') {
                Some((k, v)) => {
                    if Some(k) == default_key {
                        p.default = Some(v.to_string());
                    } else {
                        if p.get(k).is_some() {
                            return Err(format!(
                                "duplicate key in comma-separated list property: {k}"
                            ));
                        }
                        p.pairs.push((k.to_string(), v.to_string()));
                    }
                }
                None => {
                    if default_key.is_some() && p.default.is_none() {
                        p.default = Some(part.to_string());
                    } else {
                        return Err("missing key in comma-separated list property".to_string());
                    }
                }
            }
        }
        Ok(p)
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(kk, _)| kk == k)
            .map(|(_, v)| v.as_str())
    }

    pub fn set(&mut self, k: &str, v: &str) {
        if let Some(e) = self.pairs.iter_mut().find(|(kk, _)| kk == k) {
            e.1 = v.to_string();
        } else {
            self.pairs.push((k.to_string(), v.to_string()));
        }
    }

    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k).and_then(crate::getopt::parse_bool), Some("1"))
    }

    /// Print: default value first, then `first` keys in that order, then the rest sorted.
    pub fn print(&self, first: &[&str]) -> String {
        let mut parts: Vec<String> = Vec::new();
        if let Some(d) = &self.default {
            parts.push(d.clone());
        }
        for f in first {
            if let Some(v) = self.get(f) {
                parts.push(format!("{f}={v}"));
            }
        }
        let mut rest: Vec<&(String, String)> = self
            .pairs
            .iter()
            .filter(|(k, _)| !first.contains(&k.as_str()))
            .collect();
        rest.sort();
        for (k, v) in rest {
            parts.push(format!("{k}={v}"));
        }
        parts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let p = PropStr::parse("/host,mp=/ct,ro=1", Some("volume")).unwrap();
        assert_eq!(p.default.as_deref(), Some("/host"));
        assert_eq!(p.get("mp"), Some("/ct"));
        assert!(p.flag("ro"));
        assert_eq!(p.print(&[]), "/host,mp=/ct,ro=1");
        let p = PropStr::parse("volume=local-lvm:4,mp=/x", Some("volume")).unwrap();
        assert_eq!(p.default.as_deref(), Some("local-lvm:4"));
        let n = PropStr::parse("type=veth,bridge=vmbr0,name=eth0", None).unwrap();
        assert_eq!(n.print(&["name"]), "name=eth0,bridge=vmbr0,type=veth");
        assert!(PropStr::parse("a,b", None).is_err());
        assert!(PropStr::parse("a=1,a=2", None).is_err());
    }
}
