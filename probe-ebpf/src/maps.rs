//! Maps shared by the programs, the configuration globals, and the small
//! helpers every program uses (target filter, per-thread slots, windows).

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use probe_common::{
    bucket_index, filter, loss, CpuStats, CpuTopo, DurStat, Event, MigratePages, OnCpu, Preemptor,
    ThreadSlot, ThreadStats, Window, MAX_CPUS, MIGRATE_REASONS, NR_SOFTIRQS, WINDOW_SLOTS,
};

// ---- configuration globals, written by the loader before loading ----

/// `filter::SINGLE_TGID` or `filter::TGID_SET`.
#[unsafe(no_mangle)]
static FILTER_MODE: u32 = 0;
/// Thread group id of the target process (SINGLE_TGID); 0 matches nothing.
#[unsafe(no_mangle)]
static TARGET_TGID: u32 = 0;
/// When non-zero, only this thread is followed (`--tid`).
#[unsafe(no_mangle)]
static TARGET_TID: u32 = 0;
/// Non-zero: child processes of followed processes are followed too.
#[unsafe(no_mangle)]
static FOLLOW_CHILDREN: u32 = 0;
/// Non-zero when the loader filled `CPU_TOPO` (migration classification).
#[unsafe(no_mangle)]
static TOPO_VALID: u32 = 0;
/// Width of a time window in ns (0 disables windows).
#[unsafe(no_mangle)]
static WINDOW_NS: u64 = 10_000_000;
/// Run-queue waits at or above this are streamed as outliers (0: none).
#[unsafe(no_mangle)]
static OUTLIER_RUNQ_NS: u64 = 0;
/// IRQ/softirq runs on a target thread at or above this are streamed.
#[unsafe(no_mangle)]
static OUTLIER_IRQ_NS: u64 = 0;
/// Non-zero: also stream every page fault and migration of the target
/// (for exact per-request attribution).
#[unsafe(no_mangle)]
static TRACE_EVENTS: u32 = 0;

macro_rules! global {
    ($name:ident, $ty:ty) => {{
        // SAFETY: volatile read of a global the loader may have rewritten, so
        // the compiler does not constant-fold the initial value.
        unsafe { core::ptr::read_volatile(&$name) as $ty }
    }};
}

#[inline(always)]
pub fn topo_valid() -> bool {
    global!(TOPO_VALID, u32) != 0
}

#[inline(always)]
pub fn follow_children() -> bool {
    global!(FOLLOW_CHILDREN, u32) != 0
}

#[inline(always)]
pub fn outlier_runq_ns() -> u64 {
    global!(OUTLIER_RUNQ_NS, u64)
}

#[inline(always)]
pub fn trace_events() -> bool {
    global!(TRACE_EVENTS, u32) != 0
}

#[inline(always)]
pub fn outlier_irq_ns() -> u64 {
    global!(OUTLIER_IRQ_NS, u64)
}

// ---- maps ----

/// The filter mode in force, index 0 (`filter::*`). Starts as the
/// `FILTER_MODE` global says unless the loader wrote it; a followed fork
/// turns single mode into set mode at run time (the set already holds the
/// first process), so `-- CMD` pays for the set only once it forks.
#[map]
pub static MODE: Array<u32> = Array::with_max_entries(1, 0);

#[inline(always)]
fn filter_mode() -> u32 {
    match MODE.get(0) {
        Some(m) if *m != 0 => *m - 1,
        _ => global!(FILTER_MODE, u32),
    }
}

/// Switch to set mode (the map stores mode + 1; 0 means "as loaded").
#[inline(always)]
pub fn switch_to_set_mode() {
    if let Some(m) = MODE.get_ptr_mut(0) {
        // SAFETY: pointer from an array map lookup; a u32 store.
        unsafe { *m = filter::TGID_SET + 1 };
    }
}

/// Followed processes (TGID_SET mode): tgid -> 1.
#[map]
pub static TGIDS: HashMap<u32, u32> = HashMap::with_max_entries(1024, 0);

/// Everything about each target thread (pending wait, counters, histogram):
/// one lookup per event. Sized by the loader from the target's threads.
#[map]
pub static SLOTS: HashMap<u32, ThreadSlot> = HashMap::with_max_entries(4096, 0);

/// A zeroed slot to insert from (too large for the 512-byte stack).
#[map]
pub static ZERO_SLOT: PerCpuArray<ThreadSlot> = PerCpuArray::with_max_entries(1, 0);

/// Which target thread each CPU is running now, for on-CPU time.
#[map]
pub static ON_CPU: PerCpuArray<OnCpu> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU totals for the target.
#[map]
pub static CPU_STATS: PerCpuArray<CpuStats> = PerCpuArray::with_max_entries(1, 0);

/// Tasks that preempted target threads, keyed by their pid.
#[map]
pub static PREEMPTORS: HashMap<u32, Preemptor> = HashMap::with_max_entries(1024, 0);

/// Hard IRQ time charged to target threads, per IRQ number, per CPU.
#[map]
pub static IRQS: PerCpuHashMap<u32, DurStat> = PerCpuHashMap::with_max_entries(1024, 0);

/// Softirq time charged to target threads, per vector, per CPU.
#[map]
pub static SOFTIRQS: PerCpuArray<DurStat> = PerCpuArray::with_max_entries(NR_SOFTIRQS, 0);

/// Softirq raise -> entry delay, per vector, per CPU (all CPUs; userspace
/// reports the CPUs the target ran on).
#[map]
pub static SOFTIRQ_DELAY: PerCpuArray<DurStat> = PerCpuArray::with_max_entries(NR_SOFTIRQS, 0);

/// When each vector was first raised and not yet run, per CPU.
#[map]
pub static SOFTIRQ_RAISED: PerCpuArray<u64> = PerCpuArray::with_max_entries(NR_SOFTIRQS, 0);

/// The hard IRQ / softirq in progress on each CPU.
#[map]
pub static HARDIRQ_SLOT: PerCpuArray<probe_common::IrqSlot> = PerCpuArray::with_max_entries(1, 0);
#[map]
pub static SOFTIRQ_SLOT: PerCpuArray<probe_common::IrqSlot> = PerCpuArray::with_max_entries(1, 0);

/// `mm_migrate_pages` per reason, per CPU.
#[map]
pub static MIGRATE_PAGES: PerCpuArray<MigratePages> =
    PerCpuArray::with_max_entries(MIGRATE_REASONS, 0);

/// Ring of time windows, per CPU.
#[map]
pub static WINDOWS: PerCpuArray<Window> = PerCpuArray::with_max_entries(WINDOW_SLOTS, 0);

/// Outliers, thread exits and followed forks, streamed to userspace.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Loss and error counters, per CPU, indexed by `probe_common::loss`.
#[map]
pub static LOSSES: PerCpuArray<u64> = PerCpuArray::with_max_entries(loss::COUNT, 0);

/// CPU -> (LLC, NUMA node), filled by the loader from sysfs.
#[map]
pub static CPU_TOPO: Array<CpuTopo> = Array::with_max_entries(MAX_CPUS, 0);

// ---- helpers ----

/// Is this thread group followed? (The cheap half of the filter.)
#[inline(always)]
pub fn is_target_tgid(tgid: u32) -> bool {
    if tgid == 0 {
        return false;
    }
    if filter_mode() == filter::SINGLE_TGID {
        tgid == global!(TARGET_TGID, u32)
    } else {
        // SAFETY: lookup only; the value is not used.
        unsafe { TGIDS.get(tgid).is_some() }
    }
}

/// Per CPU: the thread group switched in last and whether it is followed.
/// The `next` of one switch is the `prev` of the following switch on the
/// same CPU, so in TGID_SET mode the prev side needs no map lookup.
#[map]
pub static FILTER_CACHE: PerCpuArray<[u32; 2]> = PerCpuArray::with_max_entries(1, 0);

/// `is_target_tgid` for the two sides of a switch, with the per-CPU cache.
#[inline(always)]
pub fn switch_sides_are_targets(prev_tgid: u32, next_tgid: u32) -> (bool, bool) {
    if filter_mode() == filter::SINGLE_TGID {
        let t = global!(TARGET_TGID, u32);
        return (
            prev_tgid != 0 && prev_tgid == t,
            next_tgid != 0 && next_tgid == t,
        );
    }
    let Some(c) = FILTER_CACHE.get_ptr_mut(0) else {
        return (is_target_tgid(prev_tgid), is_target_tgid(next_tgid));
    };
    // SAFETY: per-CPU map value of this CPU.
    unsafe {
        let prev = if (*c)[0] == prev_tgid && prev_tgid != 0 {
            (*c)[1] != 0
        } else {
            is_target_tgid(prev_tgid)
        };
        let next = if next_tgid == prev_tgid {
            prev
        } else {
            is_target_tgid(next_tgid)
        };
        *c = [next_tgid, u32::from(next)];
        (prev, next)
    }
}

/// Is this thread followed? pid 0 (the idle tasks) never is.
#[inline(always)]
pub fn is_target(pid: u32, tgid: u32) -> bool {
    tid_passes(pid) && is_target_tgid(tgid)
}

/// The thread half of the filter, for a thread whose group is followed:
/// not an idle task, and the one thread asked for with `--tid` if any.
#[inline(always)]
pub fn tid_passes(pid: u32) -> bool {
    let only = global!(TARGET_TID, u32);
    pid != 0 && (only == 0 || only == pid)
}

#[inline(always)]
pub fn count_loss(index: u32) {
    if let Some(p) = LOSSES.get_ptr_mut(index) {
        // SAFETY: per-CPU value of this CPU; these programs do not nest on one
        // CPU for the same map slot in a way that loses more than a count.
        unsafe { *p += 1 };
    }
}

/// A target thread's slot, created on first use.
#[inline(always)]
pub fn thread_slot(tid: u32, tgid: u32) -> Option<*mut ThreadSlot> {
    if let Some(p) = SLOTS.get_ptr_mut(tid) {
        return Some(p);
    }
    let zero = ZERO_SLOT.get_ptr(0)?;
    // SAFETY: `zero` points into a map value that lives as long as the map.
    let zero = unsafe { &*zero };
    // Another CPU may insert first: then the lookup below finds its slot.
    let _ = SLOTS.insert(tid, zero, BPF_NOEXIST as u64);
    match SLOTS.get_ptr_mut(tid) {
        Some(p) => {
            // SAFETY: pointer from a map lookup.
            unsafe { (*p).stats.tgid = tgid };
            Some(p)
        }
        None => {
            count_loss(loss::THREAD_INSERT);
            None
        }
    }
}

/// A target thread's counters (in its slot).
#[inline(always)]
pub fn thread_stats(tid: u32, tgid: u32) -> Option<*mut ThreadStats> {
    let p = thread_slot(tid, tgid)?;
    // SAFETY: pointer from a map lookup; taking a field's address.
    Some(unsafe { &raw mut (*p).stats })
}

/// Mark the thread runnable at `now` (a wakeup) unless it is already waiting.
#[inline(always)]
pub fn runq_enter(slot: *mut ThreadSlot, now: u64) {
    // SAFETY: pointer from a map lookup.
    unsafe {
        if (*slot).since_ns == 0 {
            (*slot).since_ns = now;
            (*slot).preempted_by = 0;
        }
    }
}

/// Count one run-queue wait of `delta` ns in the thread's histogram.
#[inline(always)]
pub fn hist_record(slot: *mut ThreadSlot, delta: u64) {
    // SAFETY: pointer from a map lookup; the index is bounds-checked by get_mut.
    unsafe {
        if let Some(b) = (*slot).hist.get_mut(bucket_index(delta)) {
            *b += 1;
        }
    }
}

/// This CPU's slot for the window containing `now`, reset when it held an
/// older window.
#[inline(always)]
pub fn window(now: u64) -> Option<*mut Window> {
    let width = global!(WINDOW_NS, u64);
    let id = now.checked_div(width)?;
    let p = WINDOWS.get_ptr_mut((id as u32) & (WINDOW_SLOTS - 1))?;
    // SAFETY: per-CPU value of this CPU.
    unsafe {
        if (*p).id != id {
            *p = Window {
                id,
                ..Window::default()
            };
        }
    }
    Some(p)
}

#[inline(always)]
pub fn cpu_stats() -> Option<*mut CpuStats> {
    CPU_STATS.get_ptr_mut(0)
}

#[inline(always)]
pub fn cpu_topo(cpu: u32) -> Option<CpuTopo> {
    CPU_TOPO.get(cpu).copied()
}

/// Stream one record; a full ring buffer is counted, never silent.
#[inline(always)]
pub fn emit(ev: Event) {
    match EVENTS.reserve::<Event>(0) {
        Some(mut slot) => {
            slot.write(ev);
            slot.submit(0);
        }
        None => count_loss(loss::RINGBUF_RESERVE),
    }
}

/// `*p += v` as one BPF atomic add instruction (no fetch: supported on every
/// kernel with BPF, unlike the fetch variants of 5.12+).
#[inline(always)]
pub unsafe fn atomic_add(p: *mut u64, v: u64) {
    // SAFETY: the caller passes a pointer to a live, 8-byte aligned map value.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({p} + 0) += {v}",
            p = in(reg) p,
            v = in(reg) v,
            options(nostack),
        );
    }
}

/// Waker -> woken thread, both of the target: wakeups counted
/// (`wake_edge_key`). Filled only when the `sched_wakeup_edges` program is
/// attached (`tailprobe diagnose`).
#[map]
pub static WAKE_EDGES: HashMap<u64, u64> = HashMap::with_max_entries(16384, 0);

/// Per CPU and idle state (index: the cpuidle state number, deeper ones in
/// the last slot): `[idle periods ended, ns spent in them]`, only on CPUs the
/// target has run on. Filled only when the `cpu_idle` program is attached
/// (`tailprobe diagnose`).
#[map]
pub static CPU_IDLE: PerCpuArray<[u64; 2]> =
    PerCpuArray::with_max_entries(probe_common::CPU_IDLE_STATES, 0);

/// Per CPU: the idle period in progress, `[state + 1 (0: none kept), entry
/// ns]` (`cpu_idle`).
#[map]
pub static CPU_IDLE_OPEN: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);
