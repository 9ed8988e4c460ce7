//! `tailprobe noise`: a noisy neighbour, placed relative to a target.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::Args;

use super::node_common::{self as nc, NodeArgs};
use crate::{
    cpulist,
    node::{
        affinity,
        noise::{self, Kind, Place, PlaceError},
        pin,
    },
    procfs::ProcFs,
};

/// Run a noisy neighbour for a bounded time: matrix-product CPU load,
/// memory-bandwidth load over buffers 4x the LLC (at least 64 MiB per
/// thread), or both, on the same cores as the target, other cores of its
/// node, another node, or a CPU list. Each thread reports the CPUs it ran
/// on. --noise-cmd runs an external load (e.g. stress-ng) with the same
/// placement instead.
#[derive(Debug, Args)]
pub struct NoiseArgs {
    /// What load.
    #[arg(long, value_enum, default_value = "cpu")]
    pub kind: Kind,
    /// Noise threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: u16,
    /// Where: same-cores, same-node, other-node (relative to the target) or
    /// cpus:LIST.
    #[arg(long, default_value = "same-cores")]
    pub place: Place,
    /// The target whose CPUs the placement is relative to (its threads'
    /// allowed CPUs).
    #[arg(long, conflicts_with = "target_cpus")]
    pub target_pid: Option<u32>,
    /// The target's CPUs, when there is no process yet.
    #[arg(long)]
    pub target_cpus: Option<nc::CpuArg>,
    /// How long the noise runs.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    pub duration: Duration,
    /// Run this shell command (sh -c) as the noise instead, pinned to the
    /// same CPUs; stopped at --duration.
    #[arg(long)]
    pub noise_cmd: Option<String>,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// Union of the allowed CPUs of every thread of `pid`.
fn target_cpus_of(proc: &ProcFs, pid: u32) -> Result<Vec<u32>> {
    proc.check_target(pid)?;
    let mut all = Vec::new();
    for tid in proc.threads(pid) {
        if let Some(s) = pin::allowed_list(proc, pid, tid) {
            all.extend(cpulist::parse(&s).unwrap_or_default());
        }
    }
    all.sort_unstable();
    all.dedup();
    if all.is_empty() {
        bail!("no process with pid {pid} (is it still running?)");
    }
    Ok(all)
}

pub fn main(args: &NoiseArgs) -> Result<i32> {
    let roots = args.node.roots();
    let target: Vec<u32> = match (&args.target_pid, &args.target_cpus, &args.place) {
        (Some(pid), _, _) => target_cpus_of(&ProcFs::new(&roots.proc), *pid)
            .with_context(|| format!("reading the CPUs of target pid {pid}"))?,
        (None, Some(nc::CpuArg(c)), _) => {
            let online = affinity::online_cpus(&roots.sys).context("reading the online CPUs")?;
            affinity::check_online(c, &online)?;
            c.clone()
        }
        (None, None, Place::Cpus(_)) => Vec::new(),
        (None, None, _) => bail!(
            "--place {:?} is relative to a target: give --target-pid PID or --target-cpus LIST \
             (or use --place cpus:LIST)",
            args.place
        ),
    };
    let cpus = match noise::resolve(&roots, &args.place, &target) {
        Ok(c) => c,
        Err(PlaceError::NotAvailable(na)) => return Ok(nc::not_available(&na)),
        Err(e) => return Err(e).context("placing the noise"),
    };
    let cpus_s = cpulist::Display(&cpus).to_string();
    crate::signals::install().context("installing the SIGINT/SIGTERM handlers")?;
    if let Some(sh) = &args.noise_cmd {
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c").arg(sh);
        let p = pin::Placement {
            cpus: cpus.clone(),
            mem_node: None,
            why: format!("CPUs {cpus_s}"),
        };
        pin::pin_command(&mut cmd, &p)?;
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting the noise command {sh:?}"))?;
        eprintln!(
            "tailprobe: noise command pid {} on CPUs {cpus_s} for {:?}",
            child.id(),
            args.duration
        );
        let st = nc::wait_child(&mut child, Some(args.duration))?;
        if args.json {
            nc::print_json(&serde_json::json!({
                "cpus": cpus_s, "noise_cmd": sh, "exit_code": st.code(),
            }))?;
        } else {
            println!("noise command {sh:?} ran on CPUs {cpus_s}: {st}");
        }
        return Ok(super::exit::OK);
    }
    let llc = cpus.first().and_then(|&c| noise::llc_bytes(&roots, c));
    let buf = noise::membw_buffer_bytes(llc);
    eprintln!(
        "tailprobe: {} {:?} noise thread(s) on CPUs {cpus_s} for {:?}{} (pid {})",
        args.threads,
        args.kind,
        args.duration,
        if args.kind == Kind::Cpu {
            String::new()
        } else {
            format!(", {} MiB per memory thread", buf >> 20)
        },
        std::process::id()
    );
    let reports = noise::run(
        args.kind,
        usize::from(args.threads),
        &cpus,
        buf,
        args.duration,
    )
    .context("running the noise threads")?;
    if args.json {
        nc::print_json(&serde_json::json!({
            "kind": args.kind,
            "cpus": cpus_s,
            "target_cpus": cpulist::Display(&target).to_string(),
            "buffer_bytes": buf,
            "threads": reports,
        }))?;
    } else {
        println!("noise on CPUs {cpus_s}:");
        for r in &reports {
            println!(
                "  tid {} {:?}: ran on CPUs {}, {:.2} {}",
                r.tid, r.kind, r.cpus_seen, r.volume, r.volume_unit
            );
        }
    }
    Ok(super::exit::OK)
}
