//! `sched_switch(bool preempt, task_struct *prev, task_struct *next,
//! unsigned int prev_state)`: switch-out of `prev` (voluntary or not, and a
//! preempted task is queued again at once), switch-in of `next` (the end of
//! its run-queue wait, the start of its on-CPU time).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use probe_common::{loss, OnCpu, MAX_SANE_DELTA_NS};

use crate::{
    maps::{count_loss, hist_record, runq_switched_out, runq_take, target_tgid, thread_stats, ON_CPU},
    task,
};

#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    let target = target_tgid();
    let pid_tgid = bpf_get_current_pid_tgid();
    let prev_tgid = (pid_tgid >> 32) as u32;
    let prev_pid = pid_tgid as u32;
    let next: u64 = ctx.arg(2);
    // Cheapest possible exit for the common case: neither side is ours.
    let next_tgid = match task::tgid(next) {
        Some(t) => t,
        None => {
            count_loss(loss::TASK_READ);
            0
        }
    };
    if prev_tgid != target && next_tgid != target {
        return 0;
    }
    // SAFETY: helper with no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // pid 0 is the idle task (one per CPU, all sharing pid 0): never ours.
    if prev_tgid == target && prev_pid != 0 {
        switch_out(&ctx, prev_pid, prev_tgid, now);
    }
    if next_tgid == target {
        if let Some(next_pid) = task::pid(next) {
            if next_pid != 0 {
                switch_in(next_pid, next_tgid, now);
            }
        }
    }
    0
}

#[inline(always)]
fn switch_out(ctx: &BtfTracePointContext, pid: u32, tgid: u32, now: u64) {
    let preempt: u64 = ctx.arg(0);
    let prev_state: u64 = ctx.arg(3);
    let prev: u64 = ctx.arg(1);
    // Still runnable: preempted, or its state is TASK_RUNNING (the kernel's
    // nivcsw). A task whose sleep was cancelled by a signal is set back to
    // running after prev_state was sampled: it is queued too.
    let involuntary = (preempt & 0xff) != 0 || (prev_state as u32) == 0;
    let requeued = involuntary || task::state(prev) == Some(0);
    runq_switched_out(pid, now, requeued);
    if let Some(s) = thread_stats(pid, tgid) {
        // SAFETY: per-CPU map value of this CPU.
        unsafe {
            if involuntary {
                (*s).involuntary_switches += 1;
            } else {
                (*s).voluntary_switches += 1;
            }
            if let Some(slot) = ON_CPU.get_ptr_mut(0) {
                if (*slot).tid == pid && now >= (*slot).since_ns {
                    (*s).oncpu_ns += now - (*slot).since_ns;
                }
                (*slot).tid = 0;
            }
        }
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
    let since = runq_take(pid);
    if since == 0 {
        return;
    }
    if now < since || now - since > MAX_SANE_DELTA_NS {
        count_loss(loss::BAD_DELTA);
        return;
    }
    let delta = now - since;
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
}
