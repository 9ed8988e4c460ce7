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
/// probes, plus who woke whom among its threads and the idle periods of its
/// CPUs), snapshots its CPU
/// cgroup's throttling counters around the run, then runs one detector per
/// cause: preemption by other processes, one saturated thread, CFS
/// throttling, stop-the-world pauses, IRQ and softirq time, lock convoys /
/// GIL contention, NUMA placement and balancing (home node: --local-node),
/// frequency and idle states ("not available" where a VM shows neither).
/// With --url and --rate it drives load while recording and
/// ties each finding to the slow requests. Each has a stated rule and threshold (docs/diagnose.md); a
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
    /// Drive load at this URL while recording (tailprobe's load generator,
    /// as `tailprobe load URL --rate R`), then tie each finding to the slow
    /// requests (those above p95).
    #[arg(long, requires = "rate")]
    pub url: Option<String>,
    /// With --url: requests per second, on a constant schedule, for
    /// --duration.
    #[arg(long, requires = "url")]
    pub rate: Option<f64>,
    /// The device-local NUMA node (the GPU's or NIC's): the NUMA detector
    /// counts memory and CPU time off this node as remote. Default: the
    /// accelerators' node from sysfs, else the node where the target ran
    /// most. Must be a node of this machine.
    #[arg(long, value_name = "NODE")]
    pub local_node: Option<u32>,
}

/// `tailprobe load`'s arguments, parsed from the words diagnose passes, so
/// the load is built exactly as `tailprobe load` builds it.
#[derive(Debug, clap::Parser)]
struct LoadWords {
    #[command(flatten)]
    load: super::load::LoadArgs,
}

fn drive(url: &str, rate: f64, duration: Duration) -> Result<diagnose::drive::Drive> {
    use clap::Parser as _;
    let words = LoadWords::try_parse_from([
        "tailprobe load".to_string(),
        url.to_string(),
        "--rate".into(),
        rate.to_string(),
        "--duration".into(),
        format!("{}ms", duration.as_millis()),
        "--no-progress".into(),
    ])
    .map_err(|e| anyhow::anyhow!("--url {url} --rate {rate}: {e}"))?;
    let mut request = words.load.request()?;
    request
        .resolve(url, Duration::from_secs(10))
        .with_context(|| format!("finding the model to ask {url} for"))?;
    Ok(diagnose::drive::Drive {
        url: url.to_string(),
        rate,
        load: words.load.options(request)?,
    })
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
    let drive = match (&args.url, args.rate) {
        (Some(u), Some(r)) => Some(drive(u, r, args.duration)?),
        _ => None,
    };
    let d = diagnose::run(&DiagnoseOptions {
        target,
        duration: args.duration,
        progress: !args.json,
        drive,
        local_node: args.local_node,
    })?;
    if args.json {
        crate::out::print_json(&d)?;
    } else {
        crate::out::print_str(&render::text(&d))?;
    }
    Ok(super::exit::OK)
}
