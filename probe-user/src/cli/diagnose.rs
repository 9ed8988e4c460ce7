//! `tailprobe diagnose`: record a target and name the causes of its
//! CPU-side tail latency, ranked, with the evidence.

use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{ArgGroup, Args};

use crate::{
    diagnose::{self, render, DiagnoseOptions},
    record::TargetSpec,
    signals,
};

/// Name the CPU-side causes of a process's tail latency, with the evidence.
///
/// Records the target like `tailprobe record` (sched, IRQ, page fault
/// probes, plus who woke whom among its threads), snapshots its CPU
/// cgroup's throttling counters around the run, then runs one detector per
/// cause: preemption by other processes, one saturated thread, CFS
/// throttling, stop-the-world pauses, IRQ and softirq time, lock convoys /
/// GIL contention. Each has a stated rule and threshold (docs/diagnose.md); a
/// cause below its threshold is not printed, and "no CPU-side cause found"
/// is a valid answer. Findings are ranked by the target thread-time they
/// cost. Needs CAP_BPF and CAP_PERFMON (root has them).
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["pid", "comm", "cgroup", "unit", "container", "pod"])))]
pub struct DiagnoseArgs {
    #[command(flatten)]
    pub target: super::target_args::TargetArgs,
    /// Every process with this command name (15 characters at most).
    #[arg(long)]
    pub comm: Option<String>,
    /// How long to record.
    #[arg(long, short, default_value = "30s", value_parser = super::parse_duration)]
    pub duration: Duration,
    /// Print the diagnosis as JSON on stdout (schema: docs/diagnose.md).
    #[arg(long)]
    pub json: bool,
}

pub fn main(args: &DiagnoseArgs) -> Result<i32> {
    signals::install().context("installing the Ctrl-C handler")?;
    crate::privileges::require_bpf("tailprobe diagnose")?;
    let target = if let Some(spec) = args.target.spec()? {
        spec
    } else if let Some(c) = &args.comm {
        TargetSpec::Comm(c.clone())
    } else {
        anyhow::bail!("name a target: --pid, --comm, --unit, --container, --pod or --cgroup");
    };
    let d = diagnose::run(&DiagnoseOptions {
        target,
        duration: args.duration,
        progress: !args.json,
    })?;
    if args.json {
        crate::out::print_json(&d)?;
    } else {
        crate::out::print_str(&render::text(&d))?;
    }
    Ok(super::exit::OK)
}
