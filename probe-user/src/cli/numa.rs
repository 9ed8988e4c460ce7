//! `tailprobe numa`: NUMA locality of a process.

use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{ArgGroup, Args};

use super::node_common::{self as nc, NodeArgs};
use crate::{
    cpulist,
    node::{numa, pin},
    procfs::ProcFs,
};

/// Memory of a process per NUMA node (from numa_maps, like `numastat -p`),
/// the share on nodes remote to the CPUs it may run on, and node numastat
/// and /proc/vmstat NUMA counter deltas (balancing, migrations) over
/// --duration. The target is a process (--pid) or every process of a
/// unit, container, pod or cgroup, summed.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["pid", "unit", "container", "pod", "cgroup"])))]
pub struct NumaArgs {
    #[command(flatten)]
    pub target: super::target_args::TargetArgs,
    /// Window for the numastat/vmstat deltas.
    #[arg(long, default_value = "1s", value_parser = super::parse_duration)]
    pub duration: Duration,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub node: NodeArgs,
}

pub fn main(args: &NumaArgs) -> Result<i32> {
    let roots = args.node.roots();
    let proc = ProcFs::new(&roots.proc);
    let (pids, what) = args.target.processes(&proc)?;
    let pid = pids[0];
    let comm = proc.stat(pid).map(|s| s.comm).unwrap_or_default();
    if !numa::has_numa_maps(&roots.proc, pid) {
        return Ok(nc::not_available(&crate::node::NotAvailable(
            "the kernel has no NUMA support (no /proc/<pid>/numa_maps)".into(),
        )));
    }
    crate::signals::install().context("installing the SIGINT/SIGTERM handlers")?;
    let a = numa::snapshot(&roots);
    nc::sleep_unless_stopped(args.duration);
    let b = numa::snapshot(&roots);
    let mut mem = numa::ProcessNuma::default();
    let mut cpus = Vec::new();
    for &p in &pids {
        let m = match numa::read_process(&roots, p) {
            Ok(m) => m,
            // A process of a group that exited since: left out.
            Err(_) if pids.len() > 1 && !proc.is_alive(p) => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("reading /proc/{p}/numa_maps"));
            }
        };
        for (n, k) in m.kib_per_node {
            let e = mem.kib_per_node.entry(n).or_default();
            *e = e.saturating_add(k);
        }
        for (pol, c) in m.policies {
            *mem.policies.entry(pol).or_default() += c;
        }
        for tid in proc.threads(p) {
            if let Some(s) = pin::allowed_list(&proc, p, tid) {
                cpus.extend(cpulist::parse(&s).unwrap_or_default());
            }
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    let node_cpus = pin::node_cpus(&roots);
    let local = numa::local_nodes(&node_cpus, &cpus);
    let share = numa::remote_share(&mem, &local);
    let d = numa::delta(&a, &b);
    let single = node_cpus.len() < 2;
    let note = single.then(|| {
        "single NUMA node: all memory is local; remote share is 0 by construction".to_string()
    });
    if args.json {
        nc::print_json(&serde_json::json!({
            "pid": pid,
            "comm": comm,
            "target": what,
            "processes": pids,
            "nodes": node_cpus.len(),
            "cpus_allowed": cpulist::Display(&cpus).to_string(),
            "local_nodes": local,
            "kib_per_node": mem.kib_per_node,
            "policies": mem.policies,
            "remote_share": share,
            "seconds": args.duration.as_secs_f64(),
            "numastat_delta": d.numastat,
            "vmstat_delta": d.vmstat,
            "note": note,
        }))?;
    } else {
        let total: u64 = mem.kib_per_node.values().sum();
        crate::out::println(format_args!(
            "{what}{}: {:.1} MiB resident in mappings, CPUs {}",
            if pids.len() > 1 {
                format!(" ({} processes)", pids.len())
            } else {
                String::new()
            },
            total as f64 / 1024.0,
            cpulist::Display(&cpus)
        ))?;
        for (n, k) in &mem.kib_per_node {
            crate::out::println(format_args!(
                "  node{n}: {:>10.1} MiB{}",
                *k as f64 / 1024.0,
                if local.contains(n) {
                    "  (local)"
                } else {
                    "  (remote)"
                }
            ))?;
        }
        match share {
            // + 0.0: an empty f64 sum is -0.0, which would print as "-0.0%".
            Some(s) => crate::out::println(format_args!("remote share: {:.1}%", s * 100.0 + 0.0))?,
            None => crate::out::println(format_args!("remote share: no resident memory"))?,
        }
        crate::out::println(format_args!("over {:?}:", args.duration))?;
        for (n, m) in &d.numastat {
            let f = |k: &str| m.get(k).copied().unwrap_or(0);
            crate::out::println(format_args!(
                "  node{n} numastat: numa_hit +{} numa_miss +{} numa_foreign +{} local_node +{} other_node +{}",
                f("numa_hit"), f("numa_miss"), f("numa_foreign"), f("local_node"), f("other_node")
            ))?;
        }
        if d.vmstat.is_empty() {
            crate::out::println(format_args!("  vmstat NUMA counters: not available on this node (kernel without NUMA balancing counters)"))?;
        }
        for (k, v) in &d.vmstat {
            crate::out::println(format_args!("  {k} +{v}"))?;
        }
        if let Some(n) = note {
            crate::out::println(format_args!("note: {n}"))?;
        }
    }
    Ok(super::exit::OK)
}
