//! The host-wide [`Allocator`]: an flock'd reservation file, the lowest free id of the range,
//! and the helpers it uses (reservation file format, config-dir scan).

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{Vmid, VmidError, VmidRange};

/// One line of the reservation file: `<vmid> <expires_unix_ms> <owner>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub vmid: Vmid,
    pub expires_unix_ms: u64,
    /// Free text without newlines (e.g. `<namespace>/<id>`).
    pub owner: String,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Parse the reservation file; malformed lines are dropped.
pub fn parse_reservations(text: &str) -> Vec<Reservation> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ' ');
            let vmid = it.next()?.parse().ok()?;
            let expires_unix_ms = it.next()?.parse().ok()?;
            let owner = it.next().unwrap_or("").to_string();
            Some(Reservation {
                vmid,
                expires_unix_ms,
                owner,
            })
        })
        .collect()
}

pub fn render_reservations(r: &[Reservation]) -> String {
    r.iter()
        .map(|r| {
            let owner: String = r
                .owner
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            format!("{} {} {}\n", r.vmid, r.expires_unix_ms, owner)
        })
        .collect()
}

/// Lowest id in `range` not in `used`.
pub fn pick_free(range: VmidRange, used: &BTreeSet<u32>) -> Option<Vmid> {
    (range.lo.0..=range.hi.0)
        .find(|n| !used.contains(n))
        .map(Vmid)
}

/// Ids of `<N>.conf` files in the given directories (e.g. `/etc/pve/lxc` and
/// `/etc/pve/qemu-server`: VMs and CTs share the VMID space). Missing dirs are skipped.
pub fn vmids_in_config_dirs<P: AsRef<Path>>(dirs: &[P]) -> Vec<Vmid> {
    let mut out = Vec::new();
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(d) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".conf")) else {
                continue;
            };
            if let Ok(v) = stem.parse::<Vmid>() {
                out.push(v);
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Host-wide VMID allocator (see the module docs).
#[derive(Debug, Clone)]
pub struct Allocator {
    lock_path: PathBuf,
    reservations_path: PathBuf,
    range: VmidRange,
    ttl: Duration,
    lock_timeout: Duration,
}

/// An exclusive flock held for the guard's lifetime.
struct LockGuard {
    _file: File,
}

impl Allocator {
    /// Reservations expire after 10 minutes unless released; the lock is waited for at
    /// most 30 s.
    pub fn new(
        lock_path: impl Into<PathBuf>,
        reservations_path: impl Into<PathBuf>,
        range: VmidRange,
    ) -> Self {
        Allocator {
            lock_path: lock_path.into(),
            reservations_path: reservations_path.into(),
            range,
            ttl: Duration::from_secs(600),
            lock_timeout: Duration::from_secs(30),
        }
    }

    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    pub fn with_lock_timeout(mut self, t: Duration) -> Self {
        self.lock_timeout = t;
        self
    }

    pub fn range(&self) -> VmidRange {
        self.range
    }

    fn io(&self, path: &Path, source: std::io::Error) -> VmidError {
        VmidError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn lock(&self) -> Result<LockGuard, VmidError> {
        if let Some(dir) = self.lock_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| self.io(dir, e))?;
        }
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&self.lock_path)
            .map_err(|e| self.io(&self.lock_path, e))?;
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            // SAFETY: flock on an fd we own.
            let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if r == 0 {
                return Ok(LockGuard { _file: f });
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) | Some(libc::EINTR) => {}
                _ => return Err(self.io(&self.lock_path, e)),
            }
            if start.elapsed() >= self.lock_timeout {
                return Err(VmidError::LockTimeout {
                    path: self.lock_path.clone(),
                    waited: start.elapsed(),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    fn read_reservations(&self) -> Result<Vec<Reservation>, VmidError> {
        let mut s = String::new();
        match File::open(&self.reservations_path) {
            Ok(mut f) => {
                f.read_to_string(&mut s)
                    .map_err(|e| self.io(&self.reservations_path, e))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io(&self.reservations_path, e)),
        }
        Ok(parse_reservations(&s))
    }

    fn write_reservations(&self, r: &[Reservation]) -> Result<(), VmidError> {
        let p = &self.reservations_path;
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).map_err(|e| self.io(dir, e))?;
        }
        let mut tmp = p.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let res = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(render_reservations(r).as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, p)
        })();
        res.map_err(|e| self.io(p, e))
    }

    /// Live (unexpired) reservations.
    pub fn reservations(&self) -> Result<Vec<Reservation>, VmidError> {
        let _g = self.lock()?;
        let now = now_ms();
        Ok(self
            .read_reservations()?
            .into_iter()
            .filter(|r| r.expires_unix_ms > now)
            .collect())
    }

    /// Allocate with a list of ids in use that the caller already has. Prefer
    /// [`Allocator::allocate_with`] so the list is taken while the lock is held.
    pub fn allocate(&self, owner: &str, in_use: &[Vmid]) -> Result<Vmid, VmidError> {
        self.allocate_with(owner, || Ok(in_use.to_vec()))
    }

    /// Under the host-wide lock: call `in_use` (e.g. run `pct list`), drop expired
    /// reservations, pick the lowest free id in range, record a reservation for `owner`.
    pub fn allocate_with<F>(&self, owner: &str, in_use: F) -> Result<Vmid, VmidError>
    where
        F: FnOnce() -> Result<Vec<Vmid>, String>,
    {
        let _g = self.lock()?;
        let used_now = in_use().map_err(VmidError::InUse)?;
        let now = now_ms();
        let mut res: Vec<Reservation> = self
            .read_reservations()?
            .into_iter()
            .filter(|r| r.expires_unix_ms > now)
            .collect();
        let used: BTreeSet<u32> = used_now
            .iter()
            .map(|v| v.0)
            .chain(res.iter().map(|r| r.vmid.0))
            .collect();
        let v = pick_free(self.range, &used).ok_or(VmidError::Exhausted {
            lo: self.range.lo.0,
            hi: self.range.hi.0,
        })?;
        res.push(Reservation {
            vmid: v,
            expires_unix_ms: now.saturating_add(self.ttl.as_millis() as u64),
            owner: owner.to_string(),
        });
        self.write_reservations(&res)?;
        Ok(v)
    }

    /// Drop the reservation of `vmid` (after `pct create` succeeded or gave up).
    /// Whether a live reservation of `vmid` belongs to a create other than the one whose
    /// ownership token is `token` (reservation owners are `<namespace>/<id> <token>`; an owner
    /// without a `pvelxc-` token predates tokens and counts as the caller's).
    pub fn reserved_by_other(&self, vmid: Vmid, token: &str) -> Result<bool, VmidError> {
        let _g = self.lock()?;
        let now = now_ms();
        Ok(self.read_reservations()?.iter().any(|r| {
            r.vmid == vmid
                && r.expires_unix_ms > now
                && r.owner.contains(" pvelxc-")
                && !r.owner.split_whitespace().any(|w| w == token)
        }))
    }

    pub fn release(&self, vmid: Vmid) -> Result<(), VmidError> {
        let _g = self.lock()?;
        let res: Vec<Reservation> = self
            .read_reservations()?
            .into_iter()
            .filter(|r| r.vmid != vmid && r.expires_unix_ms > now_ms())
            .collect();
        self.write_reservations(&res)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "pct-vmid-{tag}-{}-{}",
            std::process::id(),
            now_ms()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn reservations_roundtrip() {
        let r = vec![
            Reservation {
                vmid: Vmid(150),
                expires_unix_ms: 42,
                owner: "k8s.io/abc def".into(),
            },
            Reservation {
                vmid: Vmid(151),
                expires_unix_ms: 43,
                owner: "evil\nnewline".into(),
            },
        ];
        let s = render_reservations(&r);
        assert_eq!(s.lines().count(), 2);
        let back = parse_reservations(&(s + "garbage line\n99 1 x\n"));
        assert_eq!(back.len(), 2);
        assert_eq!(back[0], r[0]);
        assert_eq!(back[1].owner, "evil newline");
    }

    #[test]
    fn picks_lowest_free_skipping_used_and_reserved() {
        let d = tmp("pick");
        let a = Allocator::new(
            d.join("lock"),
            d.join("res"),
            VmidRange::new(100, 105).unwrap(),
        );
        let used = [Vmid(100), Vmid(102)];
        assert_eq!(a.allocate("a", &used).unwrap(), Vmid(101));
        assert_eq!(a.allocate("b", &used).unwrap(), Vmid(103));
        a.release(Vmid(101)).unwrap();
        assert_eq!(a.allocate("c", &used).unwrap(), Vmid(101));
        assert_eq!(a.allocate("d", &used).unwrap(), Vmid(104));
        assert_eq!(a.allocate("e", &used).unwrap(), Vmid(105));
        assert!(matches!(
            a.allocate("f", &used),
            Err(VmidError::Exhausted { lo: 100, hi: 105 })
        ));
        assert_eq!(a.reservations().unwrap().len(), 4);
        // The in-use callback's error surfaces.
        assert!(matches!(
            a.allocate_with("g", || Err("pct list failed".into())),
            Err(VmidError::InUse(_))
        ));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn expired_reservations_are_reused() {
        let d = tmp("ttl");
        let a = Allocator::new(
            d.join("lock"),
            d.join("res"),
            VmidRange::new(300, 301).unwrap(),
        )
        .with_ttl(Duration::from_millis(0));
        assert_eq!(a.allocate("x", &[]).unwrap(), Vmid(300));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(a.allocate("y", &[]).unwrap(), Vmid(300));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn lock_timeout_is_bounded() {
        let d = tmp("lock");
        let a = Allocator::new(
            d.join("lock"),
            d.join("res"),
            VmidRange::new(100, 200).unwrap(),
        )
        .with_lock_timeout(Duration::from_millis(100));
        let held = a.lock().unwrap();
        let t = Instant::now();
        assert!(matches!(
            a.allocate("x", &[]),
            Err(VmidError::LockTimeout { .. })
        ));
        assert!(t.elapsed() < Duration::from_secs(2));
        drop(held);
        assert_eq!(a.allocate("x", &[]).unwrap(), Vmid(100));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn fifty_threads_get_fifty_distinct_ids() {
        let d = Arc::new(tmp("par"));
        let in_use: Vec<Vmid> = (1000..1010).step_by(2).map(Vmid).collect();
        let handles: Vec<_> = (0..50)
            .map(|i| {
                let d = Arc::clone(&d);
                let in_use = in_use.clone();
                std::thread::spawn(move || {
                    // Each thread has its own allocator (own open file description),
                    // as separate shim processes would.
                    let a = Allocator::new(
                        d.join("lock"),
                        d.join("res"),
                        VmidRange::new(1000, 1100).unwrap(),
                    );
                    a.allocate(&format!("t{i}"), &in_use).unwrap()
                })
            })
            .collect();
        let ids: BTreeSet<u32> = handles.into_iter().map(|h| h.join().unwrap().0).collect();
        assert_eq!(ids.len(), 50);
        assert!(ids.iter().all(|n| (1000..=1100).contains(n)));
        assert!(ids.iter().all(|n| !in_use.contains(&Vmid(*n))));
        let _ = std::fs::remove_dir_all(&*d);
    }

    #[test]
    fn config_dir_scan() {
        let d = tmp("conf");
        for f in [
            "101.conf",
            "250.conf",
            "99.conf",
            "abc.conf",
            "102.conf.tmp",
            "0103.conf",
        ] {
            std::fs::write(d.join(f), "").unwrap();
        }
        let got = vmids_in_config_dirs(&[d.clone(), d.join("missing")]);
        assert_eq!(got, vec![Vmid(101), Vmid(250)]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn reservations_name_their_create() {
        let d = tmp("owner");
        let a = Allocator::new(d.join("l"), d.join("r"), VmidRange::new(500, 509).unwrap());
        let v = a
            .allocate_with("ns/a pvelxc-0000000000aa", || Ok(Vec::new()))
            .unwrap();
        assert!(!a.reserved_by_other(v, "pvelxc-0000000000aa").unwrap());
        assert!(a.reserved_by_other(v, "pvelxc-0000000000bb").unwrap());
        let free = Vmid::new(509).unwrap();
        assert!(!a.reserved_by_other(free, "pvelxc-0000000000bb").unwrap());
        // Reservations of earlier versions (no token) are nobody else's.
        let w = a.allocate_with("ns/old", || Ok(Vec::new())).unwrap();
        assert!(!a.reserved_by_other(w, "pvelxc-0000000000bb").unwrap());
        let _ = std::fs::remove_dir_all(&d);
    }
}
