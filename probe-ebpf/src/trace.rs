//! The optional scheduler trace stream for `--perfetto`: switches and
//! wakeups of target threads, the switch-out of the task that ran in place
//! of one (so its time on the CPU is exact), and IRQ / softirq runs on
//! target threads, on a ring buffer of their own.
//!
//! Off unless the loader sets `SCHED_TRACE_ON`; then the only cost on the
//! hot path is one global read per switch.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_smp_processor_id},
    macros::map,
    maps::{PerCpuArray, RingBuf},
    programs::BtfTracePointContext,
};
use probe_common::{loss, trace::kind, TraceRec};

use crate::{maps::count_loss, task};

/// Non-zero: write the stream (set by the loader for `--perfetto`).
#[unsafe(no_mangle)]
static SCHED_TRACE_ON: u32 = 0;

/// The stream; the loader sizes it (a page when the stream is off).
#[map]
pub static SCHED_TRACE: RingBuf = RingBuf::with_byte_size(4096, 0);

/// Per CPU, 1 when the task now running was switched in by a recorded switch
/// but is not a target: its switch-out is recorded too.
#[map]
static FOLLOW_NEXT: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn on() -> bool {
    // SAFETY: volatile read of a loader-written global.
    unsafe { core::ptr::read_volatile(&SCHED_TRACE_ON) != 0 }
}

#[inline(always)]
fn write(rec: TraceRec) {
    match SCHED_TRACE.reserve::<TraceRec>(0) {
        Some(mut slot) => {
            slot.write(rec);
            slot.submit(0);
        }
        None => count_loss(loss::SCHED_TRACE_RESERVE),
    }
}

#[inline(always)]
fn cpu() -> u32 {
    // SAFETY: helper with no preconditions.
    unsafe { bpf_get_smp_processor_id() }
}

/// The two sides of a switch, as `sched_switch` read them.
pub struct Sides {
    pub prev_pid: u32,
    pub prev_tgid: u32,
    pub next: u64,
    pub next_pid: u32,
    pub next_tgid: u32,
}

/// A switch with no target thread on either side: recorded only when the
/// task switched out was switched in by a recorded switch.
#[inline(always)]
pub fn switch_other(ctx: &BtfTracePointContext, s: &Sides, now: u64) {
    let Some(f) = FOLLOW_NEXT.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU map value of this CPU.
    unsafe {
        if *f == 0 {
            return;
        }
        *f = 0;
    }
    record_switch(ctx, s, now);
}

/// A switch with a target thread on at least one side.
#[inline(always)]
pub fn switch_target(ctx: &BtfTracePointContext, s: &Sides, next_is_target: bool, now: u64) {
    if let Some(f) = FOLLOW_NEXT.get_ptr_mut(0) {
        // SAFETY: per-CPU map value of this CPU.
        unsafe { *f = u32::from(!next_is_target && s.next_pid != 0) };
    }
    record_switch(ctx, s, now);
}

#[inline(always)]
fn record_switch(ctx: &BtfTracePointContext, s: &Sides, now: u64) {
    let preempt: u64 = ctx.arg(0);
    let prev_state: u64 = ctx.arg(3);
    write(TraceRec {
        ts_ns: now,
        dur_ns: 0,
        kind: kind::SWITCH,
        cpu: cpu(),
        pid: s.next_pid,
        tgid: s.next_tgid,
        prev_pid: s.prev_pid,
        prev_tgid: s.prev_tgid,
        state: prev_state as u32,
        prio: task::prio(s.next).map_or(-1, |p| p as i32),
        aux: u32::from((preempt & 0xff) != 0),
        _pad: 0,
        comm: task::comm(s.next).unwrap_or([0; 16]),
        prev_comm: bpf_get_current_comm().unwrap_or([0; 16]),
    });
}

/// Target thread `p` woken.
#[inline(always)]
pub fn waking(p: u64, pid: u32, tgid: u32, now: u64) {
    write(TraceRec {
        ts_ns: now,
        dur_ns: 0,
        kind: kind::WAKING,
        cpu: cpu(),
        pid,
        tgid,
        prev_pid: 0,
        prev_tgid: 0,
        state: 0,
        prio: task::prio(p).map_or(-1, |v| v as i32),
        aux: task::cpu(p).unwrap_or(u32::MAX),
        _pad: 0,
        comm: task::comm(p).unwrap_or([0; 16]),
        prev_comm: [0; 16],
    });
}

/// An IRQ (`hard`) or softirq that ran `dur` ns from `start` on target
/// thread `tid`; `aux` = IRQ number or vector.
#[inline(always)]
pub fn irq(hard: bool, tid: u32, tgid: u32, start: u64, dur: u64, aux: u32) {
    write(TraceRec {
        ts_ns: start,
        dur_ns: dur,
        kind: if hard { kind::HARDIRQ } else { kind::SOFTIRQ },
        cpu: cpu(),
        pid: tid,
        tgid,
        prev_pid: 0,
        prev_tgid: 0,
        state: 0,
        prio: -1,
        aux,
        _pad: 0,
        comm: [0; 16],
        prev_comm: [0; 16],
    });
}
