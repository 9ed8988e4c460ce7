//! Thread and process life cycle: `sched_process_fork(task_struct *parent,
//! task_struct *child)` follows child processes when asked;
//! `sched_process_exit(task_struct *p)` tells userspace to harvest an exiting
//! target thread's statistics and free its slot.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use probe_common::{event, loss, Event};

use crate::{
    maps::{
        count_loss, emit, follow_children, follow_tgid, is_target, is_target_tgid,
        switch_to_set_mode,
    },
    task,
};

#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    if !follow_children() {
        return 0;
    }
    let parent: u64 = ctx.arg(0);
    let child: u64 = ctx.arg(1);
    let Some(parent_tgid) = task::tgid(parent) else {
        return 0;
    };
    if !is_target_tgid(parent_tgid) {
        return 0;
    }
    let (Some(child_pid), Some(child_tgid)) = (task::pid(child), task::tgid(child)) else {
        return 0;
    };
    // A new thread shares its parent's tgid and is followed already.
    if child_tgid == parent_tgid || child_pid != child_tgid {
        return 0;
    }
    let followed = follow_tgid(child_tgid);
    // The set now has two processes: filter by it from here on.
    switch_to_set_mode();
    if !followed {
        count_loss(loss::TGID_INSERT);
        return 0;
    }
    emit(Event {
        // SAFETY: helper with no preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        value_ns: 0,
        kind: event::PROCESS_FORK,
        tid: child_pid,
        tgid: parent_tgid,
        // SAFETY: helper with no preconditions.
        cpu: unsafe { bpf_get_smp_processor_id() },
        aux: child_pid,
        _pad: 0,
    });
    0
}

#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(_ctx: BtfTracePointContext) -> i32 {
    // The exiting task is `current`.
    let pid_tgid = bpf_get_current_pid_tgid();
    let (pid, tgid) = (pid_tgid as u32, (pid_tgid >> 32) as u32);
    if !is_target(pid, tgid) {
        return 0;
    }
    // Its counters stay for userspace to harvest (it frees the slot). Its
    // pending wait stamp is left alone: the last switch-out clears it, and
    // needs it if the kernel switched the thread in untraced
    // (`probe_common::untraced`).
    emit(Event {
        // SAFETY: helper with no preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        value_ns: 0,
        kind: event::THREAD_EXIT,
        tid: pid,
        tgid,
        // SAFETY: helper with no preconditions.
        cpu: unsafe { bpf_get_smp_processor_id() },
        aux: 0,
        _pad: 0,
    });
    0
}
