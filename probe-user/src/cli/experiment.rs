//! `tailprobe experiment`: the configuration matrix against an inference
//! server, and the documents it produces.

use std::{io::IsTerminal as _, path::PathBuf, time::Duration};

use anyhow::{bail, Context as _, Result};
use clap::Args;

use crate::{
    experiment::{
        plan::{NoiseAxis, OnFailure, Pinning, Plan, SloPlan},
        results::{CellStatus, Results},
        runner::{self, ExperimentOptions, ServerTarget},
    },
    node::journal,
    privileges,
    report_docs::{self, DocPaths},
    signals,
};

/// The shipped default plan (short: a few minutes on a 2-CPU machine).
pub const DEFAULT_PLAN: &str = include_str!("../../../plans/default.toml");

/// Run the experiment matrix (governor x pinning x noise x repeats) against
/// an inference server, with the probes attached to every cell, and write
/// results.json, plots, per-cell raw snapshots, a systemd drop-in and two
/// Markdown documents (baseline and tuning summary).
///
/// The target is the built-in server (default, launched per cell so pinning
/// applies at launch), a running server (--url and --pid), or a command
/// launched per cell (--server-cmd and --url). Cells this node cannot run
/// (no cpufreq, a single NUMA node) are recorded as not applicable with the
/// reason. Every node change is journaled and restored; Ctrl-C stops after
/// restoring and still writes what finished. Needs root.
///
/// Exit codes: 0 success, 1 error (nothing changed when it is bad input:
/// unwritable output, unknown governor, a CPU that does not exist, broken
/// document markers), 2 bad usage, 3 some cells failed.
#[derive(Debug, Args)]
pub struct ExperimentArgs {
    /// Plan file (TOML; see plans/*.toml and docs/experiment.md)
    /// [default: the shipped plans/default.toml].
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Governors to compare, comma-separated (`current` leaves it as found).
    #[arg(long, value_delimiter = ',')]
    pub governors: Option<Vec<String>>,
    /// Placements: unpinned, local, remote (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = parse_pinning)]
    pub pinning: Option<Vec<Pinning>>,
    /// Neighbours: none, same-node, other-node (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = parse_noise)]
    pub noise: Option<Vec<NoiseAxis>>,
    /// Runs per configuration (order alternates across repeats).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeats: Option<u32>,
    /// Measured load per cell.
    #[arg(long, value_parser = super::parse_duration)]
    pub measure: Option<Duration>,
    /// Load before the measured part of each cell.
    #[arg(long, value_parser = parse_duration_zero)]
    pub warmup: Option<Duration>,
    /// Offered rate in requests/s [default: a share of the calibrated capacity].
    #[arg(long)]
    pub rate: Option<f64>,
    /// SLO for the capacity sweep: `p95:50ms` (p50, p90, p95 or p99), or a
    /// bare duration for p95.
    #[arg(long, value_parser = parse_slo)]
    pub slo: Option<SloPlan>,
    /// Peak load of the whole fleet in requests/s (for N vs N+1).
    #[arg(long)]
    pub fleet_load: Option<f64>,
    /// Bound on the whole run; cells that would end later are skipped.
    #[arg(long, value_parser = super::parse_duration)]
    pub max_total: Option<Duration>,
    /// What to do when a cell fails.
    #[arg(long, value_enum)]
    pub on_failure: Option<OnFailure>,
    /// URL of a running server (with --pid) or of --server-cmd's server
    /// (loopback only is sensible: the load is real).
    #[arg(long)]
    pub url: Option<String>,
    /// Pid of the running server at --url.
    #[arg(long, requires = "url", conflicts_with = "server_cmd")]
    pub pid: Option<u32>,
    /// Command that starts the server (run with sh -c, per cell, pinned).
    #[arg(long, requires = "url")]
    pub server_cmd: Option<String>,
    /// Directory for results.json, plots, raw snapshots and the drop-in.
    #[arg(long, default_value = "benchmarks/experiment")]
    pub out: PathBuf,
    /// The baseline document.
    #[arg(long, default_value = "benchmarks/day05_numa_baseline.md")]
    pub baseline_doc: PathBuf,
    /// The tuning summary document.
    #[arg(long, default_value = "docs/os_node_os_tuning_summary_day05.md")]
    pub summary_doc: PathBuf,
    /// systemd unit the drop-in is written for.
    #[arg(long, default_value = "inference.service")]
    pub unit: String,
    /// Do not run: render the documents again from this results.json.
    #[arg(long, value_name = "RESULTS_JSON", conflicts_with_all = ["url", "server_cmd", "plan"])]
    pub render: Option<PathBuf>,
    /// The change journal [default: $TAILPROBE_JOURNAL, else
    /// /run/tailprobe/journal.json].
    #[arg(long, value_name = "FILE")]
    pub journal: Option<PathBuf>,
}

fn parse_duration_zero(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" || s.trim() == "0s" {
        return Ok(Duration::ZERO);
    }
    super::parse_duration(s)
}

fn parse_pinning(s: &str) -> Result<Pinning, String> {
    match s.trim() {
        "unpinned" => Ok(Pinning::Unpinned),
        "local" | "device-local" => Ok(Pinning::Local),
        "remote" => Ok(Pinning::Remote),
        o => Err(format!(
            "unknown placement {o:?}: use unpinned, local or remote"
        )),
    }
}

fn parse_noise(s: &str) -> Result<NoiseAxis, String> {
    match s.trim() {
        "none" => Ok(NoiseAxis::None),
        "same-node" => Ok(NoiseAxis::SameNode),
        "other-node" => Ok(NoiseAxis::OtherNode),
        o => Err(format!(
            "unknown noise {o:?}: use none, same-node or other-node"
        )),
    }
}

/// `p95:50ms` or `50ms`.
pub fn parse_slo(s: &str) -> Result<SloPlan, String> {
    let (p, d) = match s.split_once(':') {
        Some((p, d)) => (p.trim(), d.trim()),
        None => ("p95", s.trim()),
    };
    let percentile: f64 = p
        .strip_prefix('p')
        .and_then(|x| x.parse().ok())
        .filter(|x| [50.0, 90.0, 95.0, 99.0].contains(x))
        .ok_or_else(|| {
            format!("bad SLO percentile {p:?}: use p50, p90, p95 or p99 (example: p95:50ms)")
        })?;
    let d = humantime::parse_duration(d)
        .map_err(|_| format!("bad SLO duration {d:?} (example: p95:50ms)"))?;
    if d.is_zero() {
        return Err("the SLO must be above zero".into());
    }
    Ok(SloPlan {
        percentile,
        e2e_ms: d.as_secs_f64() * 1e3,
    })
}

impl ExperimentArgs {
    /// The plan: the file (or the shipped default) with the flags on top.
    pub fn plan(&self) -> Result<Plan> {
        let mut p = match &self.plan {
            Some(f) => Plan::load(f)?,
            None => Plan::from_toml(DEFAULT_PLAN, "plans/default.toml (built in)")?,
        };
        if let Some(g) = &self.governors {
            p.governors = g.clone();
        }
        if let Some(v) = &self.pinning {
            p.pinning = v.clone();
        }
        if let Some(v) = &self.noise {
            p.noise = v.clone();
        }
        if let Some(v) = self.repeats {
            p.repeats = v;
        }
        if let Some(v) = self.measure {
            p.measure_s = v.as_secs_f64();
        }
        if let Some(v) = self.warmup {
            p.warmup_s = v.as_secs_f64();
        }
        if self.rate.is_some() {
            p.rate = self.rate;
        }
        if self.slo.is_some() {
            p.slo = self.slo;
        }
        if self.fleet_load.is_some() {
            p.fleet_load_rps = self.fleet_load;
        }
        if let Some(v) = self.max_total {
            p.max_total_s = v.as_secs_f64();
        }
        if let Some(v) = self.on_failure {
            p.on_failure = v;
        }
        p.validate()?;
        Ok(p)
    }

    fn target(&self) -> Result<ServerTarget> {
        Ok(match (&self.url, self.pid, &self.server_cmd) {
            (None, None, None) => ServerTarget::Builtin,
            (Some(u), Some(pid), None) => ServerTarget::Running {
                url: u.clone(),
                pid,
            },
            (Some(u), None, Some(c)) => ServerTarget::Command {
                cmd: c.clone(),
                url: u.clone(),
            },
            (Some(_), None, None) => {
                bail!("--url needs --pid (a running server) or --server-cmd (a command to launch)")
            }
            _ => bail!("give --url with --pid, or --url with --server-cmd"),
        })
    }

    fn paths(&self) -> DocPaths {
        DocPaths {
            out_dir: self.out.clone(),
            baseline: self.baseline_doc.clone(),
            summary: self.summary_doc.clone(),
            unit: self.unit.clone(),
        }
    }
}

fn print_summary(r: &Results, written: &[PathBuf]) {
    println!(
        "tailprobe experiment: {} cells in {:.0} s{}",
        r.cells.len(),
        r.elapsed_s,
        if r.interrupted { " (interrupted)" } else { "" }
    );
    for c in &r.configs {
        match c.status {
            CellStatus::Ran => println!(
                "  {:<55} p95 {:>8} ms  p99 {:>8} ms  Δp95 {}",
                c.label,
                report_docs::fmt::est(&c.p95_ms, 2),
                report_docs::fmt::est(&c.p99_ms, 2),
                report_docs::fmt::delta(&c.delta_p95, " ms")
            ),
            s => println!(
                "  {:<55} {}: {}",
                c.label,
                s.words(),
                c.reason.as_deref().unwrap_or("")
            ),
        }
    }
    if let Some(cap) = &r.capacity {
        for row in &cap.rows {
            println!(
                "  capacity {:<46} {} req/s at p{} <= {} ms; N = {}, N+1 = {}",
                row.label,
                report_docs::fmt::opt(row.capacity_rps, 1),
                cap.slo_percentile,
                cap.slo_ms,
                row.replicas
                    .map(|x| x.to_string())
                    .unwrap_or_else(|| "–".into()),
                row.replicas_n1
                    .map(|x| x.to_string())
                    .unwrap_or_else(|| "–".into())
            );
        }
    }
    for w in written {
        println!("  wrote {}", w.display());
    }
}

pub fn main(args: &ExperimentArgs) -> Result<i32> {
    let paths = args.paths();
    if let Some(rj) = &args.render {
        let text =
            std::fs::read_to_string(rj).with_context(|| format!("reading {}", rj.display()))?;
        let mut r: Results =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", rj.display()))?;
        let written = report_docs::write_all(&mut r, &paths)?;
        print_summary(&r, &written);
        return Ok(super::exit::OK);
    }
    let plan = args.plan()?;
    let target = args.target()?;
    if let ServerTarget::Running { pid, .. } = &target {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            bail!("no process with pid {pid} (is the server running?)");
        }
    }
    // Bad output locations and broken markers are refused before anything runs.
    report_docs::precheck(&paths)?;
    privileges::require_root("tailprobe experiment")?;
    privileges::require_btf()?;
    signals::install().context("installing the Ctrl-C handler")?;
    let opts = ExperimentOptions {
        plan,
        target,
        out_dir: paths.out_dir.clone(),
        roots: crate::node::Roots::default(),
        journal: journal::resolve_path(args.journal.as_deref()),
        progress: std::io::stderr().is_terminal()
            || std::env::var_os("TAILPROBE_PROGRESS").is_some(),
        exe: std::env::current_exe().context("locating the tailprobe binary")?,
    };
    let mut r = runner::run(&opts)?;
    let written = report_docs::write_all(&mut r, &paths)?;
    print_summary(&r, &written);
    let failed = r.cells.iter().any(|c| c.status == CellStatus::Failed);
    Ok(if failed {
        super::exit::TARGET_EXITED
    } else {
        super::exit::OK
    })
}
