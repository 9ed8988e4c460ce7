//! Reading `task_struct` fields at offsets resolved from the running kernel's
//! BTF by the loader (no struct layout compiled in).

use aya_ebpf::helpers::bpf_probe_read_kernel_buf;

/// Offset of `task_struct.pid` (`tgid` is read at its own offset).
#[unsafe(no_mangle)]
static TASK_PID_OFF: u32 = 0;
#[unsafe(no_mangle)]
static TASK_TGID_OFF: u32 = 0;
/// Offset of the CPU a task is queued on (`task_struct.cpu` or
/// `task_struct.thread_info.cpu`).
#[unsafe(no_mangle)]
static TASK_CPU_OFF: u32 = 0;
/// Offset of `task_struct.__state` (or `state` on older kernels).
#[unsafe(no_mangle)]
static TASK_STATE_OFF: u32 = 0;

/// Offsets of `task_struct.se.sum_exec_runtime` and
/// `se.prev_sum_exec_runtime` (0: not resolved; see `btf::slice_ns`).
#[unsafe(no_mangle)]
static TASK_SUM_EXEC_OFF: u32 = 0;
#[unsafe(no_mangle)]
static TASK_PREV_SUM_EXEC_OFF: u32 = 0;

/// task_struct is about 10 KiB; masking keeps offsets visibly bounded.
const OFF_MASK: u64 = 0x7fff;

#[inline(always)]
fn global(v: &'static u32) -> u64 {
    // SAFETY: volatile read of a loader-written global.
    (unsafe { core::ptr::read_volatile(v) } as u64) & OFF_MASK
}

/// Reads into a zeroed buffer, never into uninitialised stack: when the read
/// fails, LLVM may still load the destination slot (speculating the success
/// path), and verifiers before Linux 6.3 reject any read of uninitialised
/// stack ("invalid read from stack"; seen on Debian's 6.1 in
/// sched_migrate_task with --trace-events).
#[inline(always)]
fn read_u32(task: u64, off: u64) -> Option<u32> {
    let mut b = [0u8; 4];
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one gives Err.
    unsafe { bpf_probe_read_kernel_buf((task + off) as *const u8, &mut b).ok()? };
    Some(u32::from_ne_bytes(b))
}

/// A pid or tgid that could not be read (no real task has it).
pub const UNREADABLE: u32 = u32::MAX;

/// (pid, tgid) of a task, `UNREADABLE` for both when it cannot be read. `tgid` follows `pid` in
/// every kernel's task_struct: one 8-byte read then, two reads otherwise.
/// A plain pair, not an Option, so no half-initialised stack slot reaches
/// the older verifiers (see `read_u32`).
#[inline(always)]
pub fn pid_tgid(task: u64) -> (u32, u32) {
    let (pid_off, tgid_off) = (global(&TASK_PID_OFF), global(&TASK_TGID_OFF));
    if tgid_off == pid_off + 4 {
        let mut b = [0u8; 8];
        // SAFETY: bpf_probe_read_kernel checks the address; a bad one gives Err.
        if unsafe { bpf_probe_read_kernel_buf((task + pid_off) as *const u8, &mut b) }.is_err() {
            return (UNREADABLE, UNREADABLE);
        }
        let v = u64::from_ne_bytes(b);
        return (v as u32, (v >> 32) as u32);
    }
    (
        read_u32(task, pid_off).unwrap_or(UNREADABLE),
        read_u32(task, tgid_off).unwrap_or(UNREADABLE),
    )
}

/// Direct loads from a `task_struct` pointer that the verifier knows as one
/// (a `tp_btf` argument, not a value read from memory): the offsets are
/// read-only globals, so the verifier sees them as constants and checks each
/// load against the kernel's BTF (a field of the right size at that offset).
/// No helper call, unlike `bpf_probe_read_kernel`; a fault reads 0 (the
/// kernel's exception table for BTF pointer loads, Linux 5.5+).
pub mod btf {
    use super::{
        global, TASK_COMM_OFF, TASK_PID_OFF, TASK_PREV_SUM_EXEC_OFF, TASK_STATE_OFF,
        TASK_SUM_EXEC_OFF, TASK_TGID_OFF,
    };

    #[inline(always)]
    fn load_u32(task: u64, off: u64) -> u32 {
        // SAFETY: `task` is a BTF pointer to a task_struct and `off` a field
        // of it (see the module comment): the kernel checks and guards the
        // load.
        unsafe { core::ptr::read_volatile((task + off) as *const u32) }
    }

    /// (pid, tgid): two 4-byte loads (the verifier allows no load wider
    /// than the field).
    #[inline(always)]
    pub fn pid_tgid(task: u64) -> (u32, u32) {
        (
            load_u32(task, global(&TASK_PID_OFF)),
            load_u32(task, global(&TASK_TGID_OFF)),
        )
    }

    /// Length of the slice now ending, by the kernel's own accounting:
    /// `se.sum_exec_runtime - se.prev_sum_exec_runtime` (the scheduler sets
    /// the latter when it picks the task). Read at a switch-out, after the
    /// scheduler's last update of the former. None when the loader did not
    /// resolve the fields.
    #[inline(always)]
    pub fn slice_ns(task: u64) -> Option<u64> {
        let (sum, prev) = (global(&TASK_SUM_EXEC_OFF), global(&TASK_PREV_SUM_EXEC_OFF));
        if sum == 0 || prev == 0 {
            return None;
        }
        // SAFETY: as `load_u32`, for two u64 members of task_struct.se.
        let (s, p) = unsafe {
            (
                core::ptr::read_volatile((task + sum) as *const u64),
                core::ptr::read_volatile((task + prev) as *const u64),
            )
        };
        s.checked_sub(p)
    }

    /// Scheduler state word (0 = TASK_RUNNING).
    #[inline(always)]
    pub fn state(task: u64) -> u32 {
        load_u32(task, global(&TASK_STATE_OFF))
    }

    /// The command name, as four 4-byte loads inside the char array.
    #[inline(always)]
    pub fn comm(task: u64) -> [u8; 16] {
        let off = global(&TASK_COMM_OFF);
        let w = [
            load_u32(task, off),
            load_u32(task, off + 4),
            load_u32(task, off + 8),
            load_u32(task, off + 12),
        ];
        // SAFETY: [u32; 4] and [u8; 16] have the same size and every bit
        // pattern is valid for both.
        unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(w) }
    }
}

/// tgid of a task only (the cheap filter).
#[inline(always)]
pub fn tgid(task: u64) -> Option<u32> {
    read_u32(task, global(&TASK_TGID_OFF))
}

#[inline(always)]
pub fn pid(task: u64) -> Option<u32> {
    read_u32(task, global(&TASK_PID_OFF))
}

/// CPU the task is on (before a migration completes: its origin CPU).
#[inline(always)]
pub fn cpu(task: u64) -> Option<u32> {
    read_u32(task, global(&TASK_CPU_OFF))
}

/// Current scheduler state word (0 = TASK_RUNNING).
#[inline(always)]
pub fn state(task: u64) -> Option<u32> {
    read_u32(task, global(&TASK_STATE_OFF))
}

/// Offset of `task_struct.comm` (16 bytes).
#[unsafe(no_mangle)]
static TASK_COMM_OFF: u32 = 0;

/// The command name of a task.
#[inline(always)]
pub fn comm(task: u64) -> Option<[u8; 16]> {
    let mut b = [0u8; 16];
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one gives Err.
    unsafe {
        bpf_probe_read_kernel_buf((task + global(&TASK_COMM_OFF)) as *const u8, &mut b).ok()?
    };
    Some(b)
}

/// Offset of `task_struct.prio` (0: not resolved, the read is skipped).
#[unsafe(no_mangle)]
static TASK_PRIO_OFF: u32 = 0;

/// Kernel priority of a task (`task_struct.prio`: 0-99 RT, 100-139 normal).
#[inline(always)]
pub fn prio(task: u64) -> Option<u32> {
    let off = global(&TASK_PRIO_OFF);
    if off == 0 {
        return None;
    }
    read_u32(task, off)
}
