//! `pvelxc.*` kernel command-line parameters: written by the host, parsed by the guest agent.
//!
//! * `pvelxc.share=9p|virtiofs` — transport of the rootfs (tag [`crate::modules::ROOTFS_TAG`]).
//! * `pvelxc.ro=1` — mount the rootfs read-only.
//! * `pvelxc.hostname=NAME`
//! * `pvelxc.mount=TAG:GUEST_PATH:ro|rw` — repeatable; extra share `TAG` mounted at `GUEST_PATH`
//!   inside the rootfs (same transport as the rootfs).
//!
//! Values must not contain whitespace, `"` or `:` (`GUEST_PATH` may not contain `:` either).

use std::fmt;

/// How host directories are shared with the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Share {
    /// virtio-9p (QEMU's built-in file server).
    #[default]
    NineP,
    /// virtio-fs (needs a `virtiofsd` per share and a shared-memory guest RAM backend).
    VirtioFs,
}

/// An extra shared directory as the guest sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestMount {
    pub tag: String,
    /// Absolute path inside the rootfs.
    pub path: String,
    pub read_only: bool,
}

/// Everything the guest reads from its command line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BootParams {
    pub share: Share,
    pub read_only: bool,
    pub hostname: String,
    pub mounts: Vec<GuestMount>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadParam(pub String);

impl fmt::Display for BadParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid boot parameter value {:?}", self.0)
    }
}

impl std::error::Error for BadParam {}

fn check(v: &str) -> Result<&str, BadParam> {
    if v.is_empty()
        || v.chars()
            .any(|c| c.is_whitespace() || c == '"' || c == ':' || c.is_control())
    {
        Err(BadParam(v.to_string()))
    } else {
        Ok(v)
    }
}

impl BootParams {
    /// The kernel command-line words for these parameters.
    pub fn to_args(&self) -> Result<Vec<String>, BadParam> {
        let mut v = vec![format!(
            "pvelxc.share={}",
            match self.share {
                Share::NineP => "9p",
                Share::VirtioFs => "virtiofs",
            }
        )];
        if self.read_only {
            v.push("pvelxc.ro=1".into());
        }
        if !self.hostname.is_empty() {
            v.push(format!("pvelxc.hostname={}", check(&self.hostname)?));
        }
        for m in &self.mounts {
            if !m.path.starts_with('/') {
                return Err(BadParam(m.path.clone()));
            }
            v.push(format!(
                "pvelxc.mount={}:{}:{}",
                check(&m.tag)?,
                check(&m.path)?,
                if m.read_only { "ro" } else { "rw" }
            ));
        }
        Ok(v)
    }

    /// Parses `/proc/cmdline`; unknown words are ignored, malformed `pvelxc.mount` values skipped.
    pub fn parse(cmdline: &str) -> BootParams {
        let mut p = BootParams::default();
        for word in cmdline.split_whitespace() {
            let Some((key, val)) = word.split_once('=') else {
                continue;
            };
            match key {
                "pvelxc.share" => {
                    p.share = if val == "virtiofs" {
                        Share::VirtioFs
                    } else {
                        Share::NineP
                    };
                }
                "pvelxc.ro" => p.read_only = val == "1",
                "pvelxc.hostname" => p.hostname = val.to_string(),
                "pvelxc.mount" => {
                    let parts: Vec<&str> = val.split(':').collect();
                    if let [tag, path, mode] = parts[..] {
                        if path.starts_with('/') {
                            p.mounts.push(GuestMount {
                                tag: tag.to_string(),
                                path: path.to_string(),
                                read_only: mode == "ro",
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let p = BootParams {
            share: Share::VirtioFs,
            read_only: true,
            hostname: "ct1".into(),
            mounts: vec![GuestMount {
                tag: "m0".into(),
                path: "/data".into(),
                read_only: false,
            }],
        };
        let line = format!(
            "console=ttyS0 quiet {} panic=-1",
            p.to_args().unwrap().join(" ")
        );
        assert_eq!(BootParams::parse(&line), p);
    }

    #[test]
    fn rejects_spaces() {
        let p = BootParams {
            hostname: "a b".into(),
            ..Default::default()
        };
        assert!(p.to_args().is_err());
    }
}
