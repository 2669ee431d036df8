//! Which keys a container config may hold: pct's known keys (plain and numbered) and the raw
//! `lxc.*` keys it lets through.

/// Keys pct knows (for `key: value` lines); numbered ones are listed by prefix.
const KNOWN: &[&str] = &[
    "arch",
    "cmode",
    "console",
    "cores",
    "cpulimit",
    "cpuunits",
    "debug",
    "description",
    "digest",
    "entrypoint",
    "env",
    "features",
    "hookscript",
    "hostname",
    "lock",
    "memory",
    "nameserver",
    "onboot",
    "ostype",
    "parent",
    "protection",
    "rootfs",
    "searchdomain",
    "snaptime",
    "startup",
    "swap",
    "tags",
    "template",
    "timezone",
    "tty",
    "unprivileged",
];
const KNOWN_INDEXED: &[(&str, u32)] = &[("net", 32), ("mp", 256), ("dev", 256), ("unused", 256)];

/// lxc.* keys the config may carry raw (prefix match on these).
const LXC_ALLOWED: &[&str] = &[
    "lxc.apparmor.",
    "lxc.cap.drop",
    "lxc.cap.keep",
    "lxc.cgroup.",
    "lxc.cgroup2.",
    "lxc.console.logfile",
    "lxc.console.path",
    "lxc.environment",
    "lxc.hook.",
    "lxc.idmap",
    "lxc.init.cmd",
    "lxc.init.cwd",
    "lxc.init.gid",
    "lxc.init.groups",
    "lxc.init.uid",
    "lxc.log.file",
    "lxc.log.level",
    "lxc.mount.auto",
    "lxc.mount.entry",
    "lxc.mount.fstab",
    "lxc.net.",
    "lxc.prlimit.",
    "lxc.seccomp.",
    "lxc.signal.",
    "lxc.start.",
    "lxc.sysctl.",
    "lxc.tty.",
    "lxc.pty.",
    "lxc.autodev",
    "lxc.proc.",
    "lxc.rootfs.mount",
    "lxc.rootfs.managed",
];

/// Is `key` a config key pct accepts?
pub fn is_known_key(key: &str) -> bool {
    if KNOWN.contains(&key) {
        return true;
    }
    KNOWN_INDEXED.iter().any(|(p, n)| {
        key.strip_prefix(p)
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<u32>().ok())
            .map(|i| i < *n)
            .unwrap_or(false)
    })
}

/// Is this raw lxc key allowed in a pct config?
pub fn lxc_key_allowed(key: &str) -> bool {
    if key == "lxc.rootfs.path" || key == "lxc.rootfs.options" {
        return false;
    }
    LXC_ALLOWED.iter().any(|p| {
        if p.ends_with('.') {
            key.starts_with(p)
        } else {
            key == *p || key.starts_with(&format!("{p}."))
        }
    })
}
