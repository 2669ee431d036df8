//! OCI settings a Proxmox CT cannot take through `pct` options: applied another way where
//! Proxmox allows it (the pids limit as a raw `lxc.cgroup*.pids.max` line, a read-only root by
//! the init), otherwise named in a warning — or refused when `[pct] strict = true`. Never
//! dropped silently.

use oci_spec::runtime::Spec;

use crate::error::{Error, Result};

/// Raw LXC config lines for limits pct has no option for.
pub fn raw_lines(spec: &Spec, unified: bool) -> Vec<String> {
    let mut out = Vec::new();
    let pids = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.pids().as_ref())
        .map(|p| p.limit())
        .filter(|l| *l > 0);
    if let Some(l) = pids {
        let key = if unified {
            "lxc.cgroup2.pids.max"
        } else {
            "lxc.cgroup.pids.max"
        };
        out.push(format!("{key}: {l}"));
    }
    out
}

/// Settings of the spec that a CT ignores, each with the reason.
pub fn dropped(spec: &Spec) -> Vec<String> {
    let mut out = Vec::new();
    let Some(l) = spec.linux().as_ref() else {
        return out;
    };
    if l.seccomp().is_some() {
        out.push("linux.seccomp (the CT runs under Proxmox's own seccomp policy)".to_string());
    }
    if l.sysctl().as_ref().is_some_and(|s| !s.is_empty()) {
        out.push("linux.sysctl (not settable per CT)".to_string());
    }
    if let Some(r) = l.resources() {
        if r.block_io().is_some() {
            out.push("linux.resources.blockIO (no per-CT I/O weights in pct)".to_string());
        }
        if r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()) {
            out.push("linux.resources.hugepageLimits".to_string());
        }
        if r.unified().as_ref().is_some_and(|u| !u.is_empty()) {
            out.push("linux.resources.unified (raw cgroup v2 files)".to_string());
        }
    }
    if spec
        .process()
        .as_ref()
        .and_then(|p| p.apparmor_profile().as_ref())
        .is_some_and(|a| !a.is_empty())
    {
        out.push("process.apparmorProfile (the CT's own AppArmor profile applies)".to_string());
    }
    if spec.hooks().is_some() {
        out.push("hooks (OCI runtime hooks are not run for CTs)".to_string());
    }
    out
}

/// Warn about (or, when `strict`, refuse) every ignored setting.
pub fn check_dropped(spec: &Spec, strict: bool) -> Result<()> {
    let d = dropped(spec);
    if d.is_empty() {
        return Ok(());
    }
    if strict {
        return Err(Error::InvalidArgument(format!(
            "the pct backend cannot apply: {} ([pct] strict = true)",
            d.join("; ")
        )));
    }
    for x in &d {
        log::warn!("pct: ignored setting: {x}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxBuilder, LinuxPidsBuilder, LinuxResourcesBuilder, LinuxSeccompBuilder, SpecBuilder,
    };

    fn spec(pids: Option<i64>, seccomp: bool) -> Spec {
        let mut r = LinuxResourcesBuilder::default();
        if let Some(p) = pids {
            r = r.pids(LinuxPidsBuilder::default().limit(p).build().unwrap());
        }
        let mut l = LinuxBuilder::default().resources(r.build().unwrap());
        if seccomp {
            l = l.seccomp(LinuxSeccompBuilder::default().build().unwrap());
        }
        SpecBuilder::default().linux(l.build().unwrap()).build().unwrap()
    }

    #[test]
    fn pids_become_raw_lines() {
        assert_eq!(raw_lines(&spec(Some(64), false), true), ["lxc.cgroup2.pids.max: 64"]);
        assert_eq!(raw_lines(&spec(Some(64), false), false), ["lxc.cgroup.pids.max: 64"]);
        assert!(raw_lines(&spec(None, false), true).is_empty());
    }

    #[test]
    fn ignored_settings_are_named() {
        let s = spec(None, true);
        assert!(dropped(&s)[0].starts_with("linux.seccomp"));
        assert!(check_dropped(&s, false).is_ok());
        let e = check_dropped(&s, true).unwrap_err().to_string();
        assert!(e.contains("seccomp") && e.contains("strict"), "{e}");
        let mut plain = spec(None, false);
        plain.set_hooks(None);
        assert!(check_dropped(&plain, true).is_ok());
    }
}
