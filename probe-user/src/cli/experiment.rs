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

/// Exit code when a cell could not put the node back completely.
pub const RESTORE_FAILED: i32 = 4;

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
/// restoring and still writes what finished. Needs root (CAP_BPF,
/// CAP_PERFMON, CAP_SYS_NICE, CAP_DAC_OVERRIDE; docs/security.md).
///
/// The request is the same in calibration and every cell: --api, --model
/// (default: the first id of GET /v1/models, said in the output), --body or
/// --data, --header, --prompt-tokens, --max-tokens, --no-stream. A server
/// that answers errors or rejects the model stops the experiment at
/// calibration, quoting its answer; answers incomplete above 1% refuse a
/// cell or a capacity.
///
/// Exit codes: 0 success, 1 error (nothing changed when it is bad input:
/// unwritable output, unknown governor, a CPU that does not exist, broken
/// document markers, a bad plan value), 2 bad usage, 3 some cells failed,
/// 4 the node could not be put back completely after a cell (the results
/// and stderr say which knob).
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
    /// Peak load of the whole fleet in requests/s (for N vs N+1; without
    /// it the documents give per-server capacity and ratios only).
    #[arg(long)]
    pub fleet_load: Option<f64>,
    /// Capacity search resolution: stop when the bracket is within this
    /// share either side of its middle (0.05: +-5%).
    #[arg(long)]
    pub capacity_resolution: Option<f64>,
    /// Adaptive repeats: add rounds until every configuration's p95
    /// interval is within this share either side (0.1: +-10%), up to
    /// --max-repeats or the time bound.
    #[arg(long)]
    pub target_interval: Option<f64>,
    /// Most repeats adaptive repeats may reach.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_repeats: Option<u32>,
    /// The API the requests speak [default: from --url's path; the built-in
    /// server: completions].
    #[arg(long, value_parser = ["completions", "chat", "embeddings", "plain"])]
    pub api: Option<String>,
    /// Model name to ask for [default: the first id GET /v1/models lists].
    #[arg(long)]
    pub model: Option<String>,
    /// Request body template from a file ("{{id}}": request number).
    #[arg(long, value_name = "FILE", conflicts_with = "data")]
    pub body: Option<PathBuf>,
    /// Request body template given inline.
    #[arg(long)]
    pub data: Option<String>,
    /// Extra request header, "Name: value" (repeatable).
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Prompt length in words (generated body).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub prompt_tokens: Option<u32>,
    /// max_tokens of each request (generated body).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_tokens: Option<u32>,
    /// Ask for non-streamed answers.
    #[arg(long)]
    pub no_stream: bool,
    /// Do not send "ignore_eos" / "min_tokens" (for servers that reject
    /// unknown fields).
    #[arg(long)]
    pub no_ignore_eos: bool,
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
    /// Container of the running server at --url (docker, containerd,
    /// CRI-O or podman id, or a unique prefix): its main process (the one
    /// whose parent is outside the container) is recorded, as with --pid.
    #[arg(long, value_name = "ID", requires = "url", conflicts_with_all = ["server_cmd", "pid", "pod"])]
    pub container: Option<String>,
    /// Kubernetes pod (UID or a unique prefix) of the running server at
    /// --url: its main process (the one with the most threads among the
    /// pod's processes whose parent is outside the pod) is recorded.
    #[arg(long, value_name = "UID", requires = "url", conflicts_with_all = ["server_cmd", "pid"])]
    pub pod: Option<String>,
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
        if let Some(v) = self.capacity_resolution {
            p.capacity_resolution = v;
        }
        if self.target_interval.is_some() {
            p.target_interval = self.target_interval;
        }
        if let Some(v) = self.max_repeats {
            p.max_repeats = v;
        }
        if p.max_repeats < p.repeats {
            p.max_repeats = p.repeats;
        }
        self.request_into(&mut p);
        p.validate()?;
        Ok(p)
    }

    fn request_into(&self, p: &mut Plan) {
        let r = &mut p.request;
        if self.api.is_some() {
            r.api = self.api.clone();
        }
        if self.model.is_some() {
            r.model = self.model.clone();
        }
        if let Some(b) = &self.body {
            r.body_file = Some(b.display().to_string());
            r.data = None;
        }
        if self.data.is_some() {
            r.data = self.data.clone();
            r.body_file = None;
        }
        r.headers.extend(self.headers.iter().cloned());
        if self.no_stream {
            r.stream = false;
        }
        if self.no_ignore_eos {
            r.ignore_eos = false;
        }
        if let Some(v) = self.prompt_tokens {
            p.prompt_tokens = v;
        }
        if let Some(v) = self.max_tokens {
            p.max_tokens = v;
        }
    }

    /// The server's pid: --pid, or the main process of --container / --pod.
    fn server_pid(&self) -> Result<Option<u32>> {
        if self.pid.is_some() || (self.container.is_none() && self.pod.is_none()) {
            return Ok(self.pid);
        }
        let group = super::target_args::TargetArgs {
            container: self.container.clone(),
            pod: self.pod.clone(),
            ..Default::default()
        };
        let proc = crate::procfs::ProcFs::default();
        let (pids, what) = group.processes(&proc)?;
        let pid = super::target_args::main_process(&proc, &pids)
            .with_context(|| format!("{what} has no running process"))?;
        eprintln!(
            "tailprobe: the server is {what}: recording its main process, pid {pid} ({} process(es) in it)",
            pids.len()
        );
        Ok(Some(pid))
    }

    fn target(&self) -> Result<ServerTarget> {
        Ok(match (&self.url, self.server_pid()?, &self.server_cmd) {
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
                bail!("--url needs --pid, --container or --pod (a running server) or --server-cmd (a command to launch)")
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

/// The console summary: one line per configuration that ran or failed,
/// configurations this node cannot run collapsed to one line per reason,
/// capacity (N vs N+1 only when a fleet load was given), excluded cells,
/// notes and the files written. Written through `out::` (no panic on a
/// full disk).
fn print_summary(r: &Results, written: &[PathBuf]) -> Result<()> {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "tailprobe experiment: {} cells in {:.0} s{}",
        r.cells.len(),
        r.elapsed_s,
        if r.interrupted { " (interrupted)" } else { "" }
    );
    let mut not_applicable: Vec<(String, usize)> = Vec::new();
    for c in &r.configs {
        match c.status {
            CellStatus::Ran => {
                let _ = writeln!(
                    o,
                    "  {:<55} p95 {} ms  vs baseline: {}",
                    c.label,
                    c.percentiles
                        .as_ref()
                        .and_then(|x| x.p95_ms)
                        .map(|i| format!("{:.2} [{:.2}, {:.2}]", i.estimate, i.lo, i.hi))
                        .unwrap_or_else(|| "not measured".into()),
                    effect_words(c.effects.iter().find(|e| e.metric == "p95_ms"))
                );
            }
            CellStatus::NotApplicable => {
                let reason = c.reason.clone().unwrap_or_default();
                match not_applicable.iter_mut().find(|(r, _)| *r == reason) {
                    Some((_, n)) => *n += 1,
                    None => not_applicable.push((reason, 1)),
                }
            }
            s => {
                let _ = writeln!(
                    o,
                    "  {:<55} {}: {}",
                    c.label,
                    s.words(),
                    c.reason.as_deref().unwrap_or("")
                );
            }
        }
    }
    for (reason, n) in &not_applicable {
        let _ = writeln!(
            o,
            "  not applicable on this node ({n} configuration{}): {reason}",
            if *n == 1 { "" } else { "s" }
        );
    }
    if let Some(cap) = &r.capacity {
        for row in &cap.rows {
            let fleet = match (row.replicas, row.replicas_n1) {
                (Some(n), Some(n1)) => format!("; N = {n}, N+1 = {n1}"),
                _ => String::new(),
            };
            let _ = writeln!(
                o,
                "  capacity {:<46} {} req/s at p{} <= {} ms{fleet}",
                row.label,
                report_docs::fmt::opt(row.capacity_rps, 1),
                cap.slo_percentile,
                cap.slo_ms,
            );
        }
    }
    for c in r.excluded() {
        let _ = writeln!(
            o,
            "  excluded cell {} ({}, repeat {}): {}{}",
            c.order,
            c.label,
            c.repeat + 1,
            c.excluded.as_ref().map_or("", |x| x.reason.as_str()),
            c.excluded
                .as_ref()
                .and_then(|x| x.rerun_by)
                .map(|o| format!("; re-run as cell {o}"))
                .unwrap_or_default()
        );
    }
    for c in &r.cells {
        if let Some(rr) = c.restore.as_ref().filter(|x| !x.complete) {
            eprintln!(
                "tailprobe experiment: cell {} ({}): the node was not put back completely: {}",
                c.order,
                c.label,
                rr.failures.join("; ")
            );
        }
    }
    for n in &r.notes {
        let _ = writeln!(o, "  note: {n}");
    }
    for w in written {
        let _ = writeln!(o, "  wrote {}", w.display());
    }
    crate::out::print_str(&o)
}

fn effect_words(e: Option<&crate::experiment::results::Effect>) -> String {
    use crate::experiment::results::Outcome;
    let Some(e) = e else {
        return "(this is the baseline, or no comparison)".into();
    };
    let what = match e.outcome {
        Outcome::Significant => "significant",
        Outcome::WithinNoise => "within run-to-run noise",
        Outcome::TooLittleData => "too little data to tell",
    };
    format!(
        "x{:.2} [{:.2}, {:.2}] {what}",
        e.ratio.estimate, e.ratio.lo, e.ratio.hi
    )
}

/// Documents with broken markers are refused before anything is created
/// (not even the output directory).
fn check_markers(paths: &DocPaths) -> Result<()> {
    for d in [&paths.baseline, &paths.summary] {
        match std::fs::read_to_string(d) {
            Ok(text) => {
                report_docs::markers::spans(&text).with_context(|| {
                    format!(
                        "{} has broken tailprobe markers; fix them (or move the file away) and run again — nothing was changed or created",
                        d.display()
                    )
                })?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", d.display())),
        }
    }
    Ok(())
}

pub fn main(args: &ExperimentArgs) -> Result<i32> {
    let paths = args.paths();
    check_markers(&paths)?;
    if let Some(rj) = &args.render {
        let text =
            std::fs::read_to_string(rj).with_context(|| format!("reading {}", rj.display()))?;
        let mut r: Results =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", rj.display()))?;
        let written = report_docs::write_all(&mut r, &paths)?;
        print_summary(&r, &written)?;
        return Ok(super::exit::OK);
    }
    let plan = args.plan()?;
    let target = args.target()?;
    if let ServerTarget::Running { pid, .. } = &target {
        if !crate::procfs::ProcFs::default().exists(*pid) {
            bail!("no process with pid {pid} (is the server running?)");
        }
    }
    // Bad output locations and broken markers are refused before anything runs.
    report_docs::precheck(&paths)?;
    // Probes on every cell, pinning the server's threads, and the node's
    // root-owned knobs (governor, IRQ affinity) and journal.
    let mut need = privileges::bpf_caps();
    need.extend([privileges::Cap::SysNice, privileges::Cap::DacOverride]);
    privileges::require("tailprobe experiment", &need)?;
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
    print_summary(&r, &written)?;
    let failed = r.cells.iter().any(|c| c.status == CellStatus::Failed);
    Ok(if r.restore_failed {
        RESTORE_FAILED
    } else if failed {
        super::exit::TARGET_EXITED
    } else {
        super::exit::OK
    })
}
