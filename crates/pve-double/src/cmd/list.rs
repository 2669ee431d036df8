//! `pct list`.

use super::{all_vmids, load_config, Ctx};
use crate::error::Result;
use crate::lxc;

/// One row as PVE prints it: `printf("%-10s %-10s %-12s %-20s\n", ...)`.
pub fn format_row(vmid: &str, status: &str, lock: &str, name: &str) -> String {
    format!("{vmid:<10} {status:<10} {lock:<12} {name:<20}\n")
}

/// The whole listing (empty when there are no CTs); rows must already be sorted.
pub fn format_list(rows: &[(u32, String, String, String)]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut out = format_row("VMID", "Status", "Lock", "Name");
    for (vmid, status, lock, name) in rows {
        out.push_str(&format_row(&vmid.to_string(), status, lock, name));
    }
    out
}

pub fn run(ctx: &Ctx) -> Result<()> {
    let root = &ctx.root;
    let mut rows = Vec::new();
    for vmid in all_vmids(root) {
        let Ok(conf) = load_config(root, vmid) else {
            continue;
        };
        let status = if lxc::is_running(root, vmid) {
            "running"
        } else {
            "stopped"
        };
        rows.push((
            vmid,
            status.to_string(),
            conf.lock().unwrap_or("").to_string(),
            conf.hostname(vmid),
        ));
    }
    print!("{}", format_list(&rows));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(format_list(&[]), "");
        let out = format_list(&[
            (100, "running".into(), "".into(), "web".into()),
            (1000, "stopped".into(), "create".into(), "CT1000".into()),
        ]);
        assert_eq!(
            out,
            "VMID       Status     Lock         Name                \n\
             100        running                 web                 \n\
             1000       stopped    create       CT1000              \n"
        );
    }

    #[test]
    fn long_names_not_truncated() {
        let r = format_row("101", "running", "", "a-very-long-hostname-indeed");
        assert_eq!(
            r,
            "101        running                 a-very-long-hostname-indeed\n"
        );
    }
}
