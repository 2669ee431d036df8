//! VMIDs: validation (pct's grammar) and a host-wide allocator.
//!
//! `pvesh get /cluster/nextid` reserves nothing, so two shims creating at the same time
//! get the same number. The [`Allocator`] serialises allocation with `flock` on a lock
//! file, picks the lowest id of a configured range that is neither in use (as reported by
//! the caller: `pct list`, `/etc/pve/{lxc,qemu-server}/*.conf`, `pvesh` ...) nor reserved
//! by another shim, and records a reservation (with an expiry) in a small file until the
//! caller releases it (after `pct create` succeeded, the CT itself marks the id as used).
//! `pct create` can still race with ids allocated outside this allocator (an admin, the
//! web UI): retry on "already exists" with a bounded [`RetryPolicy`].
//!
//! The id types and the retry policy are here; the allocator is in `alloc` (re-exported).

mod alloc;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::output::PctError;

pub use alloc::{
    parse_reservations, pick_free, render_reservations, vmids_in_config_dirs, Allocator,
    Reservation,
};

/// A valid Proxmox VMID: `^[1-9][0-9]{2,8}$`, i.e. 100..=999_999_999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vmid(u32);

impl Vmid {
    pub const MIN: u32 = 100;
    pub const MAX: u32 = 999_999_999;

    pub fn new(n: u32) -> Result<Vmid, VmidError> {
        if (Self::MIN..=Self::MAX).contains(&n) {
            Ok(Vmid(n))
        } else {
            Err(VmidError::Invalid(n.to_string()))
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Vmid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Vmid {
    type Err = VmidError;
    /// pct's check: `^[1-9][0-9]{2,8}$` (no sign, no leading zero, no spaces).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let ok = (3..=9).contains(&b.len())
            && (b'1'..=b'9').contains(&b[0])
            && b.iter().all(u8::is_ascii_digit);
        if !ok {
            return Err(VmidError::Invalid(s.to_string()));
        }
        s.parse::<u32>()
            .map_err(|_| VmidError::Invalid(s.to_string()))
            .and_then(Vmid::new)
    }
}

impl From<Vmid> for u32 {
    fn from(v: Vmid) -> u32 {
        v.0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VmidError {
    /// pct's own wording for a bad VMID.
    #[error("vmid: invalid format - value does not look like a valid VM ID ({0:?})")]
    Invalid(String),
    #[error("invalid VMID range [{lo}, {hi}]")]
    BadRange { lo: u32, hi: u32 },
    #[error("unable to get any free VMID in range [{lo}, {hi}]")]
    Exhausted { lo: u32, hi: u32 },
    #[error("timed out after {waited:?} waiting for the VMID lock {path}")]
    LockTimeout { path: PathBuf, waited: Duration },
    #[error("VMID allocator I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("listing VMIDs in use failed: {0}")]
    InUse(String),
}

/// An inclusive range of VMIDs the shim may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmidRange {
    lo: Vmid,
    hi: Vmid,
}

impl VmidRange {
    pub fn new(lo: u32, hi: u32) -> Result<Self, VmidError> {
        let (l, h) = (Vmid::new(lo), Vmid::new(hi));
        match (l, h) {
            (Ok(l), Ok(h)) if l <= h => Ok(VmidRange { lo: l, hi: h }),
            _ => Err(VmidError::BadRange { lo, hi }),
        }
    }
    pub fn lo(&self) -> Vmid {
        self.lo
    }
    pub fn hi(&self) -> Vmid {
        self.hi
    }
    pub fn contains(&self, v: Vmid) -> bool {
        self.lo <= v && v <= self.hi
    }
}

/// Bounded retry for `pct create` races ("already exists", lock timeouts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts including the first (≥ 1).
    pub max_attempts: u32,
    /// Delay before retry n is `base_delay * n`, capped at `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// Whether attempt number `attempt` (1-based, the one that just failed with `err`)
    /// may be followed by another one. "Already exists" means: allocate a new VMID and
    /// retry; a lock timeout means: retry the same command.
    pub fn should_retry(&self, err: &PctError, attempt: u32) -> bool {
        attempt < self.max_attempts.max(1)
            && matches!(
                err,
                PctError::AlreadyExists { .. } | PctError::LockTimeout { .. }
            )
    }

    /// Pause before attempt `attempt + 1`.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.base_delay
            .saturating_mul(attempt.max(1))
            .min(self.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmid_grammar() {
        for ok in ["100", "101", "999999999", "123456789", "1000"] {
            assert!(ok.parse::<Vmid>().is_ok(), "{ok}");
        }
        for bad in [
            "",
            "0",
            "99",
            "10",
            "0100",
            "1000000000",
            "-100",
            "+100",
            " 100",
            "100 ",
            "1e3",
            "abc",
            "12a",
        ] {
            let e = bad.parse::<Vmid>().unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("vmid: invalid format - value does not look like a valid VM ID"),
                "{bad}"
            );
        }
        assert!(Vmid::new(99).is_err());
        assert!(Vmid::new(1_000_000_000).is_err());
        assert_eq!(Vmid::new(100).unwrap().to_string(), "100");
        assert!(VmidRange::new(200, 100).is_err());
        assert!(VmidRange::new(50, 100).is_err());
        assert!(VmidRange::new(100, 100).is_ok());
    }

    #[test]
    fn retry_policy() {
        let p = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(250),
        };
        let exists = PctError::AlreadyExists { vmid: 101 };
        assert!(p.should_retry(&exists, 1));
        assert!(p.should_retry(&exists, 2));
        assert!(!p.should_retry(&exists, 3));
        assert!(p.should_retry(
            &PctError::LockTimeout {
                path: "/run/lock/lxc/pve-config-101.lock".into()
            },
            1
        ));
        assert!(!p.should_retry(&PctError::Protected, 1));
        assert_eq!(p.delay(1), Duration::from_millis(100));
        assert_eq!(p.delay(2), Duration::from_millis(200));
        assert_eq!(p.delay(5), Duration::from_millis(250));
    }
}
