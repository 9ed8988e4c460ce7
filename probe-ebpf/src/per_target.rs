//! The exporter's per-target mode of `sched_switch` and `sched_wakeup`
//! (`probe_common::per_target`): with `PER_TARGET` set, both programs take
//! this path and nothing else (a read-only global: the verifier drops the
//! per-thread path from the exporter's copy, and this one from record's).
//!
//! Per event of a target thread it costs the filter (one byte of
//! `TGID_TARGET`, which also names the target), the clock, the thread's
//! 8-byte `WAIT_STAMPS` entry and this CPU's `TARGET_SCHED` entry of the
//! target, whose histogram lines stay in this CPU's cache. A wakeup only
//! stores into the stamp entry (no load that can miss).

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, PerCpuArray},
    programs::BtfTracePointContext,
};
use probe_common::{
    bucket_index, loss,
    per_target::{index, stamp, TargetSched, WaitStamp},
    untraced, HIST_MASK, MAX_SANE_DELTA_NS,
};

use crate::{
    maps::{count_loss, ON_CPU, TGIDS},
    task::btf,
};

/// Non-zero: the per-target mode (the exporter). Read-only global.
#[unsafe(no_mangle)]
static PER_TARGET: u32 = 0;

/// Is the per-target mode on?
#[inline(always)]
pub fn on() -> bool {
    // SAFETY: volatile read of a loader-written global.
    unsafe { core::ptr::read_volatile(&PER_TARGET) != 0 }
}

/// tid -> when its pending run-queue wait began (sized from `pid_max` by
/// the loader in this mode, 1 entry otherwise).
#[map]
pub static WAIT_STAMPS: Array<WaitStamp> = Array::with_max_entries(1, 0);

/// tgid -> target index + 1, one byte per tgid, eight per word (sized
/// from `pid_max` by the loader in this mode). Written by userspace only.
#[map]
pub static TGID_TARGET: Array<u64> = Array::with_max_entries(1, 0);

/// Per CPU, per target index: the scheduler totals and wait histogram.
#[map]
pub static TARGET_SCHED: PerCpuArray<TargetSched> = PerCpuArray::with_max_entries(1, 0);

/// The stored target byte of `tgid` (index + 1), 0 when not followed.
/// Beyond the array (a tgid above `pid_max` as it was at load), the
/// `TGIDS` hash, whose value is the same byte in this mode.
#[inline(always)]
fn target_of(tgid: u32) -> u32 {
    if tgid == 0 {
        return 0;
    }
    match TGID_TARGET.get(index::word_of(tgid)) {
        Some(w) => index::byte_in(*w, tgid),
        // SAFETY: lookup of a u32 value, copied out.
        None => unsafe { TGIDS.get(tgid).copied().unwrap_or(0) },
    }
}

#[inline(always)]
fn totals(stored: u32) -> Option<*mut TargetSched> {
    TARGET_SCHED.get_ptr_mut(stored.wrapping_sub(1))
}

/// `sched_switch` in this mode.
#[inline(always)]
pub fn switch(ctx: &BtfTracePointContext, prev: u64, next: u64) -> i32 {
    let ((prev_pid, prev_tgid), (next_pid, next_tgid)) = (btf::pid_tgid(prev), btf::pid_tgid(next));
    let pt = if prev_pid == 0 {
        0
    } else {
        target_of(prev_tgid)
    };
    let nt = if next_pid == 0 {
        0
    } else if next_tgid == prev_tgid {
        pt
    } else {
        target_of(next_tgid)
    };
    if pt == 0 && nt == 0 {
        return 0;
    }
    // SAFETY: helper with no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(oc) = ON_CPU.get_ptr_mut(0) else {
        return 0;
    };
    // One lookup when both sides count under the same target.
    let ps = if pt != 0 { totals(pt) } else { None };
    let ns = if nt == pt {
        ps
    } else if nt != 0 {
        totals(nt)
    } else {
        None
    };
    if let Some(s) = ps {
        switch_out(ctx, prev, prev_pid, s, now, oc);
    }
    if let Some(s) = ns {
        switch_in(next_pid, s, now, oc);
    }
    0
}

#[inline(always)]
fn switch_out(
    ctx: &BtfTracePointContext,
    prev: u64,
    pid: u32,
    s: *mut TargetSched,
    now: u64,
    oc: *mut probe_common::OnCpu,
) {
    let preempt: u64 = ctx.arg(0);
    let prev_state: u64 = ctx.arg(3);
    // As the per-thread path: still runnable when preempted or running.
    let involuntary = (preempt & 0xff) != 0 || (prev_state as u32) == 0;
    let requeued = involuntary || btf::state(prev) == 0;
    // SAFETY: per-CPU map value of this CPU.
    let (seen_in, ran) = unsafe {
        let seen = (*oc).tid == pid;
        let ran = if seen && now >= (*oc).since_ns {
            now - (*oc).since_ns
        } else {
            0
        };
        (*oc).tid = 0;
        (seen, ran)
    };
    let now_stamp = stamp::of(now);
    match WAIT_STAMPS.get_ptr_mut(pid) {
        Some(e) => {
            // SAFETY: an 8-byte array value; plain stores (see WaitStamp).
            unsafe {
                if !seen_in {
                    // A wait was pending and the thread ran: it was switched
                    // in by a switch the kernel did not trace.
                    let start = (*e).start();
                    if start != 0 {
                        let since = now.saturating_sub(stamp::delta_ns(start, now_stamp));
                        rebuild(s, since, now, prev);
                    }
                }
                *e = if requeued {
                    WaitStamp {
                        wake: 0,
                        requeue: now_stamp,
                    }
                } else {
                    WaitStamp::ZERO
                };
            }
        }
        None => count_loss(loss::TID_BEYOND_STAMPS),
    }
    // SAFETY: this CPU's copy of a per-CPU map value.
    unsafe {
        if involuntary {
            (*s).involuntary_switches += 1;
        } else {
            (*s).voluntary_switches += 1;
        }
        (*s).oncpu_ns += ran;
    }
}

/// An untraced switch-in's wait and slice (`probe_common::untraced`).
#[inline(always)]
fn rebuild(s: *mut TargetSched, since: u64, now: u64, prev: u64) {
    match untraced::rebuild(since, now, btf::slice_ns(prev)) {
        Some(r) => {
            count_loss(loss::SWITCH_IN_REBUILT);
            add_wait(s, r.wait_ns);
            // SAFETY: this CPU's copy of a per-CPU map value.
            unsafe { (*s).oncpu_ns += r.ran_ns };
        }
        None => count_loss(loss::SWITCH_IN_LOST),
    }
}

#[inline(always)]
fn switch_in(pid: u32, s: *mut TargetSched, now: u64, oc: *mut probe_common::OnCpu) {
    // SAFETY: per-CPU map value of this CPU.
    unsafe {
        (*oc).tid = pid;
        (*oc).since_ns = now;
    }
    let Some(e) = WAIT_STAMPS.get_ptr_mut(pid) else {
        count_loss(loss::TID_BEYOND_STAMPS);
        return;
    };
    // SAFETY: an 8-byte array value.
    let start = unsafe { (*e).start() };
    if start == 0 {
        return;
    }
    // SAFETY: as above.
    unsafe { *e = WaitStamp::ZERO };
    let delta = stamp::delta_ns(start, stamp::of(now));
    if delta > MAX_SANE_DELTA_NS {
        count_loss(loss::BAD_DELTA);
        return;
    }
    add_wait(s, delta);
}

#[inline(always)]
fn add_wait(s: *mut TargetSched, delta: u64) {
    // Through memory: otherwise LLVM may index with a register it knows to
    // be 0 on one path (equal stamps) and the verifier does not.
    // SAFETY: a read of a local.
    let delta = unsafe { core::ptr::read_volatile(&delta) };
    // SAFETY: this CPU's copy of a per-CPU map value; the bucket number is
    // below HIST_BUCKETS (masked for the verifier).
    unsafe {
        (*s).runq_count += 1;
        (*s).runq_total_ns += delta;
        if delta > (*s).runq_max_ns {
            (*s).runq_max_ns = delta;
        }
        (*s).hist[bucket_index(delta) & HIST_MASK] += 1;
    }
}

/// `sched_wakeup` / `sched_wakeup_new` of task `p` in this mode (`new`: a
/// thread that never ran, whose entry may hold a dead thread's stamps).
#[inline(always)]
pub fn wakeup(p: u64, new: bool) {
    let (pid, tgid) = btf::pid_tgid(p);
    if pid == 0 {
        return;
    }
    let stored = target_of(tgid);
    if stored == 0 {
        return;
    }
    // SAFETY: helper with no preconditions.
    let now = stamp::of(unsafe { bpf_ktime_get_ns() });
    match WAIT_STAMPS.get_ptr_mut(pid) {
        // SAFETY: an 8-byte array value; stores only (see WaitStamp).
        Some(e) => unsafe {
            if new {
                *e = WaitStamp {
                    wake: now,
                    requeue: 0,
                };
            } else {
                (*e).wake = now;
            }
        },
        None => count_loss(loss::TID_BEYOND_STAMPS),
    }
    if let Some(s) = totals(stored) {
        // SAFETY: this CPU's copy of a per-CPU map value.
        unsafe { (*s).wakeups += 1 };
    }
}
