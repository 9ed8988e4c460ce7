//! `sched_wakeup(task_struct *p)` and `sched_wakeup_new(task_struct *p)`:
//! the woken task `p` (not `current`, which is the waker) becomes runnable.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};

use probe_common::hotpath;

use crate::{
    maps::{hotpath_off, is_target, runq_enter, thread_slot},
    per_target, task, trace,
};

#[btf_tracepoint(function = "sched_wakeup")]
pub fn sched_wakeup(ctx: BtfTracePointContext) -> i32 {
    if per_target::on() {
        per_target::wakeup(ctx.arg(0), false);
        return 0;
    }
    on_wakeup(&ctx);
    0
}

#[btf_tracepoint(function = "sched_wakeup_new")]
pub fn sched_wakeup_new(ctx: BtfTracePointContext) -> i32 {
    if per_target::on() {
        per_target::wakeup(ctx.arg(0), true);
        return 0;
    }
    on_wakeup(&ctx);
    0
}

#[inline(always)]
fn on_wakeup(ctx: &BtfTracePointContext) {
    let p: u64 = ctx.arg(0);
    let (pid, tgid) = if hotpath_off(hotpath::DIRECT_READS) {
        task::pid_tgid(p)
    } else {
        task::btf::pid_tgid(p)
    };
    if !is_target(pid, tgid) {
        return;
    }
    let Some(t) = thread_slot(pid, tgid) else {
        return;
    };
    // SAFETY: pointer from a map lookup (wakeups of one task are serialised
    // by its pi_lock).
    let waiting = unsafe {
        (*t).stats.wakeups += 1;
        (*t).since_ns != 0
    };
    // A thread already waiting (preempted, still queued) keeps the start of
    // its wait: no clock read for it.
    if waiting && !trace::on() && !hotpath_off(hotpath::WAKEUP_CLOCK) {
        return;
    }
    // SAFETY: helper with no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    runq_enter(t, now);
    if trace::on() {
        trace::waking(p, pid, tgid, now);
    }
}
