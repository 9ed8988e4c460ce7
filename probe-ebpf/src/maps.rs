//! Maps shared by the programs, and the configuration globals.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap},
};
use probe_common::{bucket_index, loss, CpuTopo, OnCpu, RunqHist, ThreadStats, MAX_CPUS};

/// Thread group id of the target process; 0 matches nothing.
#[unsafe(no_mangle)]
static TARGET_TGID: u32 = 0;

/// Non-zero when the loader filled `CPU_TOPO` (migration classification).
#[unsafe(no_mangle)]
static TOPO_VALID: u32 = 0;

#[inline(always)]
pub fn target_tgid() -> u32 {
    // SAFETY: a read of a global the loader may have rewritten; volatile so
    // the compiler does not constant-fold the initial value.
    unsafe { core::ptr::read_volatile(&TARGET_TGID) }
}

#[inline(always)]
pub fn topo_valid() -> bool {
    // SAFETY: as in `target_tgid`.
    unsafe { core::ptr::read_volatile(&TOPO_VALID) != 0 }
}

/// Per-thread statistics, per CPU: no atomics needed, userspace sums CPUs.
/// `max_entries` is resized by the loader from the target's thread count.
#[map]
pub static STATS: PerCpuHashMap<u32, ThreadStats> = PerCpuHashMap::with_max_entries(4096, 0);

/// Per-thread run-queue wait histograms, shared by CPUs (atomic adds).
#[map]
pub static RUNQ_HIST: HashMap<u32, RunqHist> = HashMap::with_max_entries(4096, 0);

/// A zeroed histogram to insert from.
#[map]
pub static ZERO_HIST: PerCpuArray<RunqHist> = PerCpuArray::with_max_entries(1, 0);

/// When each target thread became runnable (ns), 0 when it is not waiting.
/// Written on the waker's CPU and read on the CPU that runs the thread, so it
/// is a shared map; each entry has one writer at a time.
#[map]
pub static RUNQ_SINCE: HashMap<u32, u64> = HashMap::with_max_entries(4096, 0);

/// Which target thread each CPU is running now, for on-CPU time.
#[map]
pub static ON_CPU: PerCpuArray<OnCpu> = PerCpuArray::with_max_entries(1, 0);

/// A zeroed `ThreadStats` to insert from (too large for the 512-byte stack).
#[map]
pub static ZERO_STATS: PerCpuArray<ThreadStats> = PerCpuArray::with_max_entries(1, 0);

/// Loss and error counters, per CPU, indexed by `probe_common::loss`.
#[map]
pub static LOSSES: PerCpuArray<u64> = PerCpuArray::with_max_entries(loss::COUNT, 0);

/// CPU -> (LLC, NUMA node), filled by the loader from sysfs.
#[map]
pub static CPU_TOPO: Array<CpuTopo> = Array::with_max_entries(MAX_CPUS, 0);

#[inline(always)]
pub fn count_loss(index: u32) {
    if let Some(p) = LOSSES.get_ptr_mut(index) {
        // SAFETY: the pointer comes from a per-CPU map lookup on this CPU,
        // and programs do not nest on one CPU for these hooks.
        unsafe { *p += 1 };
    }
}

/// This CPU's copy of a thread's statistics, created on first use.
#[inline(always)]
pub fn thread_stats(tid: u32, tgid: u32) -> Option<*mut ThreadStats> {
    if let Some(p) = STATS.get_ptr_mut(tid) {
        return Some(p);
    }
    let zero = ZERO_STATS.get_ptr(0)?;
    // SAFETY: `zero` points into a map value that lives as long as the map.
    let zero = unsafe { &*zero };
    if STATS.insert(tid, zero, BPF_NOEXIST as u64).is_err() {
        // Either the map is full, or another CPU inserted first; look again.
        if let Some(p) = STATS.get_ptr_mut(tid) {
            return Some(p);
        }
        count_loss(loss::STATS_INSERT);
        return None;
    }
    let p = STATS.get_ptr_mut(tid)?;
    // SAFETY: per-CPU value of this CPU, just created.
    unsafe { (*p).tgid = tgid };
    Some(p)
}

/// Mark `tid` runnable at `now` unless it is already waiting.
#[inline(always)]
pub fn runq_enter(tid: u32, now: u64) {
    if let Some(p) = RUNQ_SINCE.get_ptr_mut(tid) {
        // SAFETY: pointer from a map lookup; u64 stores are atomic on BPF.
        unsafe {
            if *p == 0 {
                *p = now;
            }
        }
        return;
    }
    if RUNQ_SINCE.insert(tid, now, BPF_NOEXIST as u64).is_err() && RUNQ_SINCE.get_ptr(tid).is_none()
    {
        count_loss(loss::RUNQ_INSERT);
    }
}

/// `tid` was switched out: it is runnable from `now` if it was requeued,
/// else not waiting at all. Overwrites whatever was pending: a wakeup seen
/// while the thread was still running (ttwu of a running task) must not
/// count as waiting.
#[inline(always)]
pub fn runq_switched_out(tid: u32, now: u64, requeued: bool) {
    if let Some(p) = RUNQ_SINCE.get_ptr_mut(tid) {
        // SAFETY: pointer from a map lookup; u64 stores are atomic on BPF.
        unsafe { *p = if requeued { now } else { 0 } };
        return;
    }
    if requeued
        && RUNQ_SINCE.insert(tid, now, BPF_NOEXIST as u64).is_err()
        && RUNQ_SINCE.get_ptr(tid).is_none()
    {
        count_loss(loss::RUNQ_INSERT);
    }
}

/// Take the time `tid` became runnable, clearing it; 0 when not waiting.
#[inline(always)]
pub fn runq_take(tid: u32) -> u64 {
    match RUNQ_SINCE.get_ptr_mut(tid) {
        // SAFETY: pointer from a map lookup.
        Some(p) => unsafe {
            let since = *p;
            *p = 0;
            since
        },
        None => 0,
    }
}

#[inline(always)]
pub fn cpu_topo(cpu: u32) -> Option<CpuTopo> {
    CPU_TOPO.get(cpu).copied()
}

/// Count one run-queue wait of `delta` ns in the thread's histogram.
#[inline(always)]
pub fn hist_record(tid: u32, delta: u64) {
    let h = match RUNQ_HIST.get_ptr_mut(tid) {
        Some(h) => h,
        None => {
            let Some(zero) = ZERO_HIST.get_ptr(0) else {
                return;
            };
            // SAFETY: `zero` points into a map value that lives as long as the map.
            let zero = unsafe { &*zero };
            let _ = RUNQ_HIST.insert(tid, zero, BPF_NOEXIST as u64);
            match RUNQ_HIST.get_ptr_mut(tid) {
                Some(h) => h,
                None => {
                    count_loss(loss::HIST_INSERT);
                    return;
                }
            }
        }
    };
    // SAFETY: `h` points to a live map value; the bucket is updated with an
    // atomic add because several CPUs may record into one thread's histogram.
    unsafe {
        if let Some(b) = (*h).buckets.get_mut(bucket_index(delta)) {
            atomic_inc(b);
        }
    }
}

/// `*p += 1` as one BPF atomic add instruction (no fetch: supported on every
/// kernel with BPF, unlike the fetch variants of 5.12+).
#[inline(always)]
unsafe fn atomic_inc(p: *mut u64) {
    // SAFETY: the caller passes a pointer to a live, 8-byte aligned map value.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({p} + 0) += {v}",
            p = in(reg) p,
            v = in(reg) 1u64,
            options(nostack),
        );
    }
}
