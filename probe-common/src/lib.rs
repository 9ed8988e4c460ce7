//! Types shared by the kernel programs (`probe-ebpf`) and the loader (`probe-user`).
//!
//! Everything here is `#[repr(C)]`, has explicit padding and no `bool`, so both
//! sides agree on the layout byte for byte. The `user` feature adds `aya::Pod`.
#![no_std]

pub mod hist;
pub mod per_target;
pub mod trace;
pub mod untraced;

pub use hist::{bucket_index, bucket_lower_bound, bucket_upper_bound, HIST_BUCKETS, HIST_MASK};
pub use trace::TraceRec;

/// Per-thread counters (part of [`ThreadSlot`]).
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
    /// Hard IRQs that ran while this thread was current, and their time.
    pub hardirq_count: u64,
    pub hardirq_ns: u64,
    /// Softirqs that ran while this thread was current, and their time.
    pub softirq_count: u64,
    pub softirq_ns: u64,
    /// `exceptions:page_fault_user` of this thread.
    pub page_faults: u64,
    /// NUMA balancing: `sched_move_numa`, `sched_swap_numa`,
    /// `sched_stick_numa` involving this thread.
    pub numa_moves: u64,
    pub numa_swaps: u64,
    pub numa_sticks: u64,
    /// Thread group (process) id the thread belongs to.
    pub tgid: u32,
    pub _pad: u32,
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
        hardirq_count: 0,
        hardirq_ns: 0,
        softirq_count: 0,
        softirq_ns: 0,
        page_faults: 0,
        numa_moves: 0,
        numa_swaps: 0,
        numa_sticks: 0,
        tgid: 0,
        _pad: 0,
    };
}

impl ThreadStats {
    /// Add `o` into `self` (maxima take the larger).
    pub fn add(&mut self, o: &ThreadStats) {
        self.runq_count += o.runq_count;
        self.runq_total_ns += o.runq_total_ns;
        self.runq_max_ns = if o.runq_max_ns > self.runq_max_ns {
            o.runq_max_ns
        } else {
            self.runq_max_ns
        };
        self.oncpu_ns += o.oncpu_ns;
        self.voluntary_switches += o.voluntary_switches;
        self.involuntary_switches += o.involuntary_switches;
        self.wakeups += o.wakeups;
        self.migrations += o.migrations;
        self.migrations_cross_llc += o.migrations_cross_llc;
        self.migrations_cross_numa += o.migrations_cross_numa;
        self.hardirq_count += o.hardirq_count;
        self.hardirq_ns += o.hardirq_ns;
        self.softirq_count += o.softirq_count;
        self.softirq_ns += o.softirq_ns;
        self.page_faults += o.page_faults;
        self.numa_moves += o.numa_moves;
        self.numa_swaps += o.numa_swaps;
        self.numa_sticks += o.numa_sticks;
        if o.tgid != 0 {
            self.tgid = o.tgid;
        }
    }
}

/// Everything the kernel keeps about one target thread, in one value (of the
/// tid-indexed `THREADS` array, or the `SLOTS` hash beyond it), so an event
/// costs one slot lookup. Each field has a
/// single writer at a time (the kernel serialises the hooks that touch a
/// given task: its own context, or the run-queue and pi locks), so plain
/// stores are enough.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ThreadSlot {
    /// When it became runnable (ns), 0 when not waiting.
    pub since_ns: u64,
    /// Task that preempted it (the `next` of the switch that requeued it),
    /// 0 when it became runnable by a wakeup.
    pub preempted_by: u32,
    /// That task's thread group id.
    pub preempted_by_tgid: u32,
    /// That task's `task_struct` address, for reading its command name
    /// when the preemptor is new to `PREEMPTORS` (0: none kept).
    pub preempted_by_task: u64,
    /// That task's command name, read at the preemption (only while the
    /// `preemptor-comm` change is switched off, see [`hotpath`]).
    pub preempted_by_comm: [u8; 16],
    /// Waits not yet counted in `hist`: the histogram buckets of the first
    /// `pend_n` of `pend`; see [`ThreadSlot::pending`].
    pub pend_n: u32,
    pub pend: [u16; PEND_WAITS],
    pub stats: ThreadStats,
    /// Run-queue wait histogram, see [`hist`].
    pub hist: [u64; HIST_BUCKETS],
    /// The thread this slot belongs to (0: an unused array slot).
    pub tid: u32,
    pub _pad: u32,
}

/// Run-queue waits a thread's slot holds (as bucket numbers) before they
/// are added to its histogram in one go; with `pend_n`, one cache line.
pub const PEND_WAITS: usize = 30;

impl ThreadSlot {
    /// The histogram buckets of the waits the programs have not yet added
    /// to `hist` (a reader adds them itself).
    pub fn pending(&self) -> &[u16] {
        &self.pend[..(self.pend_n as usize).min(PEND_WAITS)]
    }

    pub const ZERO: ThreadSlot = ThreadSlot {
        since_ns: 0,
        preempted_by: 0,
        preempted_by_tgid: 0,
        preempted_by_task: 0,
        preempted_by_comm: [0; 16],
        pend_n: 0,
        pend: [0; PEND_WAITS],
        stats: ThreadStats::ZERO,
        hist: [0; HIST_BUCKETS],
        tid: 0,
        _pad: 0,
    };
}

/// Who preempted target threads, and the run-queue wait that followed.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Preemptor {
    pub count: u64,
    pub target_wait_ns: u64,
    pub comm: [u8; 16],
    pub tgid: u32,
    pub _pad: u32,
}

impl Preemptor {
    /// No waits charged, no name yet.
    pub const ZERO: Preemptor = Preemptor {
        count: 0,
        target_wait_ns: 0,
        comm: [0; 16],
        tgid: 0,
        _pad: 0,
    };
}

/// What is running on a CPU, as far as the target is concerned (per-CPU slot
/// of `ON_CPU`, everything the switch path keeps per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OnCpu {
    /// Target thread switched in on this CPU, 0 when none.
    pub tid: u32,
    /// A target thread that switched out here with no switch-in seen
    /// (`untraced`), left for the end of the same program run; 0 when none.
    pub untraced_tid: u32,
    /// When it was switched in (CLOCK_MONOTONIC ns).
    pub since_ns: u64,
    /// The thread group switched in last on this CPU, and whether it is
    /// followed (1) or not (0): the `next` of one switch is the `prev` of
    /// the following one, so in set mode the prev side needs no lookup.
    /// Kept here so the switch path needs one per-CPU lookup, not two.
    pub filter_tgid: u32,
    pub filter_ours: u32,
    /// The time window this CPU is in (`WINDOW_NS` wide), and where it
    /// ends: while a switch's clock is below the end, no division.
    pub win_id: u64,
    pub win_end_ns: u64,
    /// When `untraced_tid`'s wait began (its `since_ns` at the switch-out).
    pub untraced_since_ns: u64,
}

/// Count, total and maximum of a duration (IRQ time, softirq delay).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DurStat {
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
}

impl DurStat {
    /// Add `o` into `self` (userspace merging of per-CPU copies).
    pub fn add(&mut self, o: &DurStat) {
        self.count += o.count;
        self.total_ns += o.total_ns;
        if o.max_ns > self.max_ns {
            self.max_ns = o.max_ns;
        }
    }
}

/// An IRQ or softirq in progress on a CPU (per-CPU slot).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IrqSlot {
    pub start_ns: u64,
    /// Target thread interrupted, 0 when the CPU was not running one.
    pub tid: u32,
    pub tgid: u32,
}

/// Per-CPU counters (index 0 of the `CPU_STATS` per-CPU array).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuStats {
    /// Time target threads spent on this CPU.
    pub target_oncpu_ns: u64,
    /// Run-queue wait of target threads that ended on this CPU.
    pub target_runq_ns: u64,
    /// Hard IRQ and softirq time charged to target threads on this CPU.
    pub target_hardirq_ns: u64,
    pub target_softirq_ns: u64,
}

/// Number of softirq vectors (NR_SOFTIRQS; stable since 2.6.36).
pub const NR_SOFTIRQS: u32 = 10;
/// Their names, by vector number (include/linux/interrupt.h).
pub const SOFTIRQ_NAMES: [&str; NR_SOFTIRQS as usize] = [
    "HI", "TIMER", "NET_TX", "NET_RX", "BLOCK", "IRQ_POLL", "TASKLET", "SCHED", "HRTIMER", "RCU",
];

/// Reasons of `migrate:mm_migrate_pages` we keep apart; larger ones share
/// the last slot.
pub const MIGRATE_REASONS: u32 = 16;

/// Per reason of `mm_migrate_pages`: events and pages, system-wide and
/// those in a target thread's context.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MigratePages {
    pub events: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub target_events: u64,
    pub target_succeeded: u64,
}

impl MigratePages {
    /// Add `o` into `self` (userspace merging of per-CPU copies).
    pub fn add(&mut self, o: &MigratePages) {
        self.events += o.events;
        self.succeeded += o.succeeded;
        self.failed += o.failed;
        self.target_events += o.target_events;
        self.target_succeeded += o.target_succeeded;
    }
}

/// Counters of one time window (`WINDOWS` per-CPU array; userspace merges
/// CPUs and drains complete windows).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Window {
    /// Window number: start = id * window_ns (CLOCK_MONOTONIC).
    pub id: u64,
    pub runq_count: u64,
    pub runq_total_ns: u64,
    pub runq_max_ns: u64,
    pub oncpu_ns: u64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    pub migrations: u64,
    pub hardirq_ns: u64,
    pub softirq_ns: u64,
    pub page_faults: u64,
    pub numa_events: u64,
}

/// Slots of the window ring (a power of two).
pub const WINDOW_SLOTS: u32 = 1024;

/// Kinds of records on the `EVENTS` ring buffer.
pub mod event {
    /// A run-queue wait above the threshold; `value_ns` = the wait,
    /// `aux` = the task that preempted it (0: it was woken).
    pub const RUNQ_OUTLIER: u32 = 1;
    /// A hard IRQ on a target thread above the threshold; `aux` = IRQ number.
    pub const HARDIRQ_OUTLIER: u32 = 2;
    /// A softirq on a target thread above the threshold; `aux` = vector.
    pub const SOFTIRQ_OUTLIER: u32 = 3;
    /// A target thread exited (its statistics can be harvested).
    pub const THREAD_EXIT: u32 = 4;
    /// A followed process forked a child process, now followed too;
    /// `aux` = child pid.
    pub const PROCESS_FORK: u32 = 5;
    /// (TRACE_EVENTS only) a user page fault of a target thread.
    pub const PAGE_FAULT: u32 = 6;
    /// (TRACE_EVENTS only) a migration of a target thread;
    /// `aux` = orig_cpu << 16 | dest_cpu, `value_ns` = 1 cross-LLC | 2 cross-NUMA.
    pub const MIGRATION: u32 = 7;
}

/// A record on the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Event {
    pub ts_ns: u64,
    pub value_ns: u64,
    pub kind: u32,
    pub tid: u32,
    pub tgid: u32,
    pub cpu: u32,
    pub aux: u32,
    pub _pad: u32,
}

/// Indices of the `THREADS_USED` counters: where target threads got their
/// slots (not losses: a thread in the hash fallback is fully counted, at a
/// hash lookup per event).
pub mod slot_use {
    /// `THREADS` slots handed out for the first time (also the high-water
    /// mark of the array).
    pub const FRESH: u32 = 0;
    /// `THREADS` slots handed out again after userspace freed them.
    pub const REUSED: u32 = 1;
    /// Slots created in the `SLOTS` hash (tid beyond `TID_SLOT`, or no
    /// `THREADS` slot free).
    pub const HASH: u32 = 2;
    pub const COUNT: u32 = 3;
}

/// Indices of the per-CPU loss counters (`LOSSES` map).
pub mod loss {
    /// Insert into the per-thread map failed (map full).
    pub const THREAD_INSERT: u32 = 0;
    /// A task_struct field could not be read.
    pub const TASK_READ: u32 = 1;
    /// A run-queue delta was negative or absurd and was discarded.
    pub const BAD_DELTA: u32 = 2;
    /// The ring buffer was full: an outlier or exit record was dropped.
    pub const RINGBUF_RESERVE: u32 = 3;
    /// Insert into the preemptor map failed (map full).
    pub const PREEMPTOR_INSERT: u32 = 4;
    /// Insert into the IRQ map failed (map full).
    pub const IRQ_INSERT: u32 = 5;
    /// A followed child process could not be added (map full).
    pub const TGID_INSERT: u32 = 6;
    /// Insert into the waker -> wakee map failed (map full).
    pub const WAKE_EDGE_INSERT: u32 = 7;
    /// The scheduler trace ring buffer (`--perfetto`) was full: a record
    /// was dropped.
    pub const SCHED_TRACE_RESERVE: u32 = 8;
    /// A target thread ran after a switch-in that the kernel did not
    /// trace; its slice and wait were rebuilt from the kernel's accounting
    /// (`untraced`). Not a loss: counted so the report can say so.
    pub const SWITCH_IN_REBUILT: u32 = 9;
    /// As `SWITCH_IN_REBUILT`, but nothing to rebuild from (no pending wait,
    /// or the kernel's fields unknown): that slice's on-CPU time is missing.
    pub const SWITCH_IN_LOST: u32 = 10;
    /// Per-target mode: a thread whose tid is beyond `WAIT_STAMPS` (sized
    /// from `pid_max` at load; raised since): its waits are not timed.
    pub const TID_BEYOND_STAMPS: u32 = 11;
    /// Number of counters.
    pub const COUNT: u32 = 12;
    /// Human names, by index.
    pub const NAMES: [&str; COUNT as usize] = [
        "thread_map_insert_failed",
        "task_read_failed",
        "bad_delta_discarded",
        "ringbuf_reserve_failed",
        "preemptor_map_insert_failed",
        "irq_map_insert_failed",
        "tgid_map_insert_failed",
        "wake_edge_map_insert_failed",
        "sched_trace_ringbuf_reserve_failed",
        "switch_in_untraced_rebuilt",
        "switch_in_untraced_lost",
        "tid_beyond_wait_stamps",
    ];
    /// Counters that are not losses (the event was rebuilt, not dropped).
    pub const NOT_LOSSES: [u32; 1] = [SWITCH_IN_REBUILT];

    /// Whether the counter named `name` (one of `NAMES`) counts lost data.
    pub fn is_loss(name: &str) -> bool {
        !NOT_LOSSES.iter().any(|&i| NAMES[i as usize] == name)
    }
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

/// Bits of the `HOTPATH_OFF` global: each turns one hot-path change of
/// issue 13 back to the way before it, for measuring what it bought.
pub mod hotpath {
    /// Task fields by `bpf_probe_read_kernel` (and `prev` by
    /// `bpf_get_current_pid_tgid`) instead of direct BTF loads.
    pub const DIRECT_READS: u32 = 1;
    /// Per-thread slots in the `SLOTS` hash instead of the tid-indexed arrays.
    pub const TID_ARRAYS: u32 = 2;
    /// The followed-process set by `TGIDS` hash lookups instead of the bitmap.
    pub const TGID_BITMAP: u32 = 4;
    /// The clock read at every wakeup, even of a thread already waiting.
    pub const WAKEUP_CLOCK: u32 = 8;
    /// The preemptor's command name read at every preemption instead of
    /// only when it is new to `PREEMPTORS`.
    pub const PREEMPTOR_COMM: u32 = 16;
    /// The window id computed with a division at every switch instead of
    /// the per-CPU cached id.
    pub const WINDOW_CACHE: u32 = 32;
    /// The switch filter through the per-CPU slot (a lookup first, then a
    /// cached answer for `prev`) instead of the bitmap for both sides
    /// before any other map work.
    pub const FILTER_FIRST: u32 = 64;
    /// Ring-buffer records committed with a consumer wakeup (userspace
    /// polls on a timer and never waits for one).
    pub const RINGBUF_NO_WAKEUP: u32 = 128;
    /// Each run-queue wait added to the thread's histogram at once
    /// instead of in batches of [`super::PEND_WAITS`] (see
    /// `ThreadSlot::pending`).
    pub const HIST_BATCH: u32 = 256;
    /// Names for `TAILPROBE_HOTPATH_OFF` (comma-separated).
    pub const NAMES: [(&str, u32); 9] = [
        ("direct-reads", DIRECT_READS),
        ("tid-arrays", TID_ARRAYS),
        ("tgid-bitmap", TGID_BITMAP),
        ("wakeup-clock", WAKEUP_CLOCK),
        ("preemptor-comm", PREEMPTOR_COMM),
        ("window-cache", WINDOW_CACHE),
        ("filter-first", FILTER_FIRST),
        ("ringbuf-no-wakeup", RINGBUF_NO_WAKEUP),
        ("hist-batch", HIST_BATCH),
    ];
}

/// Filter modes (`FILTER_MODE` global).
pub mod filter {
    /// One process: `TARGET_TGID`.
    pub const SINGLE_TGID: u32 = 0;
    /// A set of processes in the `TGIDS` map (children, --comm, --cgroup).
    pub const TGID_SET: u32 = 1;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all these types are repr(C), contain only integers and arrays of
    // integers, and have explicit padding fields, so every bit pattern is valid.
    unsafe impl aya::Pod for super::ThreadStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ThreadSlot {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Preemptor {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::OnCpu {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DurStat {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::IrqSlot {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CpuStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MigratePages {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Window {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Event {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CpuTopo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TraceRec {}
    // SAFETY: repr(C), integers only.
    unsafe impl aya::Pod for super::per_target::TargetSched {}
    // SAFETY: repr(C), integers only.
    unsafe impl aya::Pod for super::per_target::WaitStamp {}
}

/// Key of the `WAKE_EDGES` map: waker thread id in the high half, woken
/// thread id in the low half (both threads of the target).
pub fn wake_edge_key(waker: u32, wakee: u32) -> u64 {
    ((waker as u64) << 32) | wakee as u64
}

/// Idle states the `cpu_idle` program keeps apart per CPU (`CPU_IDLE`);
/// deeper ones are added to the last.
pub const CPU_IDLE_STATES: u32 = 16;
