//! `power:cpu_idle(state, cpu_id)` (BTF tracepoint `cpu_idle`), a program
//! attached only on request (`tailprobe diagnose`), so `tailprobe record`'s
//! cost is unchanged. It fires on the CPU itself when it enters an idle
//! state (`state` = the cpuidle state number) and when it leaves it (`state`
//! = `PWR_EVENT_EXIT`). On CPUs the target has run on (its on-CPU time
//! there, `CPU_STATS`, is not zero) the entry is kept per CPU and the exit
//! adds one idle period and its length to that state's slot of `CPU_IDLE`:
//! aggregated in the kernel, nothing streamed. Elsewhere it costs the
//! per-CPU lookups and one compare.

use aya_ebpf::{helpers::bpf_ktime_get_ns, macros::btf_tracepoint, programs::BtfTracePointContext};
use probe_common::CPU_IDLE_STATES;

use crate::maps::{cpu_stats, CPU_IDLE, CPU_IDLE_OPEN};

/// `state` of the exit event (include/trace/events/power.h).
const PWR_EVENT_EXIT: u32 = u32::MAX;

#[btf_tracepoint(function = "cpu_idle")]
pub fn cpu_idle(ctx: BtfTracePointContext) -> i32 {
    let state: u32 = ctx.arg(0);
    let Some(open) = CPU_IDLE_OPEN.get_ptr_mut(0) else {
        return 0;
    };
    if state != PWR_EVENT_EXIT {
        let oncpu_here = match cpu_stats() {
            // SAFETY: per-CPU map value of this CPU; a read of one u64.
            Some(c) => unsafe { (*c).target_oncpu_ns },
            None => 0,
        };
        let ran_here = oncpu_here != 0;
        let now = if ran_here {
            // SAFETY: helper with no preconditions.
            unsafe { bpf_ktime_get_ns() }
        } else {
            0
        };
        let slot = if ran_here { u64::from(state) + 1 } else { 0 };
        // SAFETY: per-CPU map value of this CPU: only this CPU writes it,
        // and it runs one cpu_idle event at a time.
        unsafe { *open = [slot, now] };
        return 0;
    }
    // SAFETY: as above.
    let [slot, since] = unsafe { *open };
    if slot == 0 {
        return 0;
    }
    // SAFETY: as above.
    unsafe { *open = [0, 0] };
    let idx = ((slot - 1) as u32).min(CPU_IDLE_STATES - 1);
    // SAFETY: helper with no preconditions.
    let ns = unsafe { bpf_ktime_get_ns() }.saturating_sub(since);
    if let Some(v) = CPU_IDLE.get_ptr_mut(idx) {
        // SAFETY: per-CPU map value of this CPU, written only here, by this
        // CPU, one event at a time.
        unsafe {
            (*v)[0] += 1;
            (*v)[1] += ns;
        }
    }
    0
}
