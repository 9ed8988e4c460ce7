//! Records of the optional scheduler trace stream (`SCHED_TRACE` ring
//! buffer), written only when the loader turns `SCHED_TRACE_ON` on (for
//! `--perfetto`): switches and wakeups that involve a target thread, the
//! switch-out of whoever preempted one, and IRQ / softirq runs on target
//! threads.

/// Kinds of [`TraceRec`].
pub mod kind {
    /// `sched_switch` on `cpu`: `prev_*` switched out, `pid`/`tgid`/`comm`
    /// switched in; `aux` = 1 when `prev` was preempted; `state` = prev's
    /// raw scheduler state word.
    pub const SWITCH: u32 = 1;
    /// `sched_wakeup(_new)` of target thread `pid` on `cpu` (the waker's
    /// CPU); `aux` = the CPU it was queued on.
    pub const WAKING: u32 = 2;
    /// A hard IRQ that ran on `cpu` while target thread `pid` was current:
    /// `ts_ns` = entry, `dur_ns` = its length, `aux` = IRQ number.
    pub const HARDIRQ: u32 = 3;
    /// A softirq, as [`HARDIRQ`]; `aux` = vector.
    pub const SOFTIRQ: u32 = 4;
}

/// One record of the scheduler trace stream (CLOCK_MONOTONIC ns).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceRec {
    pub ts_ns: u64,
    pub dur_ns: u64,
    pub kind: u32,
    pub cpu: u32,
    /// Next task (switch), woken task (waking), interrupted task (IRQs).
    pub pid: u32,
    pub tgid: u32,
    /// Previous task (switch only).
    pub prev_pid: u32,
    pub prev_tgid: u32,
    /// Previous task's state word (switch only, see `kind::SWITCH`).
    pub state: u32,
    /// Kernel priority of `pid` (`task_struct.prio`), -1 when unread.
    pub prio: i32,
    pub aux: u32,
    pub _pad: u32,
    /// Command name of `pid`.
    pub comm: [u8; 16],
    /// Command name of `prev_pid` (switch only).
    pub prev_comm: [u8; 16],
}
