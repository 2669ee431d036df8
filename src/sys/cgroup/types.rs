//! Container metrics as the shim's own types. Field names follow containerd's cgroups v1/v2
//! `Metrics` messages one to one, so the edge (`service/metrics.rs`) copies them by name; no
//! protobuf here. Absent sections (`None`) are left out of the message.

/// What one container's cgroup (or, on the vm backend, its guest) reports.
#[derive(Debug, Clone, PartialEq)]
pub enum Metrics {
    V1(Box<V1Metrics>),
    V2(Box<V2Metrics>),
}

macro_rules! figures {
    ($(#[$m:meta])* $name:ident { $($f:ident),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $name { $(pub $f: u64),* }
    };
}

figures!(Pids { current, limit });

// cgroup v1
#[derive(Debug, Clone, Default, PartialEq)]
pub struct V1Metrics {
    pub pids: Option<Pids>,
    pub cpu: Option<V1Cpu>,
    pub memory: Option<V1Memory>,
    pub memory_oom_control: Option<V1OomControl>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct V1Cpu {
    pub usage: V1CpuUsage,
    pub throttling: Option<V1Throttle>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct V1CpuUsage {
    pub total: u64,
    pub user: u64,
    pub kernel: u64,
    pub per_cpu: Vec<u64>,
}

figures!(V1Throttle {
    periods,
    throttled_periods,
    throttled_time
});
figures!(V1MemoryEntry {
    usage,
    limit,
    max,
    failcnt
});
figures!(V1OomControl {
    oom_kill_disable,
    under_oom,
    oom_kill
});
figures!(
    /// memory.stat, plus the four usage entries below.
    V1MemoryStat {
        cache,
        rss,
        rss_huge,
        mapped_file,
        dirty,
        writeback,
        pg_pg_in,
        pg_pg_out,
        pg_fault,
        pg_maj_fault,
        inactive_anon,
        active_anon,
        inactive_file,
        active_file,
        unevictable,
        hierarchical_memory_limit,
        hierarchical_swap_limit,
        total_cache,
        total_rss,
        total_rss_huge,
        total_mapped_file,
        total_dirty,
        total_writeback,
        total_pg_pg_in,
        total_pg_pg_out,
        total_pg_fault,
        total_pg_maj_fault,
        total_inactive_anon,
        total_active_anon,
        total_inactive_file,
        total_active_file,
        total_unevictable,
    }
);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct V1Memory {
    pub stat: V1MemoryStat,
    pub usage: V1MemoryEntry,
    pub swap: V1MemoryEntry,
    pub kernel: V1MemoryEntry,
    pub kernel_tcp: V1MemoryEntry,
}

// cgroup v2
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct V2Metrics {
    pub pids: Pids,
    pub cpu: V2Cpu,
    pub memory: V2Memory,
    pub memory_events: V2MemoryEvents,
    pub io: Vec<V2IoEntry>,
}

figures!(V2Cpu {
    usage_usec,
    user_usec,
    system_usec,
    nr_periods,
    nr_throttled,
    throttled_usec
});
figures!(V2Memory {
    anon,
    file,
    kernel_stack,
    slab,
    sock,
    shmem,
    file_mapped,
    file_dirty,
    file_writeback,
    inactive_anon,
    active_anon,
    inactive_file,
    active_file,
    unevictable,
    pgfault,
    pgmajfault,
    usage,
    usage_limit,
    max_usage,
    swap_usage,
    swap_limit,
});
figures!(V2MemoryEvents {
    low,
    high,
    max,
    oom,
    oom_kill
});
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct V2IoEntry {
    pub major: u64,
    pub minor: u64,
    pub rbytes: u64,
    pub wbytes: u64,
    pub rios: u64,
    pub wios: u64,
}
