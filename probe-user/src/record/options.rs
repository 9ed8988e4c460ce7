//! What a recording is asked to do: [`RecordOptions`] and its defaults.

use std::{
    sync::{atomic::AtomicBool, Arc},
    time::Duration,
};

use super::{priority, target::TargetSpec};

/// What to record and how.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    pub target: TargetSpec,
    /// The target is tailprobe's own built-in workload.
    pub builtin: bool,
    /// Follow child processes of the target(s).
    pub follow_children: bool,
    /// None: until a launched command exits (10 s for other targets).
    pub duration: Option<Duration>,
    /// Width of the time-series windows (0: none).
    pub window: Duration,
    /// Stream run-queue waits at or above this (0: none).
    pub outlier_runq: Duration,
    /// Stream IRQ/softirq runs on target threads at or above this (0: none).
    pub outlier_irq: Duration,
    /// Outliers kept in the report (more are counted).
    pub max_outliers: usize,
    /// Time the probes with BPF run-time statistics.
    pub self_stats: bool,
    /// Override of the per-thread map size.
    pub max_threads: Option<u32>,
    /// How often to check the target and drain the kernel's stream.
    pub poll: Duration,
    /// Progress on stderr (only when it is a terminal).
    pub progress: bool,
    /// Called once the probes are attached (tests and scripts sync on it).
    pub on_attached: Option<Callback>,
    /// Set by the caller to end the recording (EndReason::Stopped).
    pub stop: Option<Arc<AtomicBool>>,
    /// Stream every page fault and migration of the target as events, for
    /// exact per-request attribution (use with thresholds of 1 ns to stream
    /// every run-queue wait and IRQ too).
    pub trace_events: bool,
    /// Send a launched command's stdout to /dev/null.
    pub quiet_command: bool,
    /// Charge hard IRQ and softirq time (false: those programs are not loaded).
    pub irq: bool,
    /// Raise the recording thread's priority after the target is started.
    pub priority: Option<priority::Priority>,
    /// Also count who woke whom among the target's threads (an extra
    /// program on sched_wakeup; `report.wake_edges`).
    pub wake_edges: bool,
    /// Attach the idle-state program (`cpu_idle` on `power:cpu_idle`;
    /// `report.cpu_idle`).
    pub cpu_idle: bool,
    /// Write the scheduler stream, IRQs, page faults and migrations into
    /// this Perfetto trace (implies `trace_events`); the caller finishes it.
    pub timeline: Option<crate::timeline::SharedTimeline>,
}

impl RecordOptions {
    pub fn new(target: TargetSpec) -> Self {
        RecordOptions {
            target,
            builtin: false,
            follow_children: false,
            duration: Some(Duration::from_secs(10)),
            window: Duration::from_millis(10),
            outlier_runq: Duration::from_millis(1),
            outlier_irq: Duration::from_micros(100),
            max_outliers: 10_000,
            self_stats: true,
            max_threads: None,
            poll: Duration::from_millis(100),
            progress: false,
            on_attached: None,
            stop: None,
            trace_events: false,
            quiet_command: false,
            irq: true,
            priority: None,
            wake_edges: false,
            cpu_idle: false,
            timeline: None,
        }
    }
}

/// A callback with the main pid, shareable across threads.
#[derive(Clone)]
pub struct Callback(pub Arc<dyn Fn(u32) + Send + Sync>);

impl std::fmt::Debug for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Callback")
    }
}

impl Callback {
    pub fn new(f: impl Fn(u32) + Send + Sync + 'static) -> Self {
        Callback(Arc::new(f))
    }
}
