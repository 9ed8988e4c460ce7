//! `sched_switch(bool preempt, task_struct *prev, task_struct *next,
//! unsigned int prev_state)`: switch-out of `prev` (voluntary or not; a
//! preempted task is queued again at once, and `next` is who preempted it),
//! switch-in of `next` (the end of its run-queue wait, the start of its
//! on-CPU time).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use probe_common::{event, loss, Event, OnCpu, Preemptor, MAX_SANE_DELTA_NS};

use crate::{
    maps::{
        atomic_add, count_loss, cpu_stats, emit, hist_record, is_target, is_target_tgid,
        outlier_runq_ns, runq_switched_out, runq_take, thread_stats, window, ON_CPU, PREEMPTORS,
    },
    task,
};

#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let prev_tgid = (pid_tgid >> 32) as u32;
    let prev_pid = pid_tgid as u32;
    let next: u64 = ctx.arg(2);
    let next_tgid = match task::tgid(next) {
        Some(t) => t,
        None => {
            count_loss(loss::TASK_READ);
            0
        }
    };
    // Cheapest possible exit for the common case: neither side is ours.
    let prev_ours = is_target_tgid(prev_tgid);
    let next_ours = is_target_tgid(next_tgid);
    if !prev_ours && !next_ours {
        return 0;
    }
    // SAFETY: helper with no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let next_pid = task::pid(next).unwrap_or(0);
    if prev_ours && is_target(prev_pid, prev_tgid) {
        switch_out(&ctx, prev_pid, prev_tgid, next, next_pid, next_tgid, now);
    }
    if next_ours && is_target(next_pid, next_tgid) {
        switch_in(next_pid, next_tgid, now);
    }
    0
}

#[inline(always)]
fn switch_out(
    ctx: &BtfTracePointContext,
    pid: u32,
    tgid: u32,
    next: u64,
    next_pid: u32,
    next_tgid: u32,
    now: u64,
) {
    let preempt: u64 = ctx.arg(0);
    let prev_state: u64 = ctx.arg(3);
    let prev: u64 = ctx.arg(1);
    // Still runnable: preempted, or its state is TASK_RUNNING (the kernel's
    // nivcsw). A task whose sleep was cancelled by a signal is set back to
    // running after prev_state was sampled: it is queued too.
    let involuntary = (preempt & 0xff) != 0 || (prev_state as u32) == 0;
    let requeued = involuntary || task::state(prev) == Some(0);
    let by = if requeued { next_pid } else { 0 };
    runq_switched_out(pid, now, requeued, by);
    if requeued && PREEMPTORS.get_ptr(by).is_none() {
        let p = Preemptor {
            count: 0,
            target_wait_ns: 0,
            comm: task::comm(next).unwrap_or([0; 16]),
            tgid: next_tgid,
            _pad: 0,
        };
        if PREEMPTORS
            .insert(by, p, aya_ebpf::bindings::BPF_NOEXIST as u64)
            .is_err()
            && PREEMPTORS.get_ptr(by).is_none()
        {
            count_loss(loss::PREEMPTOR_INSERT);
        }
    }
    let mut ran = 0u64;
    if let Some(slot) = ON_CPU.get_ptr_mut(0) {
        // SAFETY: per-CPU map value of this CPU.
        unsafe {
            if (*slot).tid == pid && now >= (*slot).since_ns {
                ran = now - (*slot).since_ns;
            }
            (*slot).tid = 0;
        }
    }
    if let Some(s) = thread_stats(pid, tgid) {
        // SAFETY: per-CPU map value of this CPU.
        unsafe {
            if involuntary {
                (*s).involuntary_switches += 1;
            } else {
                (*s).voluntary_switches += 1;
            }
            (*s).oncpu_ns += ran;
        }
    }
    if let Some(w) = window(now) {
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
    if let Some(c) = cpu_stats() {
        // SAFETY: per-CPU map value of this CPU.
        unsafe { (*c).target_oncpu_ns += ran };
    }
}

#[inline(always)]
fn switch_in(pid: u32, tgid: u32, now: u64) {
    if let Some(slot) = ON_CPU.get_ptr_mut(0) {
        // SAFETY: per-CPU map value of this CPU.
        unsafe {
            *slot = OnCpu {
                tid: pid,
                _pad: 0,
                since_ns: now,
            }
        };
    }
    let Some(st) = runq_take(pid) else { return };
    if now < st.since_ns || now - st.since_ns > MAX_SANE_DELTA_NS {
        count_loss(loss::BAD_DELTA);
        return;
    }
    let delta = now - st.since_ns;
    if let Some(s) = thread_stats(pid, tgid) {
        // SAFETY: per-CPU map value of this CPU.
        unsafe {
            (*s).runq_count += 1;
            (*s).runq_total_ns += delta;
            if delta > (*s).runq_max_ns {
                (*s).runq_max_ns = delta;
            }
        }
    }
    hist_record(pid, delta);
    if let Some(w) = window(now) {
        // SAFETY: per-CPU map value of this CPU.
        unsafe {
            (*w).runq_count += 1;
            (*w).runq_total_ns += delta;
            if delta > (*w).runq_max_ns {
                (*w).runq_max_ns = delta;
            }
        }
    }
    if let Some(c) = cpu_stats() {
        // SAFETY: per-CPU map value of this CPU.
        unsafe { (*c).target_runq_ns += delta };
    }
    if st.preempted_by != 0 {
        if let Some(p) = PREEMPTORS.get_ptr_mut(st.preempted_by) {
            // SAFETY: shared map value; updated with atomic adds.
            unsafe {
                atomic_add(&raw mut (*p).count, 1);
                atomic_add(&raw mut (*p).target_wait_ns, delta);
            }
        }
    }
    let threshold = outlier_runq_ns();
    if threshold != 0 && delta >= threshold {
        emit(Event {
            ts_ns: now,
            value_ns: delta,
            kind: event::RUNQ_OUTLIER,
            tid: pid,
            tgid,
            // SAFETY: helper with no preconditions.
            cpu: unsafe { bpf_get_smp_processor_id() },
            aux: st.preempted_by,
            _pad: 0,
        });
    }
}
