//! Linux capabilities for the OCI `process.capabilities` sets, applied the way runc
//! does: bounding set dropped while still privileged, `PR_SET_KEEPCAPS` around the
//! uid switch, then `capset` (effective/permitted/inheritable) and the ambient set.
//!
//! Raw syscalls through `libc` only (`capget`/`capset` with
//! `_LINUX_CAPABILITY_VERSION_3`, `prctl`): no libcap, the binary stays static. The
//! calls that run after fork ([`capget`], [`capset`], [`set_keepcaps`],
//! [`drop_bounding`], [`apply_sets`]) are async-signal-safe: no allocation, errors are
//! [`Failure`]s.

use crate::sys::{errno, Failure};
use serde::{Deserialize, Serialize};

/// Every Linux capability, indexed by its number (`CAP_CHOWN` = 0 ... 40).
pub const CAP_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Highest capability number `PR_CAPBSET_DROP` is tried with (the kernel answers
/// EINVAL for numbers above its `cap_last_cap`; two 32-bit words hold 64).
const CAP_MAX: u32 = 63;

/// OCI `process.capabilities`: each set is a list of names; a missing list is empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    #[serde(default)]
    pub bounding: Vec<String>,
    #[serde(default)]
    pub effective: Vec<String>,
    #[serde(default)]
    pub inheritable: Vec<String>,
    #[serde(default)]
    pub permitted: Vec<String>,
    #[serde(default)]
    pub ambient: Vec<String>,
}

/// The sets as bitmasks (bit N = capability N).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapSets {
    pub bounding: u64,
    pub effective: u64,
    pub inheritable: u64,
    pub permitted: u64,
    pub ambient: u64,
}

/// Capability number of `CAP_NET_BIND_SERVICE`-style names (ASCII case-insensitive).
pub fn cap_from_name(name: &str) -> Option<u32> {
    CAP_NAMES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(name))
        .map(|i| i as u32)
}

/// Bitmask of a list of names; an unknown name is an error naming it and the set.
pub fn names_to_mask(names: &[String], set: &str) -> Result<u64, String> {
    let mut m = 0u64;
    for n in names {
        let c = cap_from_name(n)
            .ok_or_else(|| format!("unknown capability {n:?} in capabilities.{set}"))?;
        m |= 1u64 << c;
    }
    Ok(m)
}

impl Capabilities {
    pub fn to_sets(&self) -> Result<CapSets, String> {
        Ok(CapSets {
            bounding: names_to_mask(&self.bounding, "bounding")?,
            effective: names_to_mask(&self.effective, "effective")?,
            inheritable: names_to_mask(&self.inheritable, "inheritable")?,
            permitted: names_to_mask(&self.permitted, "permitted")?,
            ambient: names_to_mask(&self.ambient, "ambient")?,
        })
    }
}

/// Current (effective, permitted, inheritable) of the calling thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Current {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
}

/// The (effective, permitted, inheritable) to pass to capset: the spec's sets clipped
/// to what the kernel allows the caller (permitted ⊆ old permitted, effective ⊆ new
/// permitted, inheritable ⊆ (old inheritable | old permitted) & (old inheritable |
/// bounding)). Capabilities the CT's LXC confinement already took away (`lxc.cap.drop`,
/// or ones this kernel lacks) are thus left out instead of failing the start.
pub fn clip(want: &CapSets, cur: &Current, bset: u64) -> Current {
    let permitted = want.permitted & cur.permitted;
    let effective = want.effective & permitted;
    let inheritable =
        want.inheritable & (cur.inheritable | cur.permitted) & (cur.inheritable | bset);
    Current {
        effective,
        permitted,
        inheritable,
    }
}

/// The ambient capabilities that can be raised: in the new permitted and inheritable.
pub fn ambient_to_raise(want: &CapSets, new: &Current) -> u64 {
    want.ambient & new.permitted & new.inheritable
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn join(lo: u32, hi: u32) -> u64 {
    (lo as u64) | ((hi as u64) << 32)
}

/// capget(2) of the calling thread.
pub fn capget() -> Result<Current, Failure<'static>> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and two data words, as version 3 requires.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut hdr as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(Failure::last("capget"));
    }
    Ok(Current {
        effective: join(data[0].effective, data[1].effective),
        permitted: join(data[0].permitted, data[1].permitted),
        inheritable: join(data[0].inheritable, data[1].inheritable),
    })
}

/// capset(2) of the calling thread.
pub fn capset(c: &Current) -> Result<(), Failure<'static>> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: c.effective as u32,
            permitted: c.permitted as u32,
            inheritable: c.inheritable as u32,
        },
        CapData {
            effective: (c.effective >> 32) as u32,
            permitted: (c.permitted >> 32) as u32,
            inheritable: (c.inheritable >> 32) as u32,
        },
    ];
    // SAFETY: header and two data words, as version 3 requires.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    if r < 0 {
        return Err(Failure::last("capset"));
    }
    Ok(())
}

fn prctl(op: libc::c_int, a: libc::c_ulong, b: libc::c_ulong) -> libc::c_int {
    // SAFETY: integer-only prctl operations.
    unsafe { libc::prctl(op, a, b, 0 as libc::c_ulong, 0 as libc::c_ulong) }
}

/// The name of capability `c` as bytes (`?` past the table), for error messages.
fn cap_name(c: u32) -> &'static [u8] {
    CAP_NAMES.get(c as usize).copied().unwrap_or("?").as_bytes()
}

/// `PR_SET_KEEPCAPS`: keep the permitted set across the setuid to a non-root uid.
pub fn set_keepcaps(on: bool) -> Result<(), Failure<'static>> {
    if prctl(libc::PR_SET_KEEPCAPS, on as libc::c_ulong, 0) < 0 {
        return Err(Failure::last("prctl(PR_SET_KEEPCAPS)"));
    }
    Ok(())
}

/// The current bounding set (capabilities the kernel lacks read as absent).
pub fn bounding_set() -> u64 {
    let mut m = 0;
    for c in 0..=CAP_MAX {
        if prctl(libc::PR_CAPBSET_READ, c as libc::c_ulong, 0) > 0 {
            m |= 1u64 << c;
        }
    }
    m
}

/// Drop every capability not in `keep` from the bounding set. Caps that are already
/// absent are skipped (so nothing needs CAP_SETPCAP when nothing changes); EINVAL
/// (a capability this kernel does not know) is ignored.
pub fn drop_bounding(keep: u64) -> Result<(), Failure<'static>> {
    let have = bounding_set();
    for c in 0..=CAP_MAX {
        let bit = 1u64 << c;
        if keep & bit != 0 || have & bit == 0 {
            continue;
        }
        if prctl(libc::PR_CAPBSET_DROP, c as libc::c_ulong, 0) < 0 && errno() != libc::EINVAL {
            return Err(Failure::last_on("prctl(PR_CAPBSET_DROP)", cap_name(c)));
        }
    }
    Ok(())
}

/// After the uid switch: capset effective/permitted/inheritable (clipped, see
/// [`clip`]), then clear the ambient set and raise each requested ambient capability.
pub fn apply_sets(want: &CapSets) -> Result<(), Failure<'static>> {
    let cur = capget()?;
    let new = clip(want, &cur, bounding_set());
    capset(&new)?;
    let ambient = ambient_to_raise(want, &new);
    let clear = prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
        0,
    );
    // Kernels before 4.3 have no ambient set: fine as long as none is asked for.
    if clear < 0 && (ambient != 0 || errno() != libc::EINVAL) {
        return Err(Failure::last("prctl(PR_CAP_AMBIENT_CLEAR_ALL)"));
    }
    for c in 0..=CAP_MAX {
        if ambient & (1u64 << c) == 0 {
            continue;
        }
        if prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
            c as libc::c_ulong,
        ) < 0
        {
            return Err(Failure::last_on("prctl(PR_CAP_AMBIENT_RAISE)", cap_name(c)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_41_names_map_to_their_numbers() {
        assert_eq!(CAP_NAMES.len(), 41);
        for (i, n) in CAP_NAMES.iter().enumerate() {
            assert_eq!(cap_from_name(n), Some(i as u32), "{n}");
        }
        // Spot checks against linux/capability.h.
        assert_eq!(cap_from_name("CAP_CHOWN"), Some(0));
        assert_eq!(cap_from_name("CAP_KILL"), Some(5));
        assert_eq!(cap_from_name("CAP_NET_BIND_SERVICE"), Some(10));
        assert_eq!(cap_from_name("CAP_SYS_ADMIN"), Some(21));
        assert_eq!(cap_from_name("CAP_SETFCAP"), Some(31));
        assert_eq!(cap_from_name("CAP_MAC_OVERRIDE"), Some(32));
        assert_eq!(cap_from_name("CAP_AUDIT_READ"), Some(37));
        assert_eq!(cap_from_name("CAP_PERFMON"), Some(38));
        assert_eq!(cap_from_name("CAP_BPF"), Some(39));
        assert_eq!(cap_from_name("CAP_CHECKPOINT_RESTORE"), Some(40));
        assert_eq!(cap_from_name("cap_net_raw"), Some(13));
        assert_eq!(cap_from_name("NET_RAW"), None);
        assert_eq!(cap_from_name("CAP_BOGUS"), None);
        assert_eq!(cap_from_name(""), None);
    }

    #[test]
    fn sets_to_bitmasks() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(names_to_mask(&[], "x"), Ok(0));
        assert_eq!(
            names_to_mask(&s(&["CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_CHOWN"]), "x"),
            Ok(1 | 1 << 10)
        );
        assert_eq!(
            names_to_mask(&s(&["CAP_CHECKPOINT_RESTORE", "CAP_MAC_OVERRIDE"]), "x"),
            Ok(1 << 40 | 1 << 32)
        );
        let all: Vec<String> = CAP_NAMES.iter().map(|n| n.to_string()).collect();
        assert_eq!(names_to_mask(&all, "x"), Ok((1u64 << 41) - 1));
        let e = names_to_mask(&s(&["CAP_KILL", "CAP_NOPE"]), "ambient").unwrap_err();
        assert!(e.contains("CAP_NOPE") && e.contains("ambient"), "{e}");

        let c = Capabilities {
            bounding: s(&["CAP_KILL", "CAP_NET_BIND_SERVICE"]),
            effective: s(&["CAP_KILL"]),
            inheritable: vec![],
            permitted: s(&["CAP_KILL"]),
            ambient: s(&["CAP_NET_BIND_SERVICE"]),
        };
        assert_eq!(
            c.to_sets(),
            Ok(CapSets {
                bounding: 1 << 5 | 1 << 10,
                effective: 1 << 5,
                inheritable: 0,
                permitted: 1 << 5,
                ambient: 1 << 10,
            })
        );
        let bad = Capabilities {
            inheritable: s(&["CAP_X"]),
            ..Default::default()
        };
        assert!(bad.to_sets().unwrap_err().contains("inheritable"));
    }

    #[test]
    fn clipping_to_what_the_kernel_allows() {
        let want = CapSets {
            bounding: 0,
            effective: 0b1111,
            permitted: 0b0111,
            inheritable: 0b1111,
            ambient: 0b1011,
        };
        // Full root: only effective ⊆ permitted is enforced.
        let root = Current {
            effective: u64::MAX,
            permitted: u64::MAX,
            inheritable: 0,
        };
        let n = clip(&want, &root, u64::MAX);
        assert_eq!(
            (n.effective, n.permitted, n.inheritable),
            (0b0111, 0b0111, 0b1111)
        );
        assert_eq!(ambient_to_raise(&want, &n), 0b0011);
        // A CT that lost cap 1 (lxc.cap.drop) from permitted and bounding.
        let ct = Current {
            effective: 0,
            permitted: !0b0010,
            inheritable: 0,
        };
        let n = clip(&want, &ct, !0b0010);
        assert_eq!(
            (n.effective, n.permitted, n.inheritable),
            (0b0101, 0b0101, 0b1101)
        );
        assert_eq!(ambient_to_raise(&want, &n), 0b0001);
    }

    #[test]
    fn capget_roundtrip() {
        // Setting the current sets again is always allowed.
        let cur = capget().unwrap();
        assert_eq!(cur.effective & !cur.permitted, 0);
        capset(&cur).unwrap();
        assert_eq!(capget().unwrap(), cur);
    }
}
