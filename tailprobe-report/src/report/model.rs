//! What `tailprobe record` reports. Every field is documented in
//! `docs/record-json.md`; times are nanoseconds unless the name says otherwise.

use std::collections::BTreeMap;

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
    /// The command tailprobe launched (`-- CMD`) finished.
    CommandExited,
    /// The program that ran the recording (e.g. an experiment) stopped it.
    Stopped,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// How the target was named: pid, tid, comm, cgroup, command, builtin.
    pub kind: &'static str,
    /// The value given (pid, name, path or command line).
    pub spec: String,
    /// Main process (the first one followed).
    pub pid: u32,
    pub comm: String,
    pub cmdline: String,
    /// Only this thread was followed (`--tid`).
    pub tid: Option<u32>,
    /// Every process followed during the run.
    pub processes: Vec<u32>,
    /// True when tailprobe started the target itself.
    pub builtin: bool,
    /// Exit status of a launched command, when it finished.
    pub command_exit_code: Option<i32>,
    /// The cgroup directory followed (cgroup, unit, container, pod targets).
    pub cgroup: Option<String>,
    /// The container runtime whose cgroup layout matched (container targets).
    pub runtime: Option<&'static str>,
    /// The main process's pid inside its PID namespace (the last `NSpid`
    /// field of /proc/<pid>/status), when it runs in a namespace below
    /// tailprobe's, e.g. in a container; `pid` is the host's.
    pub ns_pid: Option<u32>,
    /// Host pid -> pid inside its namespace, for every followed process
    /// that runs in a namespace below tailprobe's.
    pub ns_pids: std::collections::BTreeMap<u32, u32>,
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

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Migrations {
    pub total: u64,
    pub cross_llc: u64,
    pub cross_numa: u64,
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct IrqTime {
    pub count: u64,
    pub total_ns: u64,
}

/// NUMA balancing events involving the target's threads.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct NumaTaskEvents {
    /// `sched_move_numa`: a thread moved to its preferred node.
    pub moves: u64,
    /// `sched_swap_numa`: swapped with a task on the other node.
    pub swaps: u64,
    /// `sched_stick_numa`: a move that failed (the task stayed).
    pub sticks: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ThreadReport {
    pub tid: u32,
    pub tgid: u32,
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
    pub hardirq: IrqTime,
    pub softirq: IrqTime,
    pub page_faults: u64,
    pub numa_balancing: NumaTaskEvents,
    /// Present when the thread was alive at both ends of the window.
    pub kernel: Option<KernelAccounting>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessReport {
    pub threads_seen: usize,
    pub runq_wait: WaitSummary,
    /// The merged histogram: (lower bound ns, upper bound ns, count) of the
    /// non-empty buckets.
    pub runq_histogram: Vec<(u64, u64, u64)>,
    pub oncpu_ns: u64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    pub wakeups: u64,
    pub migrations: Migrations,
    pub hardirq: IrqTime,
    pub softirq: IrqTime,
    pub page_faults: u64,
    pub numa_balancing: NumaTaskEvents,
    /// Sum over the threads that have `kernel` accounting.
    pub kernel: Option<KernelAccounting>,
    /// Our run-queue total over the kernel's, for the same threads, in %.
    pub runq_agreement_pct: Option<f64>,
    /// When that is off by more than a point: the gap, per switch, and
    /// whether the kernel's known clock effects cover it (`agreement`).
    pub runq_agreement_note: Option<String>,
}

/// Hard IRQ time stolen from target threads, per IRQ.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IrqReport {
    pub irq: u32,
    /// From /proc/interrupts (device / handler names), empty when unknown.
    pub name: String,
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
}

/// Softirq time stolen from target threads, per vector.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SoftirqReport {
    pub vector: u32,
    pub name: &'static str,
    pub count: u64,
    pub total_ns: u64,
    pub max_ns: u64,
}

/// Softirq raise -> entry delay on the CPUs the target ran on.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SoftirqDelay {
    pub vector: u32,
    pub name: &'static str,
    pub count: u64,
    pub mean_ns: u64,
    pub max_ns: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CpuReport {
    pub cpu: u32,
    pub target_oncpu_ns: u64,
    pub target_runq_ns: u64,
    pub target_hardirq_ns: u64,
    pub target_softirq_ns: u64,
}

/// A task that preempted target threads, and the wait that followed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PreemptorReport {
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    /// Times it preempted a target thread.
    pub count: u64,
    /// Run-queue wait of the preempted target threads until they ran again.
    pub target_wait_ns: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MigrateReason {
    pub reason: u32,
    pub name: String,
    pub events: u64,
    pub pages_succeeded: u64,
    pub pages_failed: u64,
    /// Events in a target thread's context (e.g. its NUMA hinting faults).
    pub target_events: u64,
    pub target_pages_succeeded: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct NumaReport {
    pub nodes: usize,
    /// `kernel.numa_balancing` at the start; None when absent.
    pub balancing: Option<u64>,
    pub task_events: NumaTaskEvents,
    /// `migrate:mm_migrate_pages` per reason (system-wide and target).
    pub migrate_pages: Vec<MigrateReason>,
    /// `/proc/vmstat` NUMA counter deltas over the run (system-wide).
    pub vmstat_delta: BTreeMap<String, u64>,
    /// `numa_hint_faults - numa_hint_faults_local` over the run: the
    /// kernel's sampled remote-access signal (needs NUMA balancing on).
    pub remote_hint_faults: Option<u64>,
    /// Its share of all hint faults.
    pub remote_hint_fault_share: Option<f64>,
    /// The target's resident memory per node (KiB) from numa_maps, at the
    /// start and at the end.
    pub kib_per_node_start: BTreeMap<u32, u64>,
    pub kib_per_node_end: BTreeMap<u32, u64>,
    /// Samples taken during the run (every 5 s).
    pub kib_per_node_samples: Vec<NumaSample>,
    /// Plain statements of what this machine cannot show.
    pub notes: Vec<String>,
}

/// The target's memory per node at one moment.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NumaSample {
    pub ts_ns: u64,
    pub kib_per_node: BTreeMap<u32, u64>,
}

/// Counters of one fixed window (CLOCK_MONOTONIC `[start, start + window)`).
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct WindowReport {
    pub start_ns: u64,
    pub runq_count: u64,
    pub runq_total_ns: u64,
    pub runq_max_ns: u64,
    pub oncpu_ns: u64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    pub migrations: u64,
    pub hardirq_ns: u64,
    pub softirq_ns: u64,
    pub page_faults: u64,
    pub numa_events: u64,
}

/// One event above its threshold (or, with event tracing, every page
/// fault and migration: kinds `page_fault`, `migration`; for `migration`,
/// `value_ns` is 1 cross-LLC | 2 cross-NUMA).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Outlier {
    pub ts_ns: u64,
    /// runq_wait, hardirq or softirq.
    pub kind: &'static str,
    pub tid: u32,
    pub tgid: u32,
    pub cpu: u32,
    pub value_ns: u64,
    /// runq_wait: the task that preempted the thread (None: it was woken).
    pub preempted_by: Option<u32>,
    /// hardirq: IRQ number; softirq: vector.
    pub irq: Option<u32>,
    /// migration: the CPU it left (`cpu` is where the event was seen).
    pub from_cpu: Option<u32>,
}

/// What the probes cost, from BPF run-time statistics.
#[derive(Debug, Clone, Serialize)]
pub struct ProgramCost {
    pub name: &'static str,
    pub events: u64,
    pub run_time_ns: u64,
    pub ns_per_event: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Overhead {
    /// False with --no-self-stats: the kernel did not time the programs.
    pub measured: bool,
    pub programs: Vec<ProgramCost>,
    pub total_events: u64,
    pub total_run_time_ns: u64,
    /// Probe run time as a share of one CPU over the window, in %.
    pub cpu_share_pct: Option<f64>,
    pub events_per_second: Option<f64>,
}

/// Per-thread slots: the tid-indexed array (`capacity` slots) or the hash
/// fallback (a hash lookup per event for those threads; not a loss).
#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq, Eq)]
pub struct ThreadSlotUse {
    pub capacity: u32,
    /// Array slots handed out for the first time.
    pub fresh: u64,
    /// Array slots handed out again after an exited thread's was freed.
    pub reused: u64,
    /// Threads that got a slot in the hash fallback instead.
    pub hash_fallback: u64,
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
    pub preemptors: Vec<PreemptorReport>,
    pub irqs: Vec<IrqReport>,
    pub softirqs: Vec<SoftirqReport>,
    pub softirq_delay: Vec<SoftirqDelay>,
    /// CPUs the target ran on or was charged on.
    pub cpus: Vec<CpuReport>,
    pub numa: NumaReport,
    pub window_ns: u64,
    pub windows: Vec<WindowReport>,
    pub outlier_thresholds_ns: OutlierThresholds,
    pub outliers: Vec<Outlier>,
    /// Outliers received beyond the cap kept in the report.
    pub outliers_not_kept: u64,
    pub overhead: Overhead,
    /// Where target threads got their kernel-side slots.
    pub thread_slots: ThreadSlotUse,
    pub losses: Vec<Loss>,
    /// True when any loss counter is non-zero: numbers may be incomplete.
    pub lossy: bool,
    pub task_offsets: TaskOffsets,
    /// Whether migrations could be classified by LLC and NUMA node.
    pub topology_known: bool,
    /// Hooks this kernel lacks, and what is therefore not measured.
    pub unavailable: Vec<String>,
    /// Optional programs this run did not load, and why.
    pub left_out: Vec<crate::kernel::plan::LeftOut>,
    /// How long tailprobe took to attach (docs/record-json.md).
    pub attach_ms: AttachTime,
    pub notes: Vec<String>,
    /// Wakeups between the target's threads (only when the waker program
    /// was attached, as `tailprobe diagnose` does; absent otherwise).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub wake_edges: Vec<WakeEdge>,
    /// Idle periods of the CPUs the target ran on (only when the `cpu_idle`
    /// program was attached, as `tailprobe diagnose` does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_idle: Option<CpuIdleReport>,
}

/// What the `cpu_idle` program saw: idle periods per state on the CPUs the
/// target ran on (from the first time it ran on each), and what it cost.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct CpuIdleReport {
    pub states: Vec<IdleStateUse>,
    /// The program's runs and run time (BPF run-time statistics).
    pub program_runs: u64,
    pub program_run_time_ns: u64,
}

/// One idle state's use: periods ended and time in them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IdleStateUse {
    /// cpuidle state number (`/sys/devices/system/cpu/cpuN/cpuidle/stateS`).
    pub state: u32,
    pub exits: u64,
    pub residency_ns: u64,
}

/// One thread of the target waking another, and how often.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct WakeEdge {
    pub waker_tid: u32,
    pub wakee_tid: u32,
    pub count: u64,
}

/// Time to attach, from tailprobe's process start (the start of `main`,
/// about a millisecond after exec) to the first program attached and to
/// all of them, with the CLOCK_MONOTONIC stamps for outside comparison.
#[derive(Debug, Clone, Serialize)]
pub struct AttachTime {
    pub first: f64,
    pub all: f64,
    pub process_start_monotonic_ns: u64,
    pub first_attached_monotonic_ns: u64,
    pub all_attached_monotonic_ns: u64,
    /// `--priority` the loader and reader ran at ("default" when not raised).
    pub priority: String,
    /// The priority from the first line of `main` until every program was
    /// attached, e.g. "fifo:1 until attached" (kernel/startup.rs).
    pub startup_priority: String,
    /// Where the time went, in ms, phase by phase.
    pub phases: crate::kernel::startup::Phases,
    /// Whether aya's loader parsed the kernel's BTF a second time (false:
    /// parsed once, by us, and shared).
    pub loader_parsed_btf: bool,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct OutlierThresholds {
    pub runq_wait_ns: u64,
    pub irq_ns: u64,
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
