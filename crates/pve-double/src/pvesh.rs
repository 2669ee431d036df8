//! `pvesh get /cluster/nextid`, `/nodes`, `/nodes/<node>/lxc[/<vmid>/status/current|config]`.

use serde_json::{json, Value};

use crate::cmd::{all_vmids, load_config, status::vm_status};
use crate::error::{die, param_err, PveError, Result};
use crate::getopt::{resolve_command, Opt, Spec, Ty};
use crate::paths::Root;

/// Parse `next-id: lower=N,upper=M` from datacenter.cfg (defaults 100, 1000000).
pub fn nextid_range(datacenter_cfg: &str) -> (u64, u64) {
    let (mut lower, mut upper) = (100u64, 1_000_000u64);
    for l in datacenter_cfg.lines() {
        if let Some(v) = l.strip_prefix("next-id:") {
            for kv in v.trim().split(',') {
                match kv.split_once('=') {
                    Some(("lower", n)) => lower = n.trim().parse().unwrap_or(lower),
                    Some(("upper", n)) => upper = n.trim().parse().unwrap_or(upper),
                    _ => {}
                }
            }
        }
    }
    (lower, upper)
}

/// Lowest free VMID in [lower, upper) given the used ones.
pub fn next_free(used: &[u32], lower: u64, upper: u64) -> Option<u64> {
    (lower..upper).find(|i| !used.iter().any(|u| u64::from(*u) == *i))
}

fn get(root: &Root, path: &str, vmid_opt: Option<&str>, usage: &str) -> Result<Value> {
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let no_handler = || die(format!("No 'get' handler defined for '{path}'"));
    match parts.as_slice() {
        ["cluster", "nextid"] => {
            // every guest of every node (.vmlist), VMs included
            let used = crate::cluster::all_ids(root);
            if let Some(v) = vmid_opt {
                let n: u32 = crate::vmid::parse_vmid(v).map_err(|e| param_err("vmid", e, usage))?;
                if used.contains(&n) {
                    return Err(param_err("vmid", format!("VM {n} already exists"), usage));
                }
                return Ok(json!(n.to_string()));
            }
            let cfg = std::fs::read_to_string(root.datacenter_cfg()).unwrap_or_default();
            let (lower, upper) = nextid_range(&cfg);
            match next_free(&used, lower, upper) {
                Some(n) => Ok(json!(n.to_string())),
                None => Err(die(format!(
                    "unable to get any free VMID in range [{lower}, {upper}]"
                ))),
            }
        }
        ["nodes"] => Ok(json!([{ "node": root.node, "status": "online", "type": "node" }])),
        ["nodes", node, rest @ ..] => {
            if *node != root.node && *node != "localhost" {
                return Err(die(format!(
                    "hostname lookup '{node}' failed - failed to get address info for: {node}: Name or service not known"
                )));
            }
            match rest {
                ["lxc"] => {
                    let mut list = Vec::new();
                    for vmid in all_vmids(root) {
                        if let Ok(conf) = load_config(root, vmid) {
                            let st = vm_status(root, vmid, &conf);
                            list.push(Value::Object(st.into_iter().collect()));
                        }
                    }
                    Ok(Value::Array(list))
                }
                ["lxc", id, tail @ ..] => {
                    let vmid =
                        crate::vmid::parse_vmid(id).map_err(|e| param_err("vmid", e, usage))?;
                    let conf = load_config(root, vmid)?;
                    match tail {
                        ["status", "current"] => Ok(Value::Object(
                            vm_status(root, vmid, &conf).into_iter().collect(),
                        )),
                        ["config"] => {
                            let mut m = serde_json::Map::new();
                            for (k, v) in &conf.main.keys {
                                m.insert(k.clone(), json!(v));
                            }
                            if let Some(d) = &conf.main.description {
                                m.insert("description".into(), json!(d));
                            }
                            Ok(Value::Object(m))
                        }
                        _ => Err(no_handler()),
                    }
                }
                _ => Err(no_handler()),
            }
        }
        _ => Err(no_handler()),
    }
}

fn render(v: &Value, format: &str) -> String {
    match (format, v) {
        ("json", _) => format!("{v}\n"),
        ("json-pretty", _) => format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default()),
        (_, Value::String(s)) => format!("{s}\n"),
        (_, Value::Number(n)) => format!("{n}\n"),
        _ => format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default()),
    }
}

/// Run pvesh with argv (without the tool name).
pub fn run(root: &Root, faults: &crate::faults::Faults, args: &[String]) -> Result<()> {
    const CMDS: &[&str] = &["create", "delete", "get", "help", "ls", "set", "usage"];
    let Some(first) = args.first() else {
        return Err(PveError::UnknownCommand {
            tool: "pvesh".into(),
            cmdline: "pvesh".into(),
        });
    };
    let Some(cmd) = resolve_command(CMDS, first) else {
        return Err(PveError::UnknownCommand {
            tool: "pvesh".into(),
            cmdline: format!("pvesh {first}"),
        });
    };
    if cmd != "get" {
        return Err(die(format!("pve-double: 'pvesh {cmd}' is not implemented")));
    }
    let spec = Spec {
        tool: "pvesh",
        cmd: "get",
        args: vec![("api_path", Ty::Str)],
        extra_args: false,
        opts: vec![
            Opt::new("human-readable", Ty::Bool),
            Opt::new("noborder", Ty::Bool),
            Opt::new("noheader", Ty::Bool),
            Opt::new(
                "output-format",
                Ty::Enum(&["text", "json", "json-pretty", "yaml"]),
            ),
            Opt::new("quiet", Ty::Bool),
            Opt::new("vmid", Ty::Str),
        ],
    };
    let p = spec.parse(&args[1..])?;
    if let Some(msg) = faults.failure("pvesh", None) {
        return Err(die(msg));
    }
    let path = p.arg("api_path");
    let v = get(
        root,
        path,
        p.opt("vmid"),
        &format!("pvesh get {path} [OPTIONS]"),
    )?;
    print!("{}", render(&v, p.opt("output-format").unwrap_or("text")));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_and_next() {
        assert_eq!(nextid_range(""), (100, 1_000_000));
        assert_eq!(
            nextid_range("keyboard: en-us\nnext-id: lower=5000,upper=5002\n"),
            (5000, 5002)
        );
        assert_eq!(next_free(&[100, 101, 103], 100, 1000), Some(102));
        assert_eq!(next_free(&[5000, 5001], 5000, 5002), None);
    }

    #[test]
    fn rendering() {
        assert_eq!(render(&json!("100"), "text"), "100\n");
        assert_eq!(render(&json!("100"), "json"), "\"100\"\n");
    }
}
