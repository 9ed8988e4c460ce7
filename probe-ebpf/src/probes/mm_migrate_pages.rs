//! `migrate:mm_migrate_pages`: pages migrated (NUMA balancing, compaction,
//! memory hotplug, ...) with the reason. Its argument list changed across
//! kernels, so this is a classic tracepoint: the loader reads the field
//! offsets from the tracepoint's format file.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use probe_common::MIGRATE_REASONS;

use crate::maps::{is_target, MIGRATE_PAGES};

#[unsafe(no_mangle)]
static MIGRATE_OFF_SUCCEEDED: u32 = 0;
#[unsafe(no_mangle)]
static MIGRATE_OFF_FAILED: u32 = 0;
#[unsafe(no_mangle)]
static MIGRATE_OFF_REASON: u32 = 0;

#[inline(always)]
fn off(v: &'static u32) -> usize {
    // SAFETY: volatile read of a loader-written global.
    (unsafe { core::ptr::read_volatile(v) } & 0xfff) as usize
}

#[tracepoint(category = "migrate", name = "mm_migrate_pages")]
pub fn mm_migrate_pages(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets come from this kernel's format file; reads are checked.
    let (ok, failed, reason) = unsafe {
        (
            ctx.read_at::<u64>(off(&MIGRATE_OFF_SUCCEEDED)).unwrap_or(0),
            ctx.read_at::<u64>(off(&MIGRATE_OFF_FAILED)).unwrap_or(0),
            ctx.read_at::<i32>(off(&MIGRATE_OFF_REASON)).unwrap_or(0),
        )
    };
    let idx = (reason as u32).min(MIGRATE_REASONS - 1);
    let pid_tgid = bpf_get_current_pid_tgid();
    let ours = is_target(pid_tgid as u32, (pid_tgid >> 32) as u32);
    if let Some(m) = MIGRATE_PAGES.get_ptr_mut(idx) {
        // SAFETY: per-CPU map value of this CPU.
        unsafe {
            (*m).events += 1;
            (*m).succeeded += ok;
            (*m).failed += failed;
            if ours {
                (*m).target_events += 1;
                (*m).target_succeeded += ok;
            }
        }
    }
    0
}
