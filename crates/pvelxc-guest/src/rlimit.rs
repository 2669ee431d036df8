//! OCI rlimit names (`RLIMIT_NOFILE`) ↔ resource numbers.

/// Every rlimit type the OCI runtime spec names, with its resource number.
pub const RLIMITS: [(&str, libc::__rlimit_resource_t); 16] = [
    ("RLIMIT_AS", libc::RLIMIT_AS),
    ("RLIMIT_CORE", libc::RLIMIT_CORE),
    ("RLIMIT_CPU", libc::RLIMIT_CPU),
    ("RLIMIT_DATA", libc::RLIMIT_DATA),
    ("RLIMIT_FSIZE", libc::RLIMIT_FSIZE),
    ("RLIMIT_LOCKS", libc::RLIMIT_LOCKS),
    ("RLIMIT_MEMLOCK", libc::RLIMIT_MEMLOCK),
    ("RLIMIT_MSGQUEUE", libc::RLIMIT_MSGQUEUE),
    ("RLIMIT_NICE", libc::RLIMIT_NICE),
    ("RLIMIT_NOFILE", libc::RLIMIT_NOFILE),
    ("RLIMIT_NPROC", libc::RLIMIT_NPROC),
    ("RLIMIT_RSS", libc::RLIMIT_RSS),
    ("RLIMIT_RTPRIO", libc::RLIMIT_RTPRIO),
    ("RLIMIT_RTTIME", libc::RLIMIT_RTTIME),
    ("RLIMIT_SIGPENDING", libc::RLIMIT_SIGPENDING),
    ("RLIMIT_STACK", libc::RLIMIT_STACK),
];

/// Map an OCI rlimit type (`RLIMIT_NOFILE`, exact spelling) to the resource number.
pub fn rlimit_resource(kind: &str) -> Option<libc::__rlimit_resource_t> {
    RLIMITS.iter().find(|(n, _)| *n == kind).map(|(_, r)| *r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_rlimits_known() {
        for (k, r) in RLIMITS {
            assert_eq!(rlimit_resource(k), Some(r), "{k}");
        }
        assert_eq!(rlimit_resource("RLIMIT_NOFILE"), Some(libc::RLIMIT_NOFILE));
        assert_eq!(rlimit_resource("RLIMIT_STACK"), Some(libc::RLIMIT_STACK));
        assert!(rlimit_resource("nofile").is_none());
        assert!(rlimit_resource("rlimit_nofile").is_none());
    }
}
