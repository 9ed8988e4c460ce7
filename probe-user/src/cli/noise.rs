//! `tailprobe noise`: a noisy neighbour, placed relative to a target.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::Args;

use super::node_common::{self as nc, NodeArgs};
use crate::{
    cpulist,
    node::{
        affinity, child,
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
        return run_noise_cmd(args, sh, &cpus);
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
        crate::out::println(format_args!("noise on CPUs {cpus_s}:"))?;
        for r in &reports {
            crate::out::println(format_args!(
                "  tid {} {:?}: ran on CPUs {}, {:.2} {}",
                r.tid, r.kind, r.cpus_seen, r.volume, r.volume_unit
            ))?;
        }
    }
    Ok(super::exit::OK)
}

/// Run `--noise-cmd` in its own process group on `cpus` until --duration,
/// then stop the whole group (every process the command forked). A command
/// that fails before the end is an error quoting its stderr.
fn run_noise_cmd(args: &NoiseArgs, sh: &str, cpus: &[u32]) -> Result<i32> {
    let cpus_s = cpulist::Display(cpus).to_string();
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(sh)
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let p = pin::Placement {
        cpus: cpus.to_vec(),
        mem_node: None,
        why: format!("CPUs {cpus_s}"),
    };
    pin::pin_command(&mut cmd, &p)?;
    let started = std::time::Instant::now();
    let mut child =
        child::spawn(&mut cmd).with_context(|| format!("starting the noise command {sh:?}"))?;
    let tail = child.stderr.take().map(child::StderrTail::start);
    eprintln!(
        "tailprobe: noise command pid {} (process group {}) on CPUs {cpus_s} for {:?}",
        child.id(),
        child::group_of(&child).unwrap_or(0),
        args.duration
    );
    let (st, ended) = child::wait(&mut child, Some(args.duration))
        .with_context(|| format!("waiting for the noise command {sh:?}"))?;
    let ran = started.elapsed();
    let stderr = tail.map(|t| t.finish()).unwrap_or_default();
    if ended == child::Ended::Exited && !st.success() {
        bail!(
            "the noise command {sh:?} failed after {:.1} s ({st}){}",
            ran.as_secs_f64(),
            if stderr.is_empty() {
                " with no output on stderr".to_string()
            } else {
                format!("; its stderr:\n{stderr}")
            }
        );
    }
    let how = match ended {
        child::Ended::Exited => "exited by itself",
        child::Ended::TimeLimit => "stopped at --duration",
        child::Ended::Interrupted => "stopped on Ctrl-C/SIGTERM",
    };
    if args.json {
        nc::print_json(&serde_json::json!({
            "cpus": cpus_s, "noise_cmd": sh, "exit_code": st.code(),
            "ended": how, "ran_s": ran.as_secs_f64(),
        }))?;
    } else {
        crate::out::println(format_args!(
            "noise command {sh:?} ran on CPUs {cpus_s} for {:.1} s: {how} ({st}); its process group was stopped",
            ran.as_secs_f64()
        ))?;
    }
    Ok(super::exit::OK)
}
