//! Metrics at the edge: the shim's own [`Metrics`] as containerd's cgroups v1/v2 `Metrics`
//! message in an `Any` (type URLs `io.containerd.cgroups.v1.Metrics` / `.v2.Metrics`).

use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};

use crate::error::{Error, Result};
use crate::sys::cgroup::types as own;
use crate::sys::cgroup::Metrics;

/// `dst.f = src.f` for each named field.
macro_rules! copy {
    ($src:expr => $dst:expr; $($f:ident),* $(,)?) => { $($dst.$f = $src.$f;)* };
}

pub fn encode(m: &Metrics) -> Result<Any> {
    let (type_url, value) = match m {
        Metrics::V1(m) => ("io.containerd.cgroups.v1.Metrics", v1(m).write_to_bytes()),
        Metrics::V2(m) => ("io.containerd.cgroups.v2.Metrics", v2(m).write_to_bytes()),
    };
    let mut any = Any::new();
    any.type_url = type_url.into();
    any.value = value.map_err(|e| Error::internal(format!("encode metrics: {e}")))?;
    Ok(any)
}

fn v1(m: &own::V1Metrics) -> v1::Metrics {
    let mut out = v1::Metrics::new();
    if let Some(p) = m.pids {
        let mut o = v1::PidsStat::new();
        copy!(p => o; current, limit);
        out.pids = MessageField::some(o);
    }
    if let Some(c) = &m.cpu {
        let mut u = v1::CPUUsage::new();
        copy!(c.usage => u; total, user, kernel);
        u.per_cpu = c.usage.per_cpu.clone();
        let mut cpu = v1::CPUStat::new();
        cpu.usage = MessageField::some(u);
        if let Some(t) = c.throttling {
            let mut o = v1::Throttle::new();
            copy!(t => o; periods, throttled_periods, throttled_time);
            cpu.throttling = MessageField::some(o);
        }
        out.cpu = MessageField::some(cpu);
    }
    if let Some(mem) = &m.memory {
        let s = mem.stat;
        let mut o = v1::MemoryStat::new();
        copy!(s => o; cache, rss, rss_huge, mapped_file, dirty, writeback, pg_pg_in, pg_pg_out,
            pg_fault, pg_maj_fault, inactive_anon, active_anon, inactive_file, active_file,
            unevictable, hierarchical_memory_limit, hierarchical_swap_limit, total_cache,
            total_rss, total_rss_huge, total_mapped_file, total_dirty, total_writeback,
            total_pg_pg_in, total_pg_pg_out, total_pg_fault, total_pg_maj_fault,
            total_inactive_anon, total_active_anon, total_inactive_file, total_active_file,
            total_unevictable);
        let entry = |e: own::V1MemoryEntry| {
            let mut o = v1::MemoryEntry::new();
            copy!(e => o; usage, limit, max, failcnt);
            MessageField::some(o)
        };
        o.usage = entry(mem.usage);
        o.swap = entry(mem.swap);
        o.kernel = entry(mem.kernel);
        o.kernel_tcp = entry(mem.kernel_tcp);
        out.memory = MessageField::some(o);
    }
    if let Some(c) = m.memory_oom_control {
        let mut o = v1::MemoryOomControl::new();
        copy!(c => o; oom_kill_disable, under_oom, oom_kill);
        out.memory_oom_control = MessageField::some(o);
    }
    out
}

fn v2(m: &own::V2Metrics) -> v2::Metrics {
    let mut out = v2::Metrics::new();
    let mut p = v2::PidsStat::new();
    copy!(m.pids => p; current, limit);
    out.pids = MessageField::some(p);
    let mut c = v2::CPUStat::new();
    copy!(m.cpu => c; usage_usec, user_usec, system_usec, nr_periods, nr_throttled,
        throttled_usec);
    out.cpu = MessageField::some(c);
    let mut mem = v2::MemoryStat::new();
    copy!(m.memory => mem; anon, file, kernel_stack, slab, sock, shmem, file_mapped, file_dirty,
        file_writeback, inactive_anon, active_anon, inactive_file, active_file, unevictable,
        pgfault, pgmajfault, usage, usage_limit, max_usage, swap_usage, swap_limit);
    out.memory = MessageField::some(mem);
    let mut ev = v2::MemoryEvents::new();
    copy!(m.memory_events => ev; low, high, max, oom, oom_kill);
    out.memory_events = MessageField::some(ev);
    let mut io = v2::IOStat::new();
    io.usage =
        m.io.iter()
            .map(|e| {
                let mut o = v2::IOEntry::new();
                copy!(e => o; major, minor, rbytes, wbytes, rios, wios);
                o
            })
            .collect();
    out.io = MessageField::some(io);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_round_trip_keeps_every_section() {
        let m = own::V1Metrics {
            pids: Some(own::Pids {
                current: 3,
                limit: 0,
            }),
            cpu: Some(own::V1Cpu {
                usage: own::V1CpuUsage {
                    total: 12,
                    user: 5,
                    kernel: 7,
                    per_cpu: vec![6, 6],
                },
                throttling: Some(own::V1Throttle {
                    periods: 1,
                    throttled_periods: 2,
                    throttled_time: 3,
                }),
            }),
            memory: Some(own::V1Memory {
                stat: own::V1MemoryStat {
                    rss: 4096,
                    total_unevictable: 9,
                    ..Default::default()
                },
                usage: own::V1MemoryEntry {
                    usage: 100,
                    limit: 200,
                    max: 150,
                    failcnt: 1,
                },
                ..Default::default()
            }),
            memory_oom_control: Some(own::V1OomControl {
                oom_kill: 2,
                ..Default::default()
            }),
        };
        let any = encode(&Metrics::V1(Box::new(m))).expect("encode");
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        let d = v1::Metrics::parse_from_bytes(&any.value).expect("decode");
        assert_eq!((d.pids.current, d.pids.limit), (3, 0));
        assert_eq!((d.cpu.usage.total, d.cpu.usage.per_cpu.len()), (12, 2));
        assert_eq!(d.cpu.throttling.throttled_time, 3);
        assert_eq!((d.memory.rss, d.memory.total_unevictable), (4096, 9));
        assert_eq!((d.memory.usage.limit, d.memory.usage.failcnt), (200, 1));
        assert_eq!(d.memory_oom_control.oom_kill, 2);
        // An absent section stays absent.
        let any = encode(&Metrics::V1(Box::default())).expect("encode");
        let d = v1::Metrics::parse_from_bytes(&any.value).expect("decode");
        assert!(d.memory.is_none() && d.pids.is_none());
    }

    #[test]
    fn v2_round_trip() {
        let m = own::V2Metrics {
            pids: own::Pids {
                current: 4,
                limit: u64::MAX,
            },
            memory: own::V2Memory {
                usage: 1000,
                usage_limit: 536870912,
                swap_limit: 7,
                ..Default::default()
            },
            memory_events: own::V2MemoryEvents {
                oom_kill: 1,
                ..Default::default()
            },
            io: vec![own::V2IoEntry {
                major: 8,
                minor: 0,
                rbytes: 100,
                wios: 2,
                ..Default::default()
            }],
            ..Default::default()
        };
        let any = encode(&Metrics::V2(Box::new(m))).expect("encode");
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        let d = v2::Metrics::parse_from_bytes(&any.value).expect("decode");
        assert_eq!((d.pids.current, d.pids.limit), (4, u64::MAX));
        assert_eq!(
            (d.memory.usage, d.memory.usage_limit, d.memory.swap_limit),
            (1000, 536870912, 7)
        );
        assert_eq!(d.memory_events.oom_kill, 1);
        assert_eq!(d.io.usage[0].rbytes, 100);
        assert_eq!(d.io.usage[0].wios, 2);
    }
}
