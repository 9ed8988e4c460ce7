//! NUMA balancing moving tasks: `sched_move_numa(task_struct *tsk, int src_cpu,
//! int dst_cpu)`, and `sched_swap_numa` / `sched_stick_numa(task_struct
//! *src_tsk, int src_cpu, task_struct *dst_tsk, int dst_cpu)`.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::{
    maps::{is_target, thread_stats, window},
    task,
};

#[derive(Clone, Copy)]
enum Kind {
    Move,
    Swap,
    Stick,
}

#[inline(always)]
fn count(t: u64, kind: Kind) {
    if t == 0 {
        return;
    }
    let (pid, tgid) = task::pid_tgid(t);
    if !is_target(pid, tgid) {
        return;
    }
    if let Some(s) = thread_stats(pid, tgid) {
        // SAFETY: per-CPU map value of this CPU.
        unsafe {
            match kind {
                Kind::Move => (*s).numa_moves += 1,
                Kind::Swap => (*s).numa_swaps += 1,
                Kind::Stick => (*s).numa_sticks += 1,
            }
        }
    }
    // SAFETY: helper with no preconditions.
    if let Some(w) = window(unsafe { bpf_ktime_get_ns() }) {
        // SAFETY: per-CPU map value of this CPU.
        unsafe { (*w).numa_events += 1 };
    }
}

#[btf_tracepoint(function = "sched_move_numa")]
pub fn sched_move_numa(ctx: BtfTracePointContext) -> i32 {
    count(ctx.arg(0), Kind::Move);
    0
}

#[btf_tracepoint(function = "sched_swap_numa")]
pub fn sched_swap_numa(ctx: BtfTracePointContext) -> i32 {
    count(ctx.arg(0), Kind::Swap);
    count(ctx.arg(2), Kind::Swap);
    0
}

#[btf_tracepoint(function = "sched_stick_numa")]
pub fn sched_stick_numa(ctx: BtfTracePointContext) -> i32 {
    count(ctx.arg(0), Kind::Stick);
    count(ctx.arg(2), Kind::Stick);
    0
}
