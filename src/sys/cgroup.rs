//! Reading a container's cgroup (v1 or v2): where it is, its metrics, and OOM notifications.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use tokio::sync::mpsc;

use crate::error::{Error, Result};

const ROOT: &str = "/sys/fs/cgroup";

/// Where a process's cgroup lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    V1(HashMap<String, PathBuf>),
    V2(PathBuf),
}

pub fn is_unified() -> bool {
    Path::new(ROOT).join("cgroup.controllers").exists()
}

impl Cgroup {
    /// The cgroup of a live process, from /proc/<pid>/cgroup.
    pub fn of_pid(pid: u32) -> Result<Cgroup> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .map_err(|e| Error::io(format!("read /proc/{pid}/cgroup"), e))?;
        Ok(Self::parse(&text, is_unified()))
    }

    fn parse(text: &str, unified: bool) -> Cgroup {
        let mut v1 = HashMap::new();
        let mut v2 = None;
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let rel = path.trim_start_matches('/');
            if ctrls.is_empty() {
                let base = if unified {
                    PathBuf::from(ROOT)
                } else {
                    PathBuf::from(ROOT).join("unified")
                };
                v2 = Some(base.join(rel));
            } else {
                for c in ctrls.split(',') {
                    let c = c.trim_start_matches("name=");
                    v1.insert(c.to_string(), PathBuf::from(ROOT).join(c).join(rel));
                }
            }
        }
        match (unified, v2) {
            (true, Some(p)) => Cgroup::V2(p),
            _ => Cgroup::V1(v1),
        }
    }

    fn v1_dir(&self, ctrl: &str) -> Option<&Path> {
        match self {
            Cgroup::V1(m) => m.get(ctrl).map(PathBuf::as_path),
            Cgroup::V2(_) => None,
        }
    }

    /// Metrics in the shape containerd decodes for this cgroup version.
    pub fn metrics(&self) -> Result<Any> {
        let (type_url, value) = match self {
            Cgroup::V1(_) => (
                "io.containerd.cgroups.v1.Metrics",
                self.v1_metrics().write_to_bytes(),
            ),
            Cgroup::V2(dir) => (
                "io.containerd.cgroups.v2.Metrics",
                v2_metrics(dir).write_to_bytes(),
            ),
        };
        let value = value.map_err(|e| Error::internal(format!("encode metrics: {e}")))?;
        let mut any = Any::new();
        any.type_url = type_url.into();
        any.value = value;
        Ok(any)
    }

    fn v1_metrics(&self) -> v1::Metrics {
        let mut m = v1::Metrics::new();
        if let Some(d) = self.v1_dir("pids") {
            let mut p = v1::PidsStat::new();
            p.current = read_u64(&d.join("pids.current"));
            // cgroup v1 reports an unlimited pids.max as 0.
            p.limit = match read_u64(&d.join("pids.max")) {
                u64::MAX => 0,
                n => n,
            };
            m.pids = MessageField::some(p);
        }
        if let Some(d) = self.v1_dir("cpuacct") {
            let mut u = v1::CPUUsage::new();
            u.total = read_u64(&d.join("cpuacct.usage"));
            let stat = read_kv(&d.join("cpuacct.stat"));
            // USER_HZ ticks to nanoseconds.
            u.user = stat.get("user").copied().unwrap_or(0) * 10_000_000;
            u.kernel = stat.get("system").copied().unwrap_or(0) * 10_000_000;
            u.per_cpu = std::fs::read_to_string(d.join("cpuacct.usage_percpu"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|s| s.parse().ok())
                .collect();
            let mut cpu = v1::CPUStat::new();
            cpu.usage = MessageField::some(u);
            if let Some(c) = self.v1_dir("cpu") {
                let s = read_kv(&c.join("cpu.stat"));
                let mut t = v1::Throttle::new();
                t.periods = s.get("nr_periods").copied().unwrap_or(0);
                t.throttled_periods = s.get("nr_throttled").copied().unwrap_or(0);
                t.throttled_time = s.get("throttled_time").copied().unwrap_or(0);
                cpu.throttling = MessageField::some(t);
            }
            m.cpu = MessageField::some(cpu);
        }
        if let Some(d) = self.v1_dir("memory") {
            let s = read_kv(&d.join("memory.stat"));
            let g = |k: &str| s.get(k).copied().unwrap_or(0);
            let mut mem = v1::MemoryStat::new();
            mem.cache = g("cache");
            mem.rss = g("rss");
            mem.rss_huge = g("rss_huge");
            mem.mapped_file = g("mapped_file");
            mem.dirty = g("dirty");
            mem.writeback = g("writeback");
            mem.pg_pg_in = g("pgpgin");
            mem.pg_pg_out = g("pgpgout");
            mem.pg_fault = g("pgfault");
            mem.pg_maj_fault = g("pgmajfault");
            mem.inactive_anon = g("inactive_anon");
            mem.active_anon = g("active_anon");
            mem.inactive_file = g("inactive_file");
            mem.active_file = g("active_file");
            mem.unevictable = g("unevictable");
            mem.hierarchical_memory_limit = g("hierarchical_memory_limit");
            mem.hierarchical_swap_limit = g("hierarchical_memsw_limit");
            mem.total_cache = g("total_cache");
            mem.total_rss = g("total_rss");
            mem.total_rss_huge = g("total_rss_huge");
            mem.total_mapped_file = g("total_mapped_file");
            mem.total_dirty = g("total_dirty");
            mem.total_writeback = g("total_writeback");
            mem.total_pg_pg_in = g("total_pgpgin");
            mem.total_pg_pg_out = g("total_pgpgout");
            mem.total_pg_fault = g("total_pgfault");
            mem.total_pg_maj_fault = g("total_pgmajfault");
            mem.total_inactive_anon = g("total_inactive_anon");
            mem.total_active_anon = g("total_active_anon");
            mem.total_inactive_file = g("total_inactive_file");
            mem.total_active_file = g("total_active_file");
            mem.total_unevictable = g("total_unevictable");
            let entry = |prefix: &str| {
                let mut e = v1::MemoryEntry::new();
                e.usage = read_u64(&d.join(format!("{prefix}.usage_in_bytes")));
                e.limit = read_u64(&d.join(format!("{prefix}.limit_in_bytes")));
                e.max = read_u64(&d.join(format!("{prefix}.max_usage_in_bytes")));
                e.failcnt = read_u64(&d.join(format!("{prefix}.failcnt")));
                MessageField::some(e)
            };
            mem.usage = entry("memory");
            mem.swap = entry("memory.memsw");
            mem.kernel = entry("memory.kmem");
            mem.kernel_tcp = entry("memory.kmem.tcp");
            m.memory = MessageField::some(mem);
            let oc = read_kv(&d.join("memory.oom_control"));
            let mut o = v1::MemoryOomControl::new();
            o.oom_kill_disable = oc.get("oom_kill_disable").copied().unwrap_or(0);
            o.under_oom = oc.get("under_oom").copied().unwrap_or(0);
            o.oom_kill = oc.get("oom_kill").copied().unwrap_or(0);
            m.memory_oom_control = MessageField::some(o);
        }
        m
    }

    /// A stream of OOM kills in this cgroup (v1: memory.oom_control eventfd; v2: memory.events).
    pub fn watch_oom(&self) -> Result<mpsc::UnboundedReceiver<()>> {
        let (tx, rx) = mpsc::unbounded_channel();
        match self {
            Cgroup::V1(_) => {
                let dir = self
                    .v1_dir("memory")
                    .ok_or_else(|| Error::internal("no memory cgroup"))?
                    .to_path_buf();
                let efd = eventfd()?;
                let ctl = std::fs::File::open(dir.join("memory.oom_control"))
                    .map_err(|e| Error::io("open memory.oom_control", e))?;
                std::fs::write(
                    dir.join("cgroup.event_control"),
                    format!("{} {}", efd.as_raw_fd(), ctl.as_raw_fd()),
                )
                .map_err(|e| Error::io("register OOM eventfd", e))?;
                let afd = crate::sys::fdio::register(efd).map_err(|e| Error::io("eventfd", e))?;
                tokio::spawn(async move {
                    let _keep_registered = ctl;
                    // The eventfd also fires when the cgroup is removed.
                    on_each_wakeup(afd, || dir.exists() && tx.send(()).is_ok()).await;
                });
            }
            Cgroup::V2(dir) => {
                use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
                let events = dir.join("memory.events");
                let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
                ino.add_watch(&events, AddWatchFlags::IN_MODIFY)?;
                let afd = crate::sys::fdio::register(OwnedFd::from(ino))
                    .map_err(|e| Error::io("inotify", e))?;
                let oom_kills = move || read_kv(&events).get("oom_kill").copied();
                let mut last = oom_kills().unwrap_or(0);
                tokio::spawn(async move {
                    on_each_wakeup(afd, || {
                        let Some(now) = oom_kills() else {
                            return false; // the cgroup is gone
                        };
                        let fresh = now.saturating_sub(last);
                        last = last.max(now);
                        (0..fresh).all(|_| tx.send(()).is_ok())
                    })
                    .await;
                });
            }
        }
        Ok(rx)
    }
}

/// Drain `afd` each time it becomes readable and call `wake`, until `wake` says stop or the fd
/// fails.
async fn on_each_wakeup(afd: tokio::io::unix::AsyncFd<OwnedFd>, mut wake: impl FnMut() -> bool) {
    let mut buf = [0u8; 1024];
    loop {
        let Ok(mut g) = afd.readable().await else {
            return;
        };
        match g.try_io(|fd| {
            nix::unistd::read(fd.get_ref().as_fd(), &mut buf).map_err(std::io::Error::from)
        }) {
            Ok(Ok(n)) if n > 0 => {
                if !wake() {
                    return;
                }
            }
            Ok(_) => return,
            Err(_would_block) => continue,
        }
    }
}

fn v2_metrics(dir: &Path) -> v2::Metrics {
    let mut m = v2::Metrics::new();
    let mut p = v2::PidsStat::new();
    p.current = read_u64(&dir.join("pids.current"));
    p.limit = read_u64(&dir.join("pids.max"));
    m.pids = MessageField::some(p);
    let s = read_kv(&dir.join("cpu.stat"));
    let g = |k: &str| s.get(k).copied().unwrap_or(0);
    let mut cpu = v2::CPUStat::new();
    cpu.usage_usec = g("usage_usec");
    cpu.user_usec = g("user_usec");
    cpu.system_usec = g("system_usec");
    cpu.nr_periods = g("nr_periods");
    cpu.nr_throttled = g("nr_throttled");
    cpu.throttled_usec = g("throttled_usec");
    m.cpu = MessageField::some(cpu);
    let s = read_kv(&dir.join("memory.stat"));
    let g = |k: &str| s.get(k).copied().unwrap_or(0);
    let mut mem = v2::MemoryStat::new();
    mem.anon = g("anon");
    mem.file = g("file");
    mem.kernel_stack = g("kernel_stack");
    mem.slab = g("slab");
    mem.sock = g("sock");
    mem.shmem = g("shmem");
    mem.file_mapped = g("file_mapped");
    mem.file_dirty = g("file_dirty");
    mem.file_writeback = g("file_writeback");
    mem.inactive_anon = g("inactive_anon");
    mem.active_anon = g("active_anon");
    mem.inactive_file = g("inactive_file");
    mem.active_file = g("active_file");
    mem.unevictable = g("unevictable");
    mem.pgfault = g("pgfault");
    mem.pgmajfault = g("pgmajfault");
    mem.usage = read_u64(&dir.join("memory.current"));
    mem.usage_limit = read_u64(&dir.join("memory.max"));
    mem.max_usage = read_u64(&dir.join("memory.peak"));
    mem.swap_usage = read_u64(&dir.join("memory.swap.current"));
    mem.swap_limit = read_u64(&dir.join("memory.swap.max"));
    m.memory = MessageField::some(mem);
    let e = read_kv(&dir.join("memory.events"));
    let g = |k: &str| e.get(k).copied().unwrap_or(0);
    let mut ev = v2::MemoryEvents::new();
    ev.low = g("low");
    ev.high = g("high");
    ev.max = g("max");
    ev.oom = g("oom");
    ev.oom_kill = g("oom_kill");
    m.memory_events = MessageField::some(ev);
    m
}

/// A number file; "max" reads as u64::MAX, anything unreadable as 0.
fn read_u64(p: &Path) -> u64 {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let s = s.trim();
    if s == "max" {
        return u64::MAX;
    }
    s.parse().unwrap_or(0)
}

/// "key value" lines.
fn read_kv(p: &Path) -> HashMap<String, u64> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

fn eventfd() -> Result<OwnedFd> {
    // SAFETY: plain syscall; the returned fd is owned from here on.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(Error::io("eventfd", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hybrid_and_unified() {
        let text =
            "12:memory:/default/c1\n4:cpu,cpuacct:/default/c1\n1:name=systemd:/x\n0::/default/c1\n";
        match Cgroup::parse(text, false) {
            Cgroup::V1(m) => {
                assert_eq!(
                    m["memory"],
                    PathBuf::from("/sys/fs/cgroup/memory/default/c1")
                );
                assert_eq!(
                    m["cpuacct"],
                    PathBuf::from("/sys/fs/cgroup/cpuacct/default/c1")
                );
                assert_eq!(m["systemd"], PathBuf::from("/sys/fs/cgroup/systemd/x"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            Cgroup::parse("0::/lxc/101/ns\n", true),
            Cgroup::V2(PathBuf::from("/sys/fs/cgroup/lxc/101/ns"))
        );
    }

    #[test]
    fn own_metrics_have_memory() {
        let cg = Cgroup::of_pid(std::process::id()).expect("cgroup");
        let any = cg.metrics().expect("metrics");
        assert!(any.type_url.starts_with("io.containerd.cgroups.v"));
        assert!(!any.value.is_empty());
    }
}
