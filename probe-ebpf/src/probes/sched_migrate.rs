//! `sched_migrate_task(task_struct *p, int dest_cpu)`: the task is moved from
//! the CPU it is on (read from the task) to `dest_cpu`; classified with the
//! CPU -> LLC/node table the loader filled.

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use probe_common::{event, Event};

use crate::{
    maps::{cpu_topo, emit, is_target, thread_stats, topo_valid, trace_events, window},
    task,
};

/// The origin CPU when it cannot be read (the event's `aux` says 0xffff).
const NO_CPU: u32 = 0xffff;

#[btf_tracepoint(function = "sched_migrate_task")]
pub fn sched_migrate_task(ctx: BtfTracePointContext) -> i32 {
    let p: u64 = ctx.arg(0);
    let (pid, tgid) = task::pid_tgid(p);
    if !is_target(pid, tgid) {
        return 0;
    }
    let dest: u64 = ctx.arg(1);
    let dest = dest as u32;
    // A plain value on both paths, not an Option: with Option, LLVM spills
    // the CPU only where the read succeeded and reloads it unconditionally
    // for the event below, and verifiers before Linux 6.3 reject that read
    // of uninitialised stack (seen on Debian's 6.1 with --trace-events).
    let orig = task::cpu(p).unwrap_or(NO_CPU);
    let (cross_llc, cross_numa) = match (topo_valid(), orig) {
        (true, orig) if orig != NO_CPU && orig != dest => match (cpu_topo(orig), cpu_topo(dest)) {
            (Some(a), Some(b)) => (a.llc_id != b.llc_id, a.node_id != b.node_id),
            _ => (false, false),
        },
        _ => (false, false),
    };
    if let Some(s) = thread_stats(pid, tgid) {
        // SAFETY: per-CPU map value of this CPU.
        unsafe {
            (*s).migrations += 1;
            if cross_llc {
                (*s).migrations_cross_llc += 1;
            }
            if cross_numa {
                (*s).migrations_cross_numa += 1;
            }
        }
    }
    // SAFETY: helper with no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(w) = window(now) {
        // SAFETY: per-CPU map value of this CPU.
        unsafe { (*w).migrations += 1 };
    }
    if trace_events() {
        emit(Event {
            ts_ns: now,
            value_ns: u64::from(cross_llc) | (u64::from(cross_numa) << 1),
            kind: event::MIGRATION,
            tid: pid,
            tgid,
            // SAFETY: helper with no preconditions.
            cpu: unsafe { bpf_get_smp_processor_id() },
            aux: ((orig & 0xffff) << 16) | (dest & 0xffff),
            _pad: 0,
        });
    }
    0
}
