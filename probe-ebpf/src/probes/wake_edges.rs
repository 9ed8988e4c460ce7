//! `sched_waking(task_struct *p)`, a second program: who woke whom among
//! the target's threads (the waker is `current`). `sched_waking` fires in
//! the waker's context; `sched_wakeup` does not when the wakee's CPU is
//! idle (the wakeup is queued to that CPU and traced there, with the idle
//! task as `current`), which on a quiet machine lost most edges. Attached only on request
//! (`tailprobe diagnose`), so `tailprobe record`'s cost is unchanged. A
//! wakeup of a thread outside the target costs one `task_struct` read and
//! the filter compare; one whose waker is outside costs the same plus the
//! current task's ids.

use aya_ebpf::{
    bindings::BPF_NOEXIST, helpers::bpf_get_current_pid_tgid, macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use probe_common::{loss, wake_edge_key};

use crate::{
    maps::{atomic_add, count_loss, is_target, WAKE_EDGES},
    task,
};

#[btf_tracepoint(function = "sched_waking")]
pub fn sched_wakeup_edges(ctx: BtfTracePointContext) -> i32 {
    let p: u64 = ctx.arg(0);
    let (pid, tgid) = task::pid_tgid(p);
    if !is_target(pid, tgid) {
        return 0;
    }
    let cur = bpf_get_current_pid_tgid();
    let (waker, waker_tgid) = (cur as u32, (cur >> 32) as u32);
    if waker == pid || !is_target(waker, waker_tgid) {
        return 0;
    }
    let key = wake_edge_key(waker, pid);
    if let Some(c) = WAKE_EDGES.get_ptr_mut(key) {
        // SAFETY: shared map value, updated with an atomic add.
        unsafe { atomic_add(c, 1) };
        return 0;
    }
    if WAKE_EDGES.insert(key, 1u64, BPF_NOEXIST as u64).is_err() {
        match WAKE_EDGES.get_ptr_mut(key) {
            // SAFETY: as above (another CPU created it meanwhile).
            Some(c) => unsafe { atomic_add(c, 1) },
            None => count_loss(loss::WAKE_EDGE_INSERT),
        }
    }
    0
}
