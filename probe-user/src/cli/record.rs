//! `tailprobe record`: attach the probes to one target and report.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, Result};
use clap::{ArgGroup, Args};

use crate::{
    record::{self, RecordOptions, TargetSpec},
    report::{text, EndReason},
    signals,
};

/// Record what the kernel does to a target's threads: scheduler, IRQs, page
/// faults, NUMA.
///
/// Attaches BTF tracepoints (sched_switch, sched_wakeup, sched_wakeup_new,
/// sched_migrate_task, sched_process_fork/exit, hard and soft IRQs, user page
/// faults, NUMA balancing, page migration), filtered in the kernel to the
/// target's threads, including threads created after attach. Reports
/// run-queue wait (count, total, p50/p95/p99/max and a histogram), on-CPU
/// time, voluntary and involuntary switches, who preempted the target,
/// migrations (same LLC / cross-LLC / cross-NUMA), IRQ and softirq time
/// stolen from the target, page faults and NUMA signals, per process, per
/// thread, per CPU and per time window, beside the kernel's own accounting
/// (schedstat) for the same window, with the probes' own cost and any loss.
///
/// Target: --pid, --tid, --comm, --unit, --container, --pod, --cgroup, or
/// `-- CMD ARGS` to launch one (followed with its children until it
/// exits). Without any, tailprobe records its built-in CPU workload. Needs
/// CAP_BPF and CAP_PERFMON (root has them; CAP_SYS_ADMIN before Linux 5.8). Stops at --duration, on
/// Ctrl-C, or when the target exits (exit code 3, with the report of what
/// was seen). A launched command (and the built-in workload) runs in a
/// process group of its own that is stopped with the recording, and killed
/// if tailprobe is; a command that exits non-zero makes that tailprobe's
/// exit code.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").args(["pid", "tid", "comm", "cgroup", "unit", "container", "pod", "command"])))]
pub struct RecordArgs {
    #[command(flatten)]
    pub target: super::target_args::TargetArgs,
    /// Record only this thread.
    #[arg(long)]
    pub tid: Option<u32>,
    /// Every process with this command name (as in `ps -o comm`, 15
    /// characters at most), including ones started during the run.
    #[arg(long)]
    pub comm: Option<String>,
    /// Also follow child processes of the target (always on for `-- CMD`).
    #[arg(long)]
    pub follow_children: bool,
    /// How long to record [default: 10s; with `-- CMD`, until it exits].
    #[arg(long, short, value_parser = super::parse_duration)]
    pub duration: Option<Duration>,
    /// Width of the time-series windows (`0` turns them off).
    #[arg(long, default_value = "10ms", value_parser = parse_duration_or_zero)]
    pub window: Duration,
    /// Stream every run-queue wait at or above this as an outlier (`0`: off).
    #[arg(long, default_value = "1ms", value_parser = parse_duration_or_zero)]
    pub outlier_runq: Duration,
    /// Stream every IRQ/softirq run on a target thread at or above this (`0`: off).
    #[arg(long, default_value = "100us", value_parser = parse_duration_or_zero)]
    pub outlier_irq: Duration,
    /// Also stream every page fault and migration of the target as events
    /// (`outliers[]` kinds `page_fault` and `migration`), for per-request
    /// attribution. With `--outlier-runq 1ns --outlier-irq 1ns` every wait and
    /// IRQ is streamed too.
    #[arg(long)]
    pub trace_events: bool,
    /// Outliers kept in the report; more are counted, not kept.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    pub max_outliers: u32,
    /// Do not time the probes (BPF run-time statistics cost ~20 ns per event).
    #[arg(long)]
    pub no_self_stats: bool,
    /// Print the report as JSON on stdout (schema: docs/record-json.md).
    #[arg(long)]
    pub json: bool,
    /// Show every thread in the table, not only the 20 that waited longest.
    #[arg(long)]
    pub all_threads: bool,
    /// Size of the per-thread maps [default: 8 x the target's threads + 256,
    /// at least 1024]. Threads beyond it are counted as losses.
    #[arg(long, value_parser = clap::value_parser!(u32).range(16..=1_048_576))]
    pub max_threads: Option<u32>,
    /// Threads of the built-in workload when no target is given
    /// [default: twice the online CPUs].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub builtin_threads: Option<u16>,
    /// Do not load the hard IRQ and softirq programs: no IRQ time, softirq
    /// time or softirq raise delay in the report, five programs fewer to
    /// verify at start and to run on every interrupt.
    #[arg(long)]
    pub no_irq: bool,
    /// Run the loader and the ring-buffer reader at a raised priority,
    /// `nice:N` (-20..19) or `fifo:N` (SCHED_FIFO 1..99), so that a
    /// saturated machine does not starve the recorder. Set after the
    /// target is started (it keeps its own). Trade-off: a real-time reader
    /// preempts the server it observes whenever it runs (docs/record-json.md).
    #[arg(long, value_parser = crate::record::priority::parse)]
    pub priority: Option<crate::record::priority::Priority>,
    /// Do not run the start-up at SCHED_FIFO 1. By default `record` runs at
    /// real-time priority 1 from its first instruction until every program
    /// is attached (then drops back; never passed on to a launched command),
    /// so that it attaches at once on a saturated machine
    /// (`attach_ms.startup_priority` in the report).
    #[arg(long)]
    pub no_startup_boost: bool,
    /// Command to launch and record (after `--`).
    /// Also write a Perfetto trace (protobuf) to FILE: the target's
    /// switches and wakeups and whoever ran in their place, IRQs on its
    /// threads, page faults and migrations; open it at ui.perfetto.dev
    /// (docs/timeline.md). Implies --trace-events.
    #[arg(long, value_name = "FILE")]
    pub perfetto: Option<PathBuf>,
    /// Cap on the trace's size in MB; events past it are left out, counted
    /// and named in a note (stderr and the trace).
    #[arg(long, default_value_t = crate::timeline::DEFAULT_MAX_MB, value_parser = clap::value_parser!(u64).range(1..=1_000_000), requires = "perfetto")]
    pub perfetto_max_mb: u64,
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// A duration, or `0` / `off` for "disabled".
pub fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    match s.trim() {
        "0" | "off" => Ok(Duration::ZERO),
        other => super::parse_duration(other),
    }
}

pub fn main(args: &RecordArgs) -> Result<i32> {
    signals::install().context("installing the Ctrl-C handler")?;
    crate::privileges::require_bpf("tailprobe record")?;
    let (spec, builtin) = if let Some(spec) = args.target.spec()? {
        (spec, false)
    } else if let Some(t) = args.tid {
        (TargetSpec::Tid(t), false)
    } else if let Some(c) = &args.comm {
        (TargetSpec::Comm(c.clone()), false)
    } else if !args.command.is_empty() {
        (TargetSpec::Command(args.command.clone()), false)
    } else {
        let exe = std::env::current_exe().context("finding tailprobe's own executable")?;
        let threads = args
            .builtin_threads
            .map(usize::from)
            .unwrap_or_else(super::workload::default_threads);
        let secs = args
            .duration
            .unwrap_or(Duration::from_secs(10))
            .as_secs()
            .saturating_add(5);
        eprintln!(
            "tailprobe: no target given: recording the built-in workload ({threads} threads)"
        );
        let argv = vec![
            exe.to_string_lossy().into_owned(),
            "workload".into(),
            "--threads".into(),
            threads.to_string(),
            "--duration".into(),
            format!("{secs}s"),
        ];
        (TargetSpec::Command(argv), true)
    };
    if args.no_startup_boost {
        // main() read the flag from the raw arguments already; this keeps
        // the flag's promise should the two ever disagree.
        let _ = crate::kernel::startup::end_boost();
    }
    let mut opts = RecordOptions::new(spec);
    opts.builtin = builtin;
    opts.follow_children = args.follow_children;
    opts.duration = match (args.duration, builtin) {
        (Some(d), _) => Some(d),
        (None, true) => Some(Duration::from_secs(10)),
        (None, false) if !args.command.is_empty() => None,
        (None, false) => Some(Duration::from_secs(10)),
    };
    opts.window = args.window;
    opts.outlier_runq = args.outlier_runq;
    opts.outlier_irq = args.outlier_irq;
    opts.max_outliers = args.max_outliers as usize;
    opts.self_stats = !args.no_self_stats;
    opts.trace_events = args.trace_events;
    opts.max_threads = args.max_threads;
    opts.irq = !args.no_irq;
    opts.priority = args.priority;
    opts.progress = !args.json;
    opts.on_attached = Some(record::Callback::new(|pid| {
        eprintln!("tailprobe: probes attached to pid {pid}")
    }));
    opts.quiet_command = builtin || args.json;
    if let Some(path) = &args.perfetto {
        let t = crate::timeline::TraceOptions::new(path, args.perfetto_max_mb);
        opts.timeline = Some(crate::timeline::Timeline::create(&t)?.shared());
    }
    let report = record::run(&opts)?;
    if let Some(tl) = opts.timeline.take() {
        let summary = crate::timeline::session::finish(tl)?;
        eprintln!("tailprobe: {}", summary.line());
    }
    if args.json {
        crate::out::print_json(&report)?;
    } else {
        crate::out::print_str(&text::render(
            &report,
            if args.all_threads { 0 } else { 20 },
        ))?;
    }
    Ok(exit_code(&report, builtin))
}

/// The exit code a finished recording calls for: 3 when the target exited
/// during the run; a launched command's own non-zero exit code (1 when it
/// was killed by a signal); an error when the built-in workload failed.
fn exit_code(report: &crate::report::RecordReport, builtin: bool) -> i32 {
    let code = report.target.command_exit_code;
    match report.end_reason {
        EndReason::TargetExited if builtin && code != Some(0) => {
            eprintln!(
                "tailprobe: the built-in workload (pid {}) ended early (exit code {code:?})",
                report.target.pid
            );
            super::exit::ERROR
        }
        EndReason::TargetExited => {
            eprintln!(
                "tailprobe: pid {} exited during the run (exit code 3)",
                report.target.pid
            );
            super::exit::TARGET_EXITED
        }
        EndReason::CommandExited if code != Some(0) => {
            eprintln!(
                "tailprobe: the command exited with {} (tailprobe exits with it)",
                code.map_or("a signal".to_string(), |c| format!("code {c}"))
            );
            code.filter(|c| *c != 0).unwrap_or(super::exit::ERROR)
        }
        _ => super::exit::OK,
    }
}
