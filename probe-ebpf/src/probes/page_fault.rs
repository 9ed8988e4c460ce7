//! `exceptions:page_fault_user(unsigned long address, struct pt_regs *regs,
//! unsigned long error_code)`: a user page fault of `current`.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};

use probe_common::{event, Event};

use crate::maps::{emit, is_target, thread_stats, trace_events, window};

#[btf_tracepoint(function = "page_fault_user")]
pub fn page_fault_user(_ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (pid, tgid) = (pid_tgid as u32, (pid_tgid >> 32) as u32);
    if !is_target(pid, tgid) {
        return 0;
    }
    if let Some(s) = thread_stats(pid, tgid) {
        // SAFETY: per-CPU map value of this CPU.
        unsafe { (*s).page_faults += 1 };
    }
    // SAFETY: helper with no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(w) = window(now) {
        // SAFETY: per-CPU map value of this CPU.
        unsafe { (*w).page_faults += 1 };
    }
    if trace_events() {
        emit(Event {
            ts_ns: now,
            value_ns: 0,
            kind: event::PAGE_FAULT,
            tid: pid,
            tgid,
            // SAFETY: helper with no preconditions.
            cpu: unsafe { bpf_get_smp_processor_id() },
            aux: 0,
            _pad: 0,
        });
    }
    0
}
