//! OCI mount options (as runc reads them) split into mount(2) flags, attributes for a bind
//! mount, propagation and the filesystem's own data string.

use super::sys::{ATTR_NODEV, ATTR_NOEXEC, ATTR_NOSUID, ATTR_RDONLY};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MountOpts {
    /// `MS_*` flags for a fresh filesystem (`ro`, `nosuid`, `nodev`, `noexec`, atime flags).
    pub flags: libc::c_ulong,
    /// `MOUNT_ATTR_*` bits a bind mount gets afterwards (`ro`, `nosuid`, `nodev`, `noexec`).
    pub attrs: u64,
    /// Bits applied to every mount below a bind too (`rro`, `rnosuid`, `rnodev`, `rnoexec`).
    pub rattrs: u64,
    /// `rbind`.
    pub recursive: bool,
    /// `MS_PRIVATE`/`MS_SLAVE`/`MS_SHARED`/`MS_UNBINDABLE` (with `MS_REC` for the `r` forms).
    pub propagation: libc::c_ulong,
    /// Filesystem options (`mode=755`, `size=65536k`, `newinstance`, ...), in order.
    pub data: Vec<String>,
}

impl MountOpts {
    pub fn parse(options: &[String]) -> MountOpts {
        let mut o = MountOpts::default();
        for opt in options {
            let (set, clear, attr): (libc::c_ulong, libc::c_ulong, u64) = match opt.as_str() {
                "ro" => (libc::MS_RDONLY, 0, ATTR_RDONLY),
                "rw" => (0, libc::MS_RDONLY, 0),
                "nosuid" => (libc::MS_NOSUID, 0, ATTR_NOSUID),
                "suid" => (0, libc::MS_NOSUID, 0),
                "nodev" => (libc::MS_NODEV, 0, ATTR_NODEV),
                "dev" => (0, libc::MS_NODEV, 0),
                "noexec" => (libc::MS_NOEXEC, 0, ATTR_NOEXEC),
                "exec" => (0, libc::MS_NOEXEC, 0),
                "relatime" => (libc::MS_RELATIME, 0, 0),
                "norelatime" => (0, libc::MS_RELATIME, 0),
                "noatime" => (libc::MS_NOATIME, 0, 0),
                "atime" => (0, libc::MS_NOATIME, 0),
                "strictatime" => (libc::MS_STRICTATIME, 0, 0),
                "nostrictatime" => (0, libc::MS_STRICTATIME, 0),
                "nodiratime" => (libc::MS_NODIRATIME, 0, 0),
                "diratime" => (0, libc::MS_NODIRATIME, 0),
                "sync" => (libc::MS_SYNCHRONOUS, 0, 0),
                "async" => (0, libc::MS_SYNCHRONOUS, 0),
                "dirsync" => (libc::MS_DIRSYNC, 0, 0),
                "nosymfollow" => (libc::MS_NOSYMFOLLOW, 0, 0),
                "bind" | "defaults" | "mand" | "nomand" | "tmpcopyup" => (0, 0, 0),
                "rbind" => {
                    o.recursive = true;
                    (0, 0, 0)
                }
                "rro" | "rnosuid" | "rnodev" | "rnoexec" => {
                    o.rattrs |= match opt.as_str() {
                        "rro" => ATTR_RDONLY,
                        "rnosuid" => ATTR_NOSUID,
                        "rnodev" => ATTR_NODEV,
                        _ => ATTR_NOEXEC,
                    };
                    (0, 0, 0)
                }
                p @ ("private" | "rprivate" | "slave" | "rslave" | "shared" | "rshared"
                | "unbindable" | "runbindable") => {
                    let base = match p.trim_start_matches('r') {
                        "private" => libc::MS_PRIVATE,
                        "slave" => libc::MS_SLAVE,
                        "shared" => libc::MS_SHARED,
                        _ => libc::MS_UNBINDABLE,
                    };
                    let rec = if p.starts_with('r') { libc::MS_REC } else { 0 };
                    o.propagation = base | rec;
                    (0, 0, 0)
                }
                other => {
                    o.data.push(other.to_string());
                    (0, 0, 0)
                }
            };
            o.flags = (o.flags | set) & !clear;
            if clear & libc::MS_RDONLY != 0 {
                o.attrs &= !ATTR_RDONLY;
            }
            if clear & libc::MS_NOSUID != 0 {
                o.attrs &= !ATTR_NOSUID;
            }
            if clear & libc::MS_NODEV != 0 {
                o.attrs &= !ATTR_NODEV;
            }
            if clear & libc::MS_NOEXEC != 0 {
                o.attrs &= !ATTR_NOEXEC;
            }
            o.attrs |= attr;
        }
        o
    }

    /// The data string (`None` when there is none).
    pub fn data_string(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }

    /// Whether the data has an option `key=...` or `key`.
    pub fn has(&self, key: &str) -> bool {
        self.data
            .iter()
            .any(|d| d == key || d.split_once('=').is_some_and(|(k, _)| k == key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> MountOpts {
        MountOpts::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn flags_and_data() {
        let o = p(&["nosuid", "strictatime", "mode=755", "size=65536k"]);
        assert_eq!(o.flags, libc::MS_NOSUID | libc::MS_STRICTATIME);
        assert_eq!(o.attrs, ATTR_NOSUID);
        assert_eq!(o.data_string().as_deref(), Some("mode=755,size=65536k"));
        assert!(o.has("mode") && o.has("size") && !o.has("gid"));
        assert!(!o.recursive);

        let o = p(&["rbind", "ro", "nodev", "noexec", "rprivate"]);
        assert!(o.recursive);
        assert_eq!(o.attrs, ATTR_RDONLY | ATTR_NODEV | ATTR_NOEXEC);
        assert_eq!(o.propagation, libc::MS_PRIVATE | libc::MS_REC);
        assert_eq!(o.data_string(), None);

        // Later options win, as in mount(8).
        let o = p(&["ro", "rw", "noexec", "exec", "slave"]);
        assert_eq!(o.flags, 0);
        assert_eq!(o.attrs, 0);
        assert_eq!(o.propagation, libc::MS_SLAVE);

        let o = p(&["bind", "rro", "newinstance", "gid=5"]);
        assert_eq!(o.rattrs, ATTR_RDONLY);
        assert!(o.has("newinstance") && o.has("gid"));
    }
}
