//! `tailprobe record`: attach the scheduler probes to one process.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result};
use clap::Args;

use crate::{
    record::{self, RecordOptions},
    report::{text, EndReason},
    signals,
};

/// Record what the scheduler does to every thread of one process.
///
/// Attaches to sched_switch, sched_wakeup, sched_wakeup_new and
/// sched_migrate_task (BTF tracepoints), filtered in the kernel to the
/// target's threads, including threads created after attach. Reports
/// run-queue wait (count, total, p50/p95/p99/max), on-CPU time, voluntary and
/// involuntary context switches and migrations, per process and per thread,
/// beside the kernel's own accounting (schedstat) for the same window.
///
/// Needs root. Stops at --duration, on Ctrl-C, or when the target exits
/// (exit code 3, with the report of what was seen).
#[derive(Debug, Args)]
pub struct RecordArgs {
    /// Process to record (any thread id of it works). Without it, tailprobe
    /// starts its built-in CPU workload and records that.
    #[arg(long, short)]
    pub pid: Option<u32>,
    /// How long to record.
    #[arg(long, short, default_value = "10s", value_parser = super::parse_duration)]
    pub duration: Duration,
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
    /// Threads of the built-in workload when no --pid is given
    /// [default: twice the online CPUs].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub builtin_threads: Option<u16>,
}

fn announce(pid: u32) {
    eprintln!("tailprobe: probes attached to pid {pid}");
}

/// The built-in workload, killed when dropped.
struct BuiltinTarget(Child);

impl Drop for BuiltinTarget {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_builtin(args: &RecordArgs) -> Result<BuiltinTarget> {
    let exe = std::env::current_exe().context("finding tailprobe's own executable")?;
    let threads = args
        .builtin_threads
        .map(usize::from)
        .unwrap_or_else(super::workload::default_threads);
    // Runs a little longer than the recording; killed at the end anyway.
    let secs = args.duration.as_secs() + 5;
    let child = Command::new(exe)
        .args([
            "workload",
            "--threads",
            &threads.to_string(),
            "--duration",
            &format!("{secs}s"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the built-in workload")?;
    eprintln!(
        "tailprobe: no --pid given: recording the built-in workload (pid {}, {threads} threads)",
        child.id()
    );
    // Let its threads start before the first look at /proc.
    std::thread::sleep(Duration::from_millis(200));
    Ok(BuiltinTarget(child))
}

pub fn main(args: &RecordArgs) -> Result<i32> {
    signals::install().context("installing the Ctrl-C handler")?;
    crate::privileges::require_root("tailprobe record")?;
    let (pid, _builtin) = match args.pid {
        Some(p) => (p, None),
        None => {
            let t = start_builtin(args)?;
            (t.0.id(), Some(t))
        }
    };
    let opts = RecordOptions {
        pid,
        duration: args.duration,
        builtin: args.pid.is_none(),
        max_threads: args.max_threads,
        poll: Duration::from_millis(100),
        progress: !args.json,
        on_attached: Some(announce),
    };
    let report = record::run(&opts)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!(
            "{}",
            text::render(&report, if args.all_threads { 0 } else { 20 })
        );
    }
    Ok(match report.end_reason {
        EndReason::TargetExited => {
            eprintln!("tailprobe: pid {pid} exited during the run (exit code 3)");
            super::exit::TARGET_EXITED
        }
        _ => super::exit::OK,
    })
}
