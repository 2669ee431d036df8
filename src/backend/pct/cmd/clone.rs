//! `pct clone <vmid> <newid> [OPTIONS]` arguments (PVE::API2::LXC `clone_vm`).
//!
//! From a template the default is a linked clone (`--full 0`); `--storage` is refused for
//! linked clones (`parameter 'storage' not allowed for linked clones`). Everything else of
//! the source's config is copied (tags too: change them with `pct set` afterwards).

use std::ffi::OsString;

use super::super::vmid::Vmid;
use super::values::storage_id;
use super::{b, invalid, plain, prop_value, push, CmdError, Hostname};

#[derive(Debug, Clone, PartialEq)]
pub struct CloneArgs {
    pub vmid: Vmid,
    pub newid: Vmid,
    /// None: pct's default (linked from a template, full otherwise).
    pub full: Option<bool>,
    pub hostname: Option<Hostname>,
    /// May contain newlines.
    pub description: Option<String>,
    pub pool: Option<String>,
    /// Target storage: full clones only.
    pub storage: Option<String>,
    pub snapname: Option<String>,
}

impl CloneArgs {
    pub fn new(vmid: Vmid, newid: Vmid) -> Self {
        CloneArgs {
            vmid,
            newid,
            full: None,
            hostname: None,
            description: None,
            pool: None,
            storage: None,
            snapname: None,
        }
    }

    /// Everything after `clone <vmid>`.
    pub(super) fn render(&self, a: &mut Vec<OsString>) -> Result<(), CmdError> {
        if self.vmid == self.newid {
            return Err(invalid("newid", "the clone needs a VMID of its own"));
        }
        a.push(self.newid.to_string().into());
        if let Some(f) = self.full {
            push(a, "full", b(f));
        }
        if let Some(h) = &self.hostname {
            push(a, "hostname", h.as_str());
        }
        if let Some(d) = &self.description {
            plain("description", d)?;
            push(a, "description", d.as_str());
        }
        if let Some(p) = &self.pool {
            prop_value("pool", p)?;
            push(a, "pool", p.as_str());
        }
        if let Some(s) = &self.storage {
            if self.full != Some(true) {
                return Err(invalid(
                    "storage",
                    "parameter 'storage' not allowed for linked clones",
                ));
            }
            storage_id("storage", s)?;
            push(a, "storage", s.as_str());
        }
        if let Some(s) = &self.snapname {
            prop_value("snapname", s)?;
            push(a, "snapname", s.as_str());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::PctCommand;
    use super::*;

    fn v(n: u32) -> Vmid {
        Vmid::new(n).unwrap()
    }

    fn s(c: &PctCommand) -> Vec<String> {
        c.argv()
            .unwrap()
            .into_iter()
            .map(|x| x.into_string().unwrap())
            .collect()
    }

    #[test]
    fn clone_argv() {
        let mut c = CloneArgs::new(v(1000), v(1001));
        c.hostname = Some(Hostname::sanitize("default_web"));
        c.description = Some("namespace: default\nid: web\n".into());
        assert_eq!(
            s(&PctCommand::Clone(Box::new(c.clone()))),
            [
                "clone",
                "1000",
                "1001",
                "--hostname",
                "default-web",
                "--description",
                "namespace: default\nid: web\n"
            ]
        );
        c.full = Some(true);
        c.storage = Some("local-lvm".into());
        c.hostname = None;
        c.description = None;
        assert_eq!(
            s(&PctCommand::Clone(Box::new(c))),
            [
                "clone",
                "1000",
                "1001",
                "--full",
                "1",
                "--storage",
                "local-lvm"
            ]
        );
        let cmd = PctCommand::Clone(Box::new(CloneArgs::new(v(1000), v(1002))));
        assert!(cmd.takes_lock() && cmd.is_worker_task());
        assert_eq!(cmd.vmid(), Some(v(1000)));
    }

    #[test]
    fn clone_refusals() {
        let mut c = CloneArgs::new(v(1000), v(1001));
        c.storage = Some("local-lvm".into());
        let e = PctCommand::Clone(Box::new(c)).argv().unwrap_err();
        assert!(
            e.to_string().contains("not allowed for linked clones"),
            "{e}"
        );
        let same = PctCommand::Clone(Box::new(CloneArgs::new(v(1000), v(1000))));
        assert!(same.argv().is_err());
    }

    #[test]
    fn template_argv() {
        let t = PctCommand::Template { vmid: v(1000) };
        assert_eq!(s(&t), ["template", "1000"]);
        assert!(t.takes_lock() && t.is_worker_task());
    }
}
