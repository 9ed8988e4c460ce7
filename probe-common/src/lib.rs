//! Types shared by the kernel programs (`probe-ebpf`) and the loader (`probe-user`).
//!
//! Everything here is `#[repr(C)]`, has explicit padding and no `bool`, so both
//! sides agree on the layout byte for byte. The `user` feature adds `aya::Pod`.
#![no_std]

pub mod hist;

pub use hist::{bucket_index, bucket_lower_bound, bucket_upper_bound, HIST_BUCKETS};

/// Per-thread counters, kept per CPU in the kernel and summed in userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ThreadStats {
    /// Number of completed run-queue waits (runnable -> on CPU).
    pub runq_count: u64,
    /// Sum of those waits, in nanoseconds.
    pub runq_total_ns: u64,
    /// Longest single wait, in nanoseconds.
    pub runq_max_ns: u64,
    /// Time on CPU between switch-in and switch-out, in nanoseconds.
    pub oncpu_ns: u64,
    /// Switched out while blocking (the kernel's `nvcsw`).
    pub voluntary_switches: u64,
    /// Switched out while still runnable (the kernel's `nivcsw`).
    pub involuntary_switches: u64,
    /// `sched_wakeup` / `sched_wakeup_new` of this thread.
    pub wakeups: u64,
    /// All `sched_migrate_task` events of this thread.
    pub migrations: u64,
    /// Migrations between CPUs that share no last-level cache.
    pub migrations_cross_llc: u64,
    /// Migrations between CPUs of different NUMA nodes.
    pub migrations_cross_numa: u64,
    /// Thread group (process) id the thread belongs to.
    pub tgid: u32,
    pub _pad: u32,
}

/// Run-queue wait histogram of one thread (see [`hist`]). Shared by all CPUs
/// and updated with atomic adds: one copy per CPU would cost
/// `HIST_BUCKETS * 8` bytes per CPU per thread.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RunqHist {
    pub buckets: [u64; HIST_BUCKETS],
}

impl RunqHist {
    pub const ZERO: RunqHist = RunqHist {
        buckets: [0; HIST_BUCKETS],
    };
}

impl ThreadStats {
    pub const ZERO: ThreadStats = ThreadStats {
        runq_count: 0,
        runq_total_ns: 0,
        runq_max_ns: 0,
        oncpu_ns: 0,
        voluntary_switches: 0,
        involuntary_switches: 0,
        wakeups: 0,
        migrations: 0,
        migrations_cross_llc: 0,
        migrations_cross_numa: 0,
        tgid: 0,
        _pad: 0,
    };
}

/// What is running on a CPU, as far as the target is concerned (per-CPU slot).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OnCpu {
    /// Target thread switched in on this CPU, 0 when none.
    pub tid: u32,
    pub _pad: u32,
    /// When it was switched in (CLOCK_MONOTONIC ns).
    pub since_ns: u64,
}

/// Indices of the per-CPU loss counters (`LOSSES` map).
pub mod loss {
    /// Insert into the per-thread statistics map failed (map full).
    pub const STATS_INSERT: u32 = 0;
    /// Insert into the run-queue state map failed (map full).
    pub const RUNQ_INSERT: u32 = 1;
    /// Insert into the histogram map failed (map full).
    pub const HIST_INSERT: u32 = 2;
    /// A task_struct field could not be read.
    pub const TASK_READ: u32 = 3;
    /// A run-queue delta was negative or absurd and was discarded.
    pub const BAD_DELTA: u32 = 4;
    /// Number of counters.
    pub const COUNT: u32 = 5;
    /// Human names, by index.
    pub const NAMES: [&str; COUNT as usize] = [
        "stats_map_insert_failed",
        "runq_map_insert_failed",
        "hist_map_insert_failed",
        "task_read_failed",
        "bad_delta_discarded",
    ];
}

/// Per-CPU topology entry handed to the kernel (`CPU_TOPO` map): which LLC
/// and which NUMA node a CPU belongs to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTopo {
    pub llc_id: u32,
    pub node_id: u32,
}

/// Largest CPU number the topology map covers.
pub const MAX_CPUS: u32 = 4096;

/// A run-queue wait longer than this is treated as a bookkeeping error
/// (missed event), not a measurement: 60 s.
pub const MAX_SANE_DELTA_NS: u64 = 60_000_000_000;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all these types are repr(C), contain only integers and arrays of
    // integers, and have explicit padding fields, so every bit pattern is valid.
    unsafe impl aya::Pod for super::ThreadStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RunqHist {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OnCpu {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CpuTopo {}
}
