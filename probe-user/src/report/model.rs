//! What `tailprobe record` reports. Every field is documented in
//! `docs/record-json.md`; times are nanoseconds unless the name says otherwise.

use serde::Serialize;

use crate::{kernel::btf_offsets::TaskOffsets, procfs::parse::SchedStat, stats::WaitSummary};

/// Why the recording ended.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The requested duration elapsed.
    Duration,
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// The target process exited during the run.
    TargetExited,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub pid: u32,
    pub comm: String,
    pub cmdline: String,
    /// True when tailprobe started the target itself (built-in workload).
    pub builtin: bool,
}

/// The kernel's own accounting over the same window, for comparison.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KernelAccounting {
    /// Run-queue wait from `/proc/<pid>/task/<tid>/schedstat` (2nd field), delta.
    pub runq_wait_ns: u64,
    /// On-CPU time from schedstat (1st field), delta.
    pub oncpu_ns: u64,
    /// `voluntary_ctxt_switches` delta from `/proc/<pid>/task/<tid>/status`.
    pub voluntary_switches: u64,
    /// `nonvoluntary_ctxt_switches` delta.
    pub involuntary_switches: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ThreadReport {
    pub tid: u32,
    pub comm: String,
    /// The thread still existed when the recording stopped.
    pub alive_at_end: bool,
    /// The thread was created after the probes were attached.
    pub created_during_run: bool,
    pub runq_wait: WaitSummary,
    pub oncpu_ns: u64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    pub wakeups: u64,
    pub migrations: Migrations,
    /// Present when the thread was alive at both ends of the window.
    pub kernel: Option<KernelAccounting>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Migrations {
    pub total: u64,
    pub cross_llc: u64,
    pub cross_numa: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessReport {
    pub threads_seen: usize,
    pub runq_wait: WaitSummary,
    pub oncpu_ns: u64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    pub wakeups: u64,
    pub migrations: Migrations,
    /// Sum over the threads that have `kernel` accounting.
    pub kernel: Option<KernelAccounting>,
    /// Our run-queue total over the kernel's, for the same threads, in %.
    pub runq_agreement_pct: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Loss {
    pub name: &'static str,
    pub total: u64,
    pub per_cpu: Vec<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecordReport {
    pub tool: &'static str,
    pub version: &'static str,
    pub kernel_release: String,
    pub target: Target,
    /// CLOCK_MONOTONIC at attach and at stop (same clock as bpf_ktime_get_ns).
    pub start_monotonic_ns: u64,
    pub end_monotonic_ns: u64,
    pub duration_ns: u64,
    pub end_reason: EndReason,
    pub process: ProcessReport,
    /// Threads sorted by run-queue wait, longest first.
    pub threads: Vec<ThreadReport>,
    pub losses: Vec<Loss>,
    /// True when any loss counter is non-zero: numbers may be incomplete.
    pub lossy: bool,
    pub task_offsets: TaskOffsets,
    /// Whether migrations could be classified by LLC and NUMA node.
    pub topology_known: bool,
    pub notes: Vec<String>,
}

/// Kernel accounting delta between two snapshots of one thread.
pub fn kernel_delta(
    before: (SchedStat, u64, u64),
    after: (SchedStat, u64, u64),
) -> KernelAccounting {
    KernelAccounting {
        runq_wait_ns: after.0.wait_ns.saturating_sub(before.0.wait_ns),
        oncpu_ns: after.0.run_ns.saturating_sub(before.0.run_ns),
        voluntary_switches: after.1.saturating_sub(before.1),
        involuntary_switches: after.2.saturating_sub(before.2),
    }
}
