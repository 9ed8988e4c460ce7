//! `sched_switch(bool preempt, task_struct *prev, task_struct *next,
//! unsigned int prev_state)`: switch-out of `prev` (voluntary or not; a
//! preempted task is queued again at once, and `next` is who preempted it),
//! switch-in of `next` (the end of its run-queue wait, the start of its
//! on-CPU time).
//!
//! Cost matters here more than anywhere: this fires on every context switch
//! of the machine. Both tasks' ids are direct loads from the BTF pointers
//! (no helper call); a switch that involves no target thread costs those and
//! two compares (one process) or a bitmap test (a set); one that does costs
//! two inlined array lookups per target side (`TID_SLOT`, `THREADS`), the
//! rest being per-CPU array slots. No hash lookup unless a thread is beyond
//! the arrays or a preemptor is charged.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use probe_common::{
    event, hotpath, loss, untraced, CpuStats, Event, OnCpu, Preemptor, Window, MAX_SANE_DELTA_NS,
};

use crate::task::btf;

use crate::{
    maps::{
        count_loss, cpu_stats, emit, find_slot, hist_record, hist_record_batched, hotpath_off,
        outlier_runq_ns, preemptors_on, switch_sides_are_targets, switch_sides_cached,
        switch_window, thread_slot, tid_passes, ON_CPU, PREEMPTORS,
    },
    per_target, task, trace,
};

#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    // `prev` is current: the same ids bpf_get_current_pid_tgid gives,
    // without the helper call.
    let prev: u64 = ctx.arg(1);
    let next: u64 = ctx.arg(2);
    if per_target::on() {
        return per_target::switch(&ctx, prev, next);
    }
    let ((prev_pid, prev_tgid), (next_pid, next_tgid)) = if hotpath_off(hotpath::DIRECT_READS) {
        let pid_tgid = bpf_get_current_pid_tgid();
        let n = task::pid_tgid(next);
        if n.1 == task::UNREADABLE {
            count_loss(loss::TASK_READ);
        }
        ((pid_tgid as u32, (pid_tgid >> 32) as u32), n)
    } else {
        (btf::pid_tgid(prev), btf::pid_tgid(next))
    };
    // Cheapest possible exit for the common case: neither side is ours,
    // found before any other map work.
    let (oc, (prev_ours, next_ours)) = if hotpath_off(hotpath::FILTER_FIRST) {
        let oc = ON_CPU.get_ptr_mut(0);
        (oc, switch_sides_cached(prev_tgid, next_tgid, oc))
    } else {
        let sides = switch_sides_are_targets(prev_tgid, next_tgid);
        if !sides.0 && !sides.1 && !trace::on() {
            return 0;
        }
        // Everything kept per CPU for the switch path, in one slot.
        (ON_CPU.get_ptr_mut(0), sides)
    };
    if !prev_ours && !next_ours {
        if trace::on() {
            let s = trace::Sides {
                prev_pid,
                prev_tgid,
                next,
                next_pid,
                next_tgid,
            };
            // SAFETY: helper with no preconditions.
            trace::switch_other(&ctx, &s, unsafe { bpf_ktime_get_ns() });
        }
        return 0;
    }
    // SAFETY: helper with no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if trace::on() {
        let (p, n) = (
            prev_ours && tid_passes(prev_pid),
            next_ours && tid_passes(next_pid),
        );
        let s = trace::Sides {
            prev_pid,
            prev_tgid,
            next,
            next_pid,
            next_tgid,
        };
        if p || n {
            trace::switch_target(&ctx, &s, n, now);
        } else {
            trace::switch_other(&ctx, &s, now);
        }
    }
    let win = switch_window(now, oc);
    let cpu = cpu_stats();
    if prev_ours && tid_passes(prev_pid) {
        switch_out(
            &ctx, prev_pid, prev_tgid, next, next_pid, next_tgid, now, win, cpu, oc,
        );
    }
    if next_ours && tid_passes(next_pid) {
        switch_in(next_pid, next_tgid, now, win, cpu, oc);
    }
    // Last, and handed over in this CPU's slot rather than in a variable:
    // the verifier then walks switch_in once for both cases, not twice.
    if let Some(c) = oc {
        // SAFETY: per-CPU map value of this CPU.
        let (tid, since) = unsafe { ((*c).untraced_tid, (*c).untraced_since_ns) };
        if tid != 0 {
            // SAFETY: as above.
            unsafe { (*c).untraced_tid = 0 };
            untraced_switch_in(tid, prev_tgid, prev, since, now, win, cpu);
        }
    }
    0
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn switch_out(
    ctx: &BtfTracePointContext,
    pid: u32,
    tgid: u32,
    next: u64,
    next_pid: u32,
    next_tgid: u32,
    now: u64,
    win: Option<*mut Window>,
    cpu: Option<*mut CpuStats>,
    oc: Option<*mut OnCpu>,
) {
    let preempt: u64 = ctx.arg(0);
    let prev_state: u64 = ctx.arg(3);
    let prev: u64 = ctx.arg(1);
    // Still runnable: preempted, or its state is TASK_RUNNING (the kernel's
    // nivcsw). A task whose sleep was cancelled by a signal is set back to
    // running after prev_state was sampled: it is queued too.
    let involuntary = (preempt & 0xff) != 0 || (prev_state as u32) == 0;
    let requeued = involuntary
        || if hotpath_off(hotpath::DIRECT_READS) {
            task::state(prev) == Some(0)
        } else {
            btf::state(prev) == 0
        };
    let mut ran = 0u64;
    let mut seen_in = false;
    if let Some(slot) = oc {
        // SAFETY: per-CPU map value of this CPU.
        unsafe {
            if (*slot).tid == pid {
                seen_in = true;
                if now >= (*slot).since_ns {
                    ran = now - (*slot).since_ns;
                }
            }
            (*slot).tid = 0;
        }
    }
    if let Some(t) = thread_slot(pid, tgid) {
        // SAFETY: pointer from a map lookup (this thread's own switch-out);
        // `oc` is this CPU's slot.
        unsafe {
            // Its first switch-out since the programs attached is the
            // thread that was already running then: nothing is missing.
            if let Some(c) = oc.filter(|_| !seen_in) {
                if (*t).stats.voluntary_switches + (*t).stats.involuntary_switches != 0 {
                    (*c).untraced_tid = pid;
                    (*c).untraced_since_ns = (*t).since_ns;
                }
            }
        }
        // SAFETY: pointer from a map lookup; see ThreadSlot for why plain
        // stores are enough.
        unsafe {
            // Overwrite whatever was pending: a wakeup seen while the thread
            // was still running must not count as waiting.
            if requeued {
                (*t).since_ns = now;
                (*t).preempted_by = next_pid;
                (*t).preempted_by_tgid = next_tgid;
                if hotpath_off(hotpath::PREEMPTOR_COMM) {
                    (*t).preempted_by_comm = if hotpath_off(hotpath::DIRECT_READS) {
                        task::comm(next).unwrap_or([0; 16])
                    } else {
                        btf::comm(next)
                    };
                } else {
                    // Its name is read only if it is new to PREEMPTORS.
                    (*t).preempted_by_task = next;
                }
            } else {
                (*t).since_ns = 0;
                (*t).preempted_by = 0;
            }
            if involuntary {
                (*t).stats.involuntary_switches += 1;
            } else {
                (*t).stats.voluntary_switches += 1;
            }
            (*t).stats.oncpu_ns += ran;
        }
    }
    if let Some(w) = win {
        // SAFETY: per-CPU map value of this CPU.
        unsafe {
            if involuntary {
                (*w).involuntary_switches += 1;
            } else {
                (*w).voluntary_switches += 1;
            }
            (*w).oncpu_ns += ran;
        }
    }
    if let Some(c) = cpu {
        // SAFETY: per-CPU map value of this CPU.
        unsafe { (*c).target_oncpu_ns += ran };
    }
}

#[inline(always)]
fn switch_in(
    pid: u32,
    tgid: u32,
    now: u64,
    win: Option<*mut Window>,
    cpu: Option<*mut CpuStats>,
    oc: Option<*mut OnCpu>,
) {
    if let Some(slot) = oc {
        // SAFETY: per-CPU map value of this CPU.
        unsafe {
            (*slot).tid = pid;
            (*slot).since_ns = now;
        }
    }
    let Some(t) = thread_slot(pid, tgid) else {
        return;
    };
    // SAFETY: pointer from a map lookup (single writer, see ThreadSlot).
    let (since, by, by_tgid) = unsafe {
        let v = ((*t).since_ns, (*t).preempted_by, (*t).preempted_by_tgid);
        (*t).since_ns = 0;
        (*t).preempted_by = 0;
        v
    };
    if since == 0 {
        return;
    }
    if now < since || now - since > MAX_SANE_DELTA_NS {
        count_loss(loss::BAD_DELTA);
        return;
    }
    count_wait(t, pid, tgid, now - since, by, by_tgid, now, win, cpu);
}

/// A target thread switched out with no switch-in of it seen on this CPU,
/// after an earlier switch-out: the kernel ran it after a switch it did not
/// trace (`probe_common::untraced`). Its slice and the wait before it are
/// rebuilt from the kernel's accounting (`since`: when its wait began), or
/// counted as lost.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn untraced_switch_in(
    pid: u32,
    tgid: u32,
    prev: u64,
    since: u64,
    now: u64,
    win: Option<*mut Window>,
    cpu: Option<*mut CpuStats>,
) {
    // Found, not created: its switch-out has just used it.
    let Some(t) = find_slot(pid) else {
        return;
    };
    let Some(r) = untraced::rebuild(since, now, btf::slice_ns(prev)) else {
        count_loss(loss::SWITCH_IN_LOST);
        return;
    };
    count_loss(loss::SWITCH_IN_REBUILT);
    // Its bucket directly, not the batch (readers add both). Not charged to
    // a preemptor: `count_wait` at a second place in this program took the
    // verifier past its limit (1M instructions) for a rare event. It ended
    // where the slice began; who preempted the thread is not kept.
    add_wait(t, r.wait_ns, win, cpu);
    hist_record(t, r.wait_ns);
    stream_wait(pid, tgid, r.wait_ns, now - r.ran_ns, 0);
    // SAFETY: pointer from a map lookup (single writer, see ThreadSlot).
    unsafe { (*t).stats.oncpu_ns += r.ran_ns };
    if let Some(w) = win {
        // SAFETY: per-CPU map value of this CPU.
        unsafe { (*w).oncpu_ns += r.ran_ns };
    }
    if let Some(c) = cpu {
        // SAFETY: per-CPU map value of this CPU.
        unsafe { (*c).target_oncpu_ns += r.ran_ns };
    }
}

/// One run-queue wait of target thread `pid` that ended at `now`: its
/// counters, histogram, window, CPU total, preemptor charge and outlier.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn count_wait(
    t: *mut probe_common::ThreadSlot,
    pid: u32,
    tgid: u32,
    delta: u64,
    by: u32,
    by_tgid: u32,
    now: u64,
    win: Option<*mut Window>,
    cpu: Option<*mut CpuStats>,
) {
    add_wait(t, delta, win, cpu);
    if hotpath_off(hotpath::HIST_BATCH) {
        hist_record(t, delta);
    } else {
        hist_record_batched(t, delta);
    }
    if by != 0 && preemptors_on() {
        preemptor_add(t, by, by_tgid, delta);
    }
    stream_wait(pid, tgid, delta, now, by);
}

/// A wait's count, total and maximum: the thread's, its window's and the
/// CPU's total (not the histogram).
#[inline(always)]
fn add_wait(
    t: *mut probe_common::ThreadSlot,
    delta: u64,
    win: Option<*mut Window>,
    cpu: Option<*mut CpuStats>,
) {
    // SAFETY: pointer from a map lookup (single writer, see ThreadSlot).
    unsafe {
        (*t).stats.runq_count += 1;
        (*t).stats.runq_total_ns += delta;
        if delta > (*t).stats.runq_max_ns {
            (*t).stats.runq_max_ns = delta;
        }
    }
    if let Some(w) = win {
        // SAFETY: per-CPU map value of this CPU.
        unsafe {
            (*w).runq_count += 1;
            (*w).runq_total_ns += delta;
            if delta > (*w).runq_max_ns {
                (*w).runq_max_ns = delta;
            }
        }
    }
    if let Some(c) = cpu {
        // SAFETY: per-CPU map value of this CPU.
        unsafe { (*c).target_runq_ns += delta };
    }
}

/// Stream a wait that ended at `end` as an outlier when it reaches
/// `--outlier-runq` (`by`: who preempted the thread, 0 when unknown).
#[inline(always)]
fn stream_wait(pid: u32, tgid: u32, delta: u64, end: u64, by: u32) {
    let threshold = outlier_runq_ns();
    if threshold != 0 && delta >= threshold {
        emit(Event {
            ts_ns: end,
            value_ns: delta,
            kind: event::RUNQ_OUTLIER,
            tid: pid,
            tgid,
            // SAFETY: helper with no preconditions.
            cpu: unsafe { bpf_get_smp_processor_id() },
            aux: by,
            _pad: 0,
        });
    }
}

/// Charge a wait to the task that caused it, in this CPU's copy of its
/// `PREEMPTORS` entry (plain adds: no other CPU writes it). A copy with no
/// count yet gets the preemptor's name and tgid.
#[inline(always)]
fn preemptor_add(t: *mut probe_common::ThreadSlot, by: u32, by_tgid: u32, delta: u64) {
    let p = match PREEMPTORS.get_ptr_mut(by) {
        Some(p) => p,
        None => {
            // Another CPU may have created the entry meanwhile (then this
            // CPU's copy exists, zeroed); a failure with no entry is a full
            // map.
            let _ = PREEMPTORS.insert(by, Preemptor::ZERO, BPF_NOEXIST as u64);
            match PREEMPTORS.get_ptr_mut(by) {
                Some(p) => p,
                None => {
                    count_loss(loss::PREEMPTOR_INSERT);
                    return;
                }
            }
        }
    };
    // SAFETY: this CPU's copy of a per-CPU map value.
    unsafe {
        if (*p).count == 0 {
            (*p).comm = preemptor_comm(t, by);
            (*p).tgid = by_tgid;
        }
        (*p).count += 1;
        (*p).target_wait_ns += delta;
    }
}

/// The command name of the task that preempted the thread of slot `t`, read
/// now (it is new to `PREEMPTORS`) from the `task_struct` kept at the
/// preemption. That task may have exited since: the read goes through
/// `bpf_probe_read_kernel` (a freed address gives an error, not a fault)
/// and is kept only if the pid there is still `by`; otherwise the name is
/// left empty (reported as unknown).
#[inline(always)]
fn preemptor_comm(t: *mut probe_common::ThreadSlot, by: u32) -> [u8; 16] {
    // SAFETY: pointer from a map lookup.
    let (task, kept) = unsafe { ((*t).preempted_by_task, (*t).preempted_by_comm) };
    if hotpath_off(hotpath::PREEMPTOR_COMM) || task == 0 {
        return kept;
    }
    match (task::pid(task), task::comm(task)) {
        (Some(pid), Some(comm)) if pid == by => comm,
        _ => [0; 16],
    }
}
