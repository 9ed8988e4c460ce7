//! Hard IRQs (`irq_handler_entry/exit(int irq, ...)`) and softirqs
//! (`softirq_entry/exit/raise(unsigned int vec)`). An IRQ that runs while a
//! target thread is `current` steals that thread's time: charge it to the
//! thread, per IRQ number and per softirq vector. Separately, the delay from
//! raising a softirq to running it, per CPU and vector.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use probe_common::{event, loss, DurStat, Event, IrqSlot, NR_SOFTIRQS};

use crate::maps::{
    count_loss, cpu_stats, emit, is_target, outlier_irq_ns, thread_stats, window, HARDIRQ_SLOT,
    IRQS, SOFTIRQS, SOFTIRQ_DELAY, SOFTIRQ_RAISED, SOFTIRQ_SLOT,
};

#[inline(always)]
fn now() -> u64 {
    // SAFETY: helper with no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// Remember the start if a target thread is the one interrupted.
#[inline(always)]
fn enter(slot: &aya_ebpf::maps::PerCpuArray<IrqSlot>) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (pid, tgid) = (pid_tgid as u32, (pid_tgid >> 32) as u32);
    if !is_target(pid, tgid) {
        return;
    }
    if let Some(s) = slot.get_ptr_mut(0) {
        // SAFETY: per-CPU map value of this CPU.
        unsafe {
            *s = IrqSlot {
                start_ns: now(),
                tid: pid,
                tgid,
            }
        };
    }
}

/// End of the IRQ: (tid, tgid, duration) when a target thread was charged.
#[inline(always)]
fn leave(slot: &aya_ebpf::maps::PerCpuArray<IrqSlot>) -> Option<(u32, u32, u64, u64)> {
    let s = slot.get_ptr_mut(0)?;
    // SAFETY: per-CPU map value of this CPU.
    unsafe {
        if (*s).tid == 0 {
            return None;
        }
        let t = now();
        let start = (*s).start_ns;
        let (tid, tgid) = ((*s).tid, (*s).tgid);
        (*s).tid = 0;
        if t < start {
            return None;
        }
        Some((tid, tgid, t - start, t))
    }
}

#[inline(always)]
fn add(d: *mut DurStat, ns: u64) {
    // SAFETY: per-CPU map value of this CPU.
    unsafe {
        (*d).count += 1;
        (*d).total_ns += ns;
        if ns > (*d).max_ns {
            (*d).max_ns = ns;
        }
    }
}

/// Charge `ns` of hard (`hard`) or soft IRQ time to a target thread: its
/// statistics, the time window, the CPU, and the outlier stream.
#[inline(always)]
fn charge(hard: bool, tid: u32, tgid: u32, ns: u64, t: u64, aux: u32) {
    if let Some(s) = thread_stats(tid, tgid) {
        // SAFETY: per-CPU map value of this CPU.
        unsafe {
            if hard {
                (*s).hardirq_count += 1;
                (*s).hardirq_ns += ns;
            } else {
                (*s).softirq_count += 1;
                (*s).softirq_ns += ns;
            }
        }
    }
    if let Some(w) = window(t) {
        // SAFETY: per-CPU map value of this CPU.
        unsafe {
            if hard {
                (*w).hardirq_ns += ns;
            } else {
                (*w).softirq_ns += ns;
            }
        }
    }
    if let Some(c) = cpu_stats() {
        // SAFETY: per-CPU map value of this CPU.
        unsafe {
            if hard {
                (*c).target_hardirq_ns += ns;
            } else {
                (*c).target_softirq_ns += ns;
            }
        }
    }
    if crate::trace::on() {
        crate::trace::irq(hard, tid, tgid, t.saturating_sub(ns), ns, aux);
    }
    let kind = if hard {
        event::HARDIRQ_OUTLIER
    } else {
        event::SOFTIRQ_OUTLIER
    };
    outlier(kind, tid, tgid, ns, t, aux);
}

#[inline(always)]
fn outlier(kind: u32, tid: u32, tgid: u32, ns: u64, t: u64, aux: u32) {
    let threshold = outlier_irq_ns();
    if threshold != 0 && ns >= threshold {
        emit(Event {
            ts_ns: t,
            value_ns: ns,
            kind,
            tid,
            tgid,
            // SAFETY: helper with no preconditions.
            cpu: unsafe { bpf_get_smp_processor_id() },
            aux,
            _pad: 0,
        });
    }
}

#[btf_tracepoint(function = "irq_handler_entry")]
pub fn irq_handler_entry(_ctx: BtfTracePointContext) -> i32 {
    enter(&HARDIRQ_SLOT);
    0
}

#[btf_tracepoint(function = "irq_handler_exit")]
pub fn irq_handler_exit(ctx: BtfTracePointContext) -> i32 {
    let Some((tid, tgid, ns, t)) = leave(&HARDIRQ_SLOT) else {
        return 0;
    };
    let irq: u64 = ctx.arg(0);
    let irq = irq as u32;
    let d = match IRQS.get_ptr_mut(irq) {
        Some(d) => Some(d),
        None => {
            let _ = IRQS.insert(irq, DurStat::default(), BPF_NOEXIST as u64);
            let d = IRQS.get_ptr_mut(irq);
            if d.is_none() {
                count_loss(loss::IRQ_INSERT);
            }
            d
        }
    };
    if let Some(d) = d {
        add(d, ns);
    }
    charge(true, tid, tgid, ns, t, irq);
    0
}

#[btf_tracepoint(function = "softirq_raise")]
pub fn softirq_raise(ctx: BtfTracePointContext) -> i32 {
    let vec: u64 = ctx.arg(0);
    if let Some(r) = SOFTIRQ_RAISED.get_ptr_mut(vec as u32) {
        // SAFETY: per-CPU map value of this CPU.
        unsafe {
            if *r == 0 {
                *r = now();
            }
        }
    }
    0
}

#[btf_tracepoint(function = "softirq_entry")]
pub fn softirq_entry(ctx: BtfTracePointContext) -> i32 {
    let vec: u64 = ctx.arg(0);
    let vec = vec as u32;
    if vec < NR_SOFTIRQS {
        if let Some(r) = SOFTIRQ_RAISED.get_ptr_mut(vec) {
            // SAFETY: per-CPU map value of this CPU.
            unsafe {
                let raised = *r;
                *r = 0;
                let t = now();
                if raised != 0 && t >= raised {
                    if let Some(d) = SOFTIRQ_DELAY.get_ptr_mut(vec) {
                        add(d, t - raised);
                    }
                }
            }
        }
    }
    enter(&SOFTIRQ_SLOT);
    0
}

#[btf_tracepoint(function = "softirq_exit")]
pub fn softirq_exit(ctx: BtfTracePointContext) -> i32 {
    let Some((tid, tgid, ns, t)) = leave(&SOFTIRQ_SLOT) else {
        return 0;
    };
    let vec: u64 = ctx.arg(0);
    let vec = vec as u32;
    if let Some(d) = SOFTIRQS.get_ptr_mut(vec) {
        add(d, ns);
    }
    charge(false, tid, tgid, ns, t, vec);
    0
}
