//! `tailprobe exporter`: an always-on Prometheus exporter of what the
//! kernel does to the selected targets' threads.

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context as _, Result};
use clap::Args;

use crate::{
    exporter::{self, targets::Selector},
    signals,
};

/// Serve the targets' run-queue wait histogram, switches, migrations, IRQ
/// time, page faults, NUMA events and memory to Prometheus.
///
/// Aggregation stays in the kernel: run-queue waits, switches and on-CPU
/// time per CPU and per target (the scheduler programs' per-target mode,
/// cheaper than record's per-thread one), the rarer events per thread,
/// folded per target at each scrape; nothing is streamed per event.
/// Targets are re-evaluated every --rescan, so a process that starts, exits
/// and comes back under a selector is followed again without a restart.
/// Selectors combine (--unit, --cgroup, --comm, --pid, each repeatable); the
/// first one that names a process gives its `target` label. Labels never
/// carry pids; past --max-targets names, processes count under "other".
/// Metrics at http://LISTEN/metrics (Prometheus text, or OpenMetrics when
/// the scraper asks for it); reference in docs/fleet.md. Needs root (or
/// CAP_BPF, CAP_PERFMON, CAP_SYS_RESOURCE, CAP_SYS_PTRACE; docs/fleet.md).
#[derive(Debug, Args)]
pub struct ExporterArgs {
    /// A systemd unit (`vllm` means vllm.service): the processes of its
    /// control group, looked up again when the unit restarts.
    #[arg(long)]
    pub unit: Vec<String>,
    /// A cgroup (v2 path, absolute or under /sys/fs/cgroup), every process
    /// in it and below it.
    #[arg(long)]
    pub cgroup: Vec<PathBuf>,
    /// Each child cgroup of a --unit/--cgroup is its own target
    /// (`NAME/child`): one series per container of a pod slice.
    #[arg(long)]
    pub cgroup_children: bool,
    /// Processes with this command name (15 characters at most).
    #[arg(long)]
    pub comm: Vec<String>,
    /// One process (its label is its command name).
    #[arg(long)]
    pub pid: Vec<u32>,
    /// Address to serve /metrics on.
    #[arg(long, default_value = "127.0.0.1:9466")]
    pub listen: String,
    /// Most distinct target names; processes past it count under "other"
    /// (254 at most: the kernel names a process's target in one byte).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=254))]
    pub max_targets: u32,
    /// A target name with no process for this long is dropped (its series
    /// end; it frees its place under --max-targets).
    #[arg(long, default_value = "10m", value_parser = super::parse_duration)]
    pub forget_after: Duration,
    /// How often selectors are evaluated again.
    #[arg(long, default_value = "1s", value_parser = super::parse_duration)]
    pub rescan: Duration,
    /// How often the targets' memory per NUMA node is read (numa_maps).
    #[arg(long, default_value = "30s", value_parser = super::parse_duration)]
    pub memory_every: Duration,
    /// Stop after this long [default: run until SIGTERM or Ctrl-C].
    #[arg(long, short, value_parser = super::parse_duration)]
    pub duration: Option<Duration>,
    /// Histogram buckets per power of two (1, 2, 4, 8, 16), from 1.024 us
    /// to 4.29 s: 4 gives 89 buckets of at most 25% width.
    #[arg(long, default_value = "4", value_parser = parse_per_octave)]
    pub buckets_per_octave: u32,
    /// Threads the kernel keeps a slot for (about 4.6 KiB each; a thread
    /// gets one at its first migration, IRQ or page fault); past it, new
    /// threads are counted as `thread_map_insert_failed` losses.
    #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u32).range(256..=1_048_576))]
    pub max_threads: u32,
    /// Leave out the five IRQ programs (no IRQ time stolen).
    #[arg(long)]
    pub no_irq: bool,
    /// Do not turn on BPF run-time statistics (no cost metrics; saves
    /// about 20 ns per event).
    #[arg(long)]
    pub no_self_stats: bool,
}

fn parse_per_octave(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n @ (1 | 2 | 4 | 8 | 16)) => Ok(n),
        _ => Err(format!("{s:?}: give 1, 2, 4, 8 or 16")),
    }
}

pub fn main(args: &ExporterArgs) -> Result<i32> {
    signals::install().context("installing the SIGTERM handler")?;
    let mut selectors: Vec<Selector> = Vec::new();
    selectors.extend(args.unit.iter().cloned().map(Selector::Unit));
    selectors.extend(args.cgroup.iter().cloned().map(Selector::Cgroup));
    selectors.extend(args.comm.iter().cloned().map(Selector::Comm));
    selectors.extend(args.pid.iter().copied().map(Selector::Pid));
    if selectors.is_empty() {
        bail!("no target: give at least one of --unit, --cgroup, --comm, --pid");
    }
    let opts = exporter::Options {
        selectors,
        cgroup_children: args.cgroup_children,
        listen: args.listen.clone(),
        max_targets: args.max_targets as usize,
        rescan: args.rescan,
        duration: args.duration,
        irq: !args.no_irq,
        self_stats: !args.no_self_stats,
        buckets_per_octave: args.buckets_per_octave,
        memory_every: args.memory_every,
        max_threads: args.max_threads,
        forget_after: args.forget_after,
    };
    exporter::run(&opts, &|addr| {
        eprintln!("tailprobe exporter: probes attached; serving http://{addr}/metrics");
    })?;
    Ok(super::exit::OK)
}
