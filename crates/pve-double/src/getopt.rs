//! Getopt::Long-style argument parsing with PVE::JSONSchema type checks.
//!
//! Rules (as PVE::JSONSchema::get_options drives Getopt::Long): options start with `--` or `-`,
//! values as `--opt val` or `--opt=val`; option names are case-insensitive and may be abbreviated
//! to a unique prefix; booleans take an optional value (the next argument is taken when it does
//! not look like an option); non-option arguments may appear anywhere (permute); `--` ends option
//! processing. Positional parameters are then taken in order from the remaining arguments.

use std::collections::BTreeMap;

use crate::error::{PveError, Result};
use crate::vmid::parse_vmid;

/// JSON schema types used by pct/pvesh parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ty {
    Bool,
    Int(Option<i64>, Option<i64>),
    Num(Option<f64>, Option<f64>),
    Str,
    Enum(&'static [&'static str]),
    Vmid,
}

/// One option. `indexed > 0` means the option exists as `name0` .. `name{indexed-1}`.
#[derive(Debug, Clone, Copy)]
pub struct Opt {
    pub name: &'static str,
    pub ty: Ty,
    pub indexed: u32,
}

impl Opt {
    pub const fn new(name: &'static str, ty: Ty) -> Opt {
        Opt {
            name,
            ty,
            indexed: 0,
        }
    }
    pub const fn indexed(name: &'static str, ty: Ty, n: u32) -> Opt {
        Opt {
            name,
            ty,
            indexed: n,
        }
    }
}

/// A command's parameter schema.
#[derive(Debug, Clone)]
pub struct Spec {
    pub tool: &'static str,
    pub cmd: &'static str,
    /// Positional parameters, in order.
    pub args: Vec<(&'static str, Ty)>,
    /// Trailing `extra-args` list (pct exec).
    pub extra_args: bool,
    pub opts: Vec<Opt>,
}

/// Parsed and type-checked arguments. Booleans are normalised to "0"/"1".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    pub args: BTreeMap<String, String>,
    pub opts: BTreeMap<String, String>,
    pub extra: Vec<String>,
}

impl Parsed {
    pub fn opt(&self, k: &str) -> Option<&str> {
        self.opts.get(k).map(String::as_str)
    }
    pub fn flag(&self, k: &str) -> bool {
        self.opts.get(k).map(|v| v == "1").unwrap_or(false)
    }
    pub fn arg(&self, k: &str) -> &str {
        self.args.get(k).map(String::as_str).unwrap_or("")
    }
    /// The validated VMID positional parameter.
    pub fn vmid(&self) -> u32 {
        self.args
            .get("vmid")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Spec {
    /// Short usage, e.g. `pct start <vmid> [OPTIONS]`.
    pub fn usage(&self) -> String {
        let mut s = format!("{} {}", self.tool, self.cmd);
        for (a, _) in &self.args {
            s.push_str(&format!(" <{a}>"));
        }
        if self.extra_args {
            s.push_str(" [<extra-args>]");
        }
        if !self.opts.is_empty() {
            s.push_str(" [OPTIONS]");
        }
        s
    }

    /// Resolve an option name as Getopt::Long would (exact, then unique prefix, case-insensitive).
    fn resolve(&self, given: &str) -> std::result::Result<(String, Ty), String> {
        let g = given.to_ascii_lowercase();
        for o in &self.opts {
            if o.indexed == 0 {
                if o.name.eq_ignore_ascii_case(&g) {
                    return Ok((o.name.to_string(), o.ty));
                }
            } else if let Some(idx) = g.strip_prefix(o.name) {
                if !idx.is_empty()
                    && idx.bytes().all(|b| b.is_ascii_digit())
                    && (idx == "0" || !idx.starts_with('0'))
                {
                    if let Ok(n) = idx.parse::<u32>() {
                        if n < o.indexed {
                            return Ok((format!("{}{}", o.name, n), o.ty));
                        }
                    }
                }
            }
        }
        let mut cands: Vec<(String, Ty)> = Vec::new();
        for o in &self.opts {
            if o.name.starts_with(&g) {
                if o.indexed == 0 {
                    cands.push((o.name.to_string(), o.ty));
                } else {
                    cands.push((format!("{}0", o.name), o.ty));
                    cands.push((format!("{}1", o.name), o.ty));
                }
            }
        }
        match cands.len() {
            0 => Err(format!("Unknown option: {g}")),
            1 => Ok(cands.remove(0)),
            _ => {
                let names: Vec<String> = cands.iter().map(|c| c.0.clone()).collect();
                Err(format!("Option {g} is ambiguous ({})", names.join(", ")))
            }
        }
    }

    /// Parse argv (without the tool and command words).
    pub fn parse(&self, argv: &[String]) -> Result<Parsed> {
        let usage = self.usage();
        let mut raw_opts: Vec<(String, Ty, String)> = Vec::new();
        let mut positional: Vec<String> = Vec::new();
        let mut warnings: Vec<String> = Vec::new();
        let mut i = 0;
        while i < argv.len() {
            let a = &argv[i];
            i += 1;
            if a == "--" {
                positional.extend(argv[i..].iter().cloned());
                break;
            }
            let body = if let Some(b) = a.strip_prefix("--") {
                b
            } else if let Some(b) = a.strip_prefix('-') {
                b
            } else {
                positional.push(a.clone());
                continue;
            };
            if body.is_empty() {
                // a lone "-" is an argument
                positional.push(a.clone());
                continue;
            }
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let (name, ty) = match self.resolve(name) {
                Ok(r) => r,
                Err(w) => {
                    warnings.push(w);
                    continue;
                }
            };
            let value = match (inline, ty) {
                (Some(v), _) => v,
                (None, Ty::Bool) => {
                    if i < argv.len() && !argv[i].starts_with('-') {
                        i += 1;
                        argv[i - 1].clone()
                    } else {
                        String::new()
                    }
                }
                (None, _) => {
                    if i < argv.len() {
                        i += 1;
                        argv[i - 1].clone()
                    } else {
                        warnings.push(format!("Option {name} requires an argument"));
                        continue;
                    }
                }
            };
            raw_opts.push((name, ty, value));
        }
        if !warnings.is_empty() {
            return Err(PveError::BadRequest {
                warnings,
                msg: "unable to parse option".into(),
                usage,
            });
        }

        let mut out = Parsed::default();
        let mut errors: Vec<(String, String)> = Vec::new();
        for (name, ty, value) in raw_opts {
            let value = if ty == Ty::Bool && value.is_empty() {
                "1".to_string()
            } else {
                value
            };
            match check_value(ty, &value) {
                Ok(v) => {
                    out.opts.insert(name, v);
                }
                Err(m) => errors.push((name, m)),
            }
        }
        let mut rest = positional.into_iter();
        for (name, ty) in &self.args {
            match rest.next() {
                Some(v) => match check_value(*ty, &v) {
                    Ok(v) => {
                        out.args.insert(name.to_string(), v);
                    }
                    Err(m) => errors.push((name.to_string(), m)),
                },
                None => errors.push((
                    name.to_string(),
                    "property is missing and it is not optional".into(),
                )),
            }
        }
        if self.extra_args {
            out.extra = rest.collect();
        } else if rest.next().is_some() && errors.is_empty() {
            return Err(PveError::BadRequest {
                warnings: vec![],
                msg: "too many arguments".into(),
                usage,
            });
        }
        if !errors.is_empty() {
            errors.sort();
            return Err(PveError::Param { errors, usage });
        }
        Ok(out)
    }
}

/// Parse a PVE boolean; returns "0" or "1".
pub fn parse_bool(v: &str) -> Option<&'static str> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "yes" | "on" | "true" => Some("1"),
        "0" | "no" | "off" | "false" => Some("0"),
        _ => None,
    }
}

/// Type-check a value like PVE::JSONSchema::check_type and friends; returns the normalised value.
pub fn check_value(ty: Ty, v: &str) -> std::result::Result<String, String> {
    match ty {
        Ty::Str => Ok(v.to_string()),
        Ty::Bool => parse_bool(v)
            .map(str::to_string)
            .ok_or_else(|| format!("type check ('boolean') failed - got '{v}'")),
        Ty::Vmid => parse_vmid(v).map(|n| n.to_string()),
        Ty::Enum(vals) => {
            if vals.contains(&v) {
                Ok(v.to_string())
            } else {
                Err(format!(
                    "value '{v}' does not have a value in the enumeration '{}'",
                    vals.join(", ")
                ))
            }
        }
        Ty::Int(min, max) => {
            let ok = {
                let d = v.strip_prefix(['-', '+']).unwrap_or(v);
                !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())
            };
            let n: i64 = match (ok, v.parse::<i64>()) {
                (true, Ok(n)) => n,
                _ => return Err(format!("type check ('integer') failed - got '{v}'")),
            };
            check_range(n as f64, min.map(|m| m as f64), max.map(|m| m as f64))?;
            Ok(n.to_string())
        }
        Ty::Num(min, max) => {
            let ok = !v.is_empty()
                && v.bytes()
                    .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'+')
                && v.bytes().any(|b| b.is_ascii_digit());
            let n: f64 = match (ok, v.parse::<f64>()) {
                (true, Ok(n)) => n,
                _ => return Err(format!("type check ('number') failed - got '{v}'")),
            };
            check_range(n, min, max)?;
            Ok(v.to_string())
        }
    }
}

fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

fn check_range(n: f64, min: Option<f64>, max: Option<f64>) -> std::result::Result<(), String> {
    if let Some(m) = min {
        if n < m {
            return Err(format!("value must have a minimum value of {}", fmt_num(m)));
        }
    }
    if let Some(m) = max {
        if n > m {
            return Err(format!("value must have a maximum value of {}", fmt_num(m)));
        }
    }
    Ok(())
}

/// Resolve a command word as PVE::CLIHandler does: exact name, else a unique prefix.
pub fn resolve_command<'a>(cmds: &[&'a str], given: &str) -> Option<&'a str> {
    if let Some(c) = cmds.iter().find(|c| **c == given) {
        return Some(c);
    }
    if given.is_empty() {
        return None;
    }
    let m: Vec<&&str> = cmds.iter().filter(|c| c.starts_with(given)).collect();
    if m.len() == 1 {
        Some(m[0])
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            tool: "pct",
            cmd: "create",
            args: vec![("vmid", Ty::Vmid), ("ostemplate", Ty::Str)],
            extra_args: false,
            opts: vec![
                Opt::new("memory", Ty::Int(Some(16), None)),
                Opt::new("start", Ty::Bool),
                Opt::new("storage", Ty::Str),
                Opt::new("unprivileged", Ty::Bool),
                Opt::new("cpulimit", Ty::Num(Some(0.0), Some(8192.0))),
                Opt::new("ostype", Ty::Enum(&["debian", "unmanaged"])),
                Opt::indexed("net", Ty::Str, 32),
                Opt::indexed("mp", Ty::Str, 256),
            ],
        }
    }

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn basic_forms() {
        let p = spec()
            .parse(&v(&[
                "100",
                "local:vztmpl/x.tar",
                "--memory",
                "256",
                "-start",
                "--storage=local-lvm",
                "--mp0",
                "/a,mp=/b",
                "--NET1=name=eth0",
            ]))
            .unwrap();
        assert_eq!(p.vmid(), 100);
        assert_eq!(p.arg("ostemplate"), "local:vztmpl/x.tar");
        assert_eq!(p.opt("memory"), Some("256"));
        assert!(p.flag("start"));
        assert_eq!(p.opt("storage"), Some("local-lvm"));
        assert_eq!(p.opt("mp0"), Some("/a,mp=/b"));
        assert_eq!(p.opt("net1"), Some("name=eth0"));
    }

    #[test]
    fn permute_and_bool_values() {
        let p = spec()
            .parse(&v(&["--unprivileged", "0", "100", "--start", "--", "tmpl"]))
            .unwrap();
        assert_eq!(p.opt("unprivileged"), Some("0"));
        assert_eq!(p.opt("start"), Some("1"));
        assert_eq!(p.arg("ostemplate"), "tmpl");
        let p = spec().parse(&v(&["100", "t", "--start=no"])).unwrap();
        assert!(!p.flag("start"));
        // a boolean eats a following non-option argument (Getopt ':s')
        let e = spec().parse(&v(&["100", "--start", "t"])).unwrap_err();
        let s = e.render().0;
        assert!(
            s.contains("start: type check ('boolean') failed - got 't'"),
            "{s}"
        );
        assert!(s.contains("ostemplate: property is missing and it is not optional"));
    }

    #[test]
    fn abbreviation() {
        let p = spec()
            .parse(&v(&["100", "t", "--mem", "64", "--unpriv"]))
            .unwrap();
        assert_eq!(p.opt("memory"), Some("64"));
        assert!(p.flag("unprivileged"));
        let e = spec().parse(&v(&["100", "t", "--st", "1"])).unwrap_err();
        let s = e.render().0;
        assert!(
            s.starts_with("Option st is ambiguous (start, storage)\n400 unable to parse option\n"),
            "{s}"
        );
    }

    #[test]
    fn errors() {
        let e = spec().parse(&v(&["99", "t"])).unwrap_err();
        assert_eq!(
            e.render().0,
            "400 Parameter verification failed.\nvmid: invalid format - value does not look like a valid VM ID\n\npct create <vmid> <ostemplate> [OPTIONS]\n"
        );
        let e = spec().parse(&v(&["100", "t", "--foo", "1"])).unwrap_err();
        assert_eq!(
            e.render().0,
            "Unknown option: foo\n400 unable to parse option\n\npct create <vmid> <ostemplate> [OPTIONS]\n"
        );
        let e = spec()
            .parse(&v(&["100", "t", "--memory", "8"]))
            .unwrap_err();
        assert!(e
            .render()
            .0
            .contains("memory: value must have a minimum value of 16\n"));
        let e = spec()
            .parse(&v(&["100", "t", "--memory", "x"]))
            .unwrap_err();
        assert!(e
            .render()
            .0
            .contains("memory: type check ('integer') failed - got 'x'\n"));
        let e = spec()
            .parse(&v(&["100", "t", "--ostype", "x"]))
            .unwrap_err();
        assert!(e.render().0.contains(
            "ostype: value 'x' does not have a value in the enumeration 'debian, unmanaged'\n"
        ));
        let e = spec().parse(&v(&["100", "t", "extra"])).unwrap_err();
        assert!(e.render().0.starts_with("400 too many arguments\n"));
        let e = spec().parse(&v(&["100", "t", "--net32", "x"])).unwrap_err();
        assert!(e.render().0.starts_with("Unknown option: net32\n"));
        let e = spec().parse(&v(&["100", "t", "--memory"])).unwrap_err();
        assert!(e
            .render()
            .0
            .starts_with("Option memory requires an argument\n"));
    }

    #[test]
    fn extra_args() {
        let s = Spec {
            tool: "pct",
            cmd: "exec",
            args: vec![("vmid", Ty::Vmid)],
            extra_args: true,
            opts: vec![Opt::new("keep-env", Ty::Bool)],
        };
        let p = s
            .parse(&v(&["101", "--keep-env", "--", "sh", "-c", "exit 3"]))
            .unwrap();
        assert!(p.flag("keep-env"));
        assert_eq!(p.extra, v(&["sh", "-c", "exit 3"]));
        assert_eq!(s.usage(), "pct exec <vmid> [<extra-args>] [OPTIONS]");
    }

    #[test]
    fn commands() {
        let cmds = [
            "create", "start", "stop", "status", "shutdown", "set", "list",
        ];
        assert_eq!(resolve_command(&cmds, "cr"), Some("create"));
        assert_eq!(resolve_command(&cmds, "li"), Some("list"));
        assert_eq!(resolve_command(&cmds, "st"), None);
        assert_eq!(resolve_command(&cmds, "set"), Some("set"));
        assert_eq!(resolve_command(&cmds, "foo"), None);
    }
}
