//! Maps shared by the programs, the configuration globals, and the small
//! helpers every program uses (target filter, per-thread slots, windows).

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_NOEXIST, BPF_RB_NO_WAKEUP},
    helpers::bpf_map_pop_elem,
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap, Queue, RingBuf},
};
use probe_common::{
    bucket_index, filter, hotpath, loss, slot_use, CpuStats, CpuTopo, DurStat, Event, MigratePages,
    OnCpu, Preemptor, ThreadSlot, ThreadStats, Window, HIST_MASK, MAX_CPUS, MIGRATE_REASONS,
    NR_SOFTIRQS, PEND_WAITS, WINDOW_SLOTS,
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
/// Benchmark switches (`probe_common::hotpath`): each set bit turns one
/// hot-path change back to the older way, so its effect can be measured
/// with one build (`TAILPROBE_HOTPATH_OFF`, docs/benchmarks.md). A
/// read-only global: the verifier drops the branch not taken.
#[unsafe(no_mangle)]
static HOTPATH_OFF: u32 = 0;

/// Non-zero: waits that followed a preemption are charged to the
/// preemptor in `PREEMPTORS`.
#[unsafe(no_mangle)]
static PREEMPTORS_ON: u32 = 1;

/// Slots in `THREADS` (its max_entries, written by the loader).
#[unsafe(no_mangle)]
static THREADS_CAP: u32 = 0;
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

/// Is hot-path change `bit` switched off?
#[inline(always)]
pub fn hotpath_off(bit: u32) -> bool {
    global!(HOTPATH_OFF, u32) & bit != 0
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

/// Are waits charged to their preemptors (`PREEMPTORS`)? `record` yes;
/// the exporter, which does not export them, no.
#[inline(always)]
pub fn preemptors_on() -> bool {
    global!(PREEMPTORS_ON, u32) != 0
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

/// Followed processes (TGID_SET mode): tgid -> 1. Authoritative for tgids
/// beyond `TGID_BITS`; the loader and the fork program fill both.
#[map]
pub static TGIDS: HashMap<u32, u32> = HashMap::with_max_entries(1024, 0);

/// Followed processes as a bitmap, one bit per tgid below `pid_max` (the
/// loader sizes it): one inlined array lookup instead of a hash lookup.
/// Userspace sets bits with atomic ORs through a shared mapping, the fork
/// program with BPF atomic ORs, so neither loses the other's bit.
#[map]
pub static TGID_BITS: Array<u64> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Slot number + 1 in `THREADS` of each thread, indexed by tid (0: none).
/// Sized from `pid_max` by the loader.
#[map]
pub static TID_SLOT: Array<u64> = Array::with_max_entries(1, 0);

/// Per-thread state, claimed on a thread's first event (see `thread_slot`).
#[map]
pub static THREADS: Array<ThreadSlot> = Array::with_max_entries(1, 0);

/// How many `THREADS` slots have been handed out (index
/// `slot_use::FRESH`), handed out again (`REUSED`), and how many slots
/// were created in the `SLOTS` hash instead (`HASH`).
#[map]
pub static THREADS_USED: Array<u64> = Array::with_max_entries(slot_use::COUNT, 0);

/// Numbers of `THREADS` slots freed again: userspace pushes a slot when it
/// has harvested an exited thread from it (emptied it and cleared the
/// thread's `TID_SLOT` entry); `claim_slot` pops one once every slot has
/// been handed out. Sized like `THREADS` by the loader.
#[map]
pub static FREE_SLOTS: Queue<u32> = Queue::with_max_entries(1, 0);

/// Everything about each target thread (pending wait, counters, histogram)
/// whose tid is beyond `TID_SLOT` or that came after `THREADS` filled up.
/// Sized by the loader from the target's threads.
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

/// Who preempted target threads, and the waits that followed, per CPU
/// (no atomics and no cache line shared between CPUs; userspace sums).
#[map]
pub static PREEMPTORS: PerCpuHashMap<u32, Preemptor> = PerCpuHashMap::with_max_entries(1024, 0);

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
        tgid_in_set(tgid)
    }
}

/// The followed-process set: the bitmap, or the hash beyond it.
#[inline(always)]
fn tgid_in_set(tgid: u32) -> bool {
    if hotpath_off(hotpath::TGID_BITMAP) {
        // SAFETY: lookup only; the value is not used.
        return unsafe { TGIDS.get(tgid).is_some() };
    }
    match TGID_BITS.get(tgid >> 6) {
        Some(w) => (*w >> (tgid & 63)) & 1 != 0,
        // SAFETY: lookup only; the value is not used.
        None => unsafe { TGIDS.get(tgid).is_some() },
    }
}

/// Add a process to the followed set (both stores).
#[inline(always)]
pub fn follow_tgid(tgid: u32) -> bool {
    let inserted = TGIDS.insert(tgid, 1, BPF_NOEXIST as u64);
    if let Some(w) = TGID_BITS.get_ptr_mut(tgid >> 6) {
        // SAFETY: an 8-byte map value; an atomic OR, as userspace does.
        unsafe { atomic_or(w, 1u64 << (tgid & 63)) };
        return true;
    }
    // SAFETY: lookup only.
    inserted.is_ok() || unsafe { TGIDS.get(tgid).is_some() }
}

/// `is_target_tgid` for the two sides of a switch: two compares (one
/// process) or two bitmap tests (a set), before any other map work.
#[inline(always)]
pub fn switch_sides_are_targets(prev_tgid: u32, next_tgid: u32) -> (bool, bool) {
    if filter_mode() == filter::SINGLE_TGID {
        let t = global!(TARGET_TGID, u32);
        return (
            prev_tgid != 0 && prev_tgid == t,
            next_tgid != 0 && next_tgid == t,
        );
    }
    let prev = is_target_tgid(prev_tgid);
    let next = if next_tgid == prev_tgid {
        prev
    } else {
        is_target_tgid(next_tgid)
    };
    (prev, next)
}

/// The older switch filter (`hotpath::FILTER_FIRST` off): the per-CPU slot
/// `oc` looked up first, the answer for `next` kept there for the
/// following switch's `prev`.
#[inline(always)]
pub fn switch_sides_cached(prev_tgid: u32, next_tgid: u32, oc: Option<*mut OnCpu>) -> (bool, bool) {
    if filter_mode() == filter::SINGLE_TGID {
        return switch_sides_are_targets(prev_tgid, next_tgid);
    }
    let Some(c) = oc else {
        return (is_target_tgid(prev_tgid), is_target_tgid(next_tgid));
    };
    // SAFETY: per-CPU map value of this CPU.
    unsafe {
        let prev = if (*c).filter_tgid == prev_tgid && prev_tgid != 0 {
            (*c).filter_ours != 0
        } else {
            is_target_tgid(prev_tgid)
        };
        let next = if next_tgid == prev_tgid {
            prev
        } else {
            is_target_tgid(next_tgid)
        };
        (*c).filter_tgid = next_tgid;
        (*c).filter_ours = u32::from(next);
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

/// A target thread's slot, created on first use: in `THREADS` through the
/// tid-indexed `TID_SLOT` (two inlined array lookups), else in the `SLOTS`
/// hash.
#[inline(always)]
pub fn thread_slot(tid: u32, tgid: u32) -> Option<*mut ThreadSlot> {
    if hotpath_off(hotpath::TID_ARRAYS) {
        return hash_slot(tid, tgid);
    }
    if let Some(e) = TID_SLOT.get_ptr_mut(tid) {
        // SAFETY: pointer from an array lookup.
        let i = unsafe { *e };
        if i != 0 {
            return THREADS.get_ptr_mut((i - 1) as u32);
        }
        if let Some(p) = claim_slot(e, tid, tgid) {
            return Some(p);
        }
    }
    hash_slot(tid, tgid)
}

/// A thread's existing slot (no creation).
#[inline(always)]
pub fn find_slot(tid: u32) -> Option<*mut ThreadSlot> {
    if let Some(e) = TID_SLOT.get_ptr_mut(tid) {
        // SAFETY: pointer from an array lookup.
        let i = unsafe { *e };
        if i != 0 {
            return THREADS.get_ptr_mut((i - 1) as u32);
        }
    }
    SLOTS.get_ptr_mut(tid)
}

/// Hand a `THREADS` slot to `tid` (whose `TID_SLOT` entry is `e`): a fresh
/// one (bump `THREADS_USED`) or, once all were handed out, one freed by
/// userspace (`FREE_SLOTS`); fill the slot's identity, then publish it with
/// a compare-and-swap. A CPU that loses the race uses the winner's slot and
/// gives its own back to `FREE_SLOTS`. None when no slot is free.
#[inline(always)]
fn claim_slot(e: *mut u64, tid: u32, tgid: u32) -> Option<*mut ThreadSlot> {
    let i = match fresh_slot() {
        Some(i) => i,
        None => freed_slot()?,
    };
    let p = THREADS.get_ptr_mut(i)?;
    // SAFETY: slot `i` was handed to this CPU alone (by the fetch-add or
    // the queue pop).
    unsafe {
        (*p).tid = tid;
        (*p).stats.tgid = tgid;
    }
    // SAFETY: an 8-byte map value.
    let won = unsafe { atomic_cmpxchg(e, 0, u64::from(i) + 1) };
    if won == 0 {
        return Some(p);
    }
    // SAFETY: our own slot, never published.
    unsafe { (*p).tid = 0 };
    // A full queue cannot happen (it holds as many as THREADS); if it did,
    // the slot would only be lost to reuse.
    let _ = FREE_SLOTS.push(i, 0);
    THREADS.get_ptr_mut((won - 1) as u32)
}

/// A never used `THREADS` slot, None once all were handed out.
#[inline(always)]
fn fresh_slot() -> Option<u32> {
    let cap = u64::from(global!(THREADS_CAP, u32));
    let used = THREADS_USED.get_ptr_mut(slot_use::FRESH)?;
    // SAFETY: pointer from an array lookup; a racy read only decides
    // whether to try.
    if unsafe { *used } >= cap {
        return None;
    }
    // SAFETY: an 8-byte map value.
    let i = unsafe { atomic_fetch_add(used, 1) };
    if i >= cap {
        return None;
    }
    Some(i as u32)
}

/// A slot userspace freed (`FREE_SLOTS`), None when there is none.
#[inline(always)]
fn freed_slot() -> Option<u32> {
    // Popped into a zeroed u32, never into uninitialised stack (see
    // `task::read_u32` for why older verifiers need that).
    let mut i: u32 = 0;
    // SAFETY: FREE_SLOTS is a queue map of u32 values (the helper takes the
    // map's address, which is the static's); `i` is a writable u32.
    let r = unsafe {
        bpf_map_pop_elem(
            core::ptr::from_ref(&FREE_SLOTS).cast_mut().cast(),
            (&raw mut i).cast(),
        )
    };
    if r != 0 {
        return None;
    }
    count_slot_use(slot_use::REUSED);
    Some(i)
}

/// One more slot handed out the way `index` (`slot_use`) says; shared by
/// all CPUs, so an atomic add (rare: a thread's first event).
#[inline(always)]
fn count_slot_use(index: u32) {
    if let Some(p) = THREADS_USED.get_ptr_mut(index) {
        // SAFETY: an 8-byte map value.
        unsafe { atomic_add(p, 1) };
    }
}

/// A target thread's slot in the `SLOTS` hash, created on first use.
#[inline(always)]
fn hash_slot(tid: u32, tgid: u32) -> Option<*mut ThreadSlot> {
    if let Some(p) = SLOTS.get_ptr_mut(tid) {
        return Some(p);
    }
    let zero = ZERO_SLOT.get_ptr(0)?;
    // SAFETY: `zero` points into a map value that lives as long as the map.
    let zero = unsafe { &*zero };
    // Another CPU may insert first: then the lookup below finds its slot.
    if SLOTS.insert(tid, zero, BPF_NOEXIST as u64).is_ok() {
        count_slot_use(slot_use::HASH);
    }
    match SLOTS.get_ptr_mut(tid) {
        Some(p) => {
            // SAFETY: pointer from a map lookup.
            unsafe {
                (*p).tid = tid;
                (*p).stats.tgid = tgid;
            }
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

/// Count one run-queue wait of `delta` ns in the thread's histogram, in a
/// batch: its bucket number joins the slot's pending ones (one cache line
/// next to the counters, which every event of the thread touches anyway),
/// and only when they are `PEND_WAITS` are they all added to the
/// histogram, whose lines (4 KiB per thread) are rarely in cache: the
/// misses of one flush overlap. Readers add the pending ones themselves
/// (`ThreadSlot::pending`). The flush is straight-line code with no branch
/// (bucket numbers are masked), so verifying it costs little at attach.
#[inline(always)]
pub fn hist_record_batched(slot: *mut ThreadSlot, delta: u64) {
    let idx = bucket_index(delta) as u16;
    // SAFETY: pointer from a map lookup (single writer, see ThreadSlot);
    // indices are bounds-checked by get/get_mut.
    unsafe {
        let n = (*slot).pend_n as usize;
        if n < PEND_WAITS {
            if let Some(p) = (*slot).pend.get_mut(n) {
                *p = idx;
            }
            (*slot).pend_n = n as u32 + 1;
            return;
        }
        // Masked, not bounds-checked: no branch for the verifier to follow
        // per wait (a bucket number is below HIST_BUCKETS, a power of two).
        let mut k = 0;
        while k < PEND_WAITS {
            (*slot).hist[usize::from((*slot).pend[k]) & HIST_MASK] += 1;
            k += 1;
        }
        (*slot).pend_n = 0;
        if let Some(b) = (*slot).hist.get_mut(usize::from(idx)) {
            *b += 1;
        }
    }
}

/// This CPU's slot for the window containing `now`, reset when it held an
/// older window.
#[inline(always)]
pub fn window(now: u64) -> Option<*mut Window> {
    let width = global!(WINDOW_NS, u64);
    window_slot(now.checked_div(width)?)
}

/// `window` for the switch path: the window id is cached in this CPU's
/// `ON_CPU` slot (`oc`) with the time it ends, so a switch divides only
/// when it is the first of a window on this CPU. No work at all when
/// windows are off (`WINDOW_NS` is a read-only global: the verifier drops
/// the rest).
#[inline(always)]
pub fn switch_window(now: u64, oc: Option<*mut OnCpu>) -> Option<*mut Window> {
    let width = global!(WINDOW_NS, u64);
    if width == 0 {
        return None;
    }
    let Some(c) = oc.filter(|_| !hotpath_off(hotpath::WINDOW_CACHE)) else {
        return window(now);
    };
    // SAFETY: per-CPU map value of this CPU.
    let id = unsafe {
        let end = (*c).win_end_ns;
        if now < end && now.wrapping_add(width) >= end {
            (*c).win_id
        } else {
            let id = now / width;
            (*c).win_id = id;
            (*c).win_end_ns = id.wrapping_add(1).wrapping_mul(width);
            id
        }
    };
    window_slot(id)
}

/// This CPU's slot for window `id`, reset when it held an older window.
#[inline(always)]
fn window_slot(id: u64) -> Option<*mut Window> {
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
/// Userspace drains `EVENTS` on a timer and never sleeps on it, so the
/// record is committed without a consumer wakeup (which would queue an
/// irq_work, a self-IPI: a VM exit under virtualisation).
#[inline(always)]
pub fn emit(ev: Event) {
    let flags = if hotpath_off(hotpath::RINGBUF_NO_WAKEUP) {
        0
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    };
    match EVENTS.reserve::<Event>(0) {
        Some(mut slot) => {
            slot.write(ev);
            slot.submit(flags);
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

/// `*p |= v` as one BPF atomic instruction (Linux 5.12+).
#[inline(always)]
pub unsafe fn atomic_or(p: *mut u64, v: u64) {
    // SAFETY: the caller passes a pointer to a live, 8-byte aligned map value.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({p} + 0) |= {v}",
            p = in(reg) p,
            v = in(reg) v,
            options(nostack),
        );
    }
}

/// `*p += v`, returning the old value, as one BPF atomic (Linux 5.12+).
#[inline(always)]
pub unsafe fn atomic_fetch_add(p: *mut u64, v: u64) -> u64 {
    let mut v = v;
    // SAFETY: the caller passes a pointer to a live, 8-byte aligned map value.
    unsafe {
        core::arch::asm!(
            "{v} = atomic_fetch_add((u64 *)({p} + 0), {v})",
            p = in(reg) p,
            v = inout(reg) v,
            options(nostack),
        );
    }
    v
}

/// Compare-and-swap of a u64: stores `new` when `*p == old`; returns the
/// value found (`old` on success). One BPF atomic (Linux 5.12+).
#[inline(always)]
pub unsafe fn atomic_cmpxchg(p: *mut u64, old: u64, new: u64) -> u64 {
    let found: u64;
    // SAFETY: the caller passes a pointer to a live, 8-byte aligned map value.
    unsafe {
        core::arch::asm!(
            "r0 = cmpxchg_64({p} + 0, r0, {n})",
            p = in(reg) p,
            n = in(reg) new,
            inout("r0") old => found,
            options(nostack),
        );
    }
    found
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
