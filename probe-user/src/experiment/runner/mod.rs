//! Running the matrix on the node: calibration (which also checks the
//! server's answers), the cells in alternating rounds (more rounds while a
//! target interval is not met; a disturbed cell kept out of the
//! conclusions and re-run once), the capacity search, and the results.
//!
//! Orchestration only: the figures come from pure functions
//! (`experiment::metrics`, `analysis::*`, `schedule`, `summarise`).
//!
//! - `node`: what this node offers.
//! - `server`: the server of a cell, the request, calibration.
//! - `cell`: one cell on the node.
//! - `sweep`: the capacity search of one configuration.
//! - `finish`: capacity over configurations, attribution, results.

mod cell;
mod finish;
mod node;
mod server;
mod sweep;

use std::{path::PathBuf, time::Instant};

use anyhow::{Context as _, Result};

pub use self::{
    node::{node_facts, node_info},
    server::{answers_problem, cell_problem, request_spec},
};
use super::{
    analysis::{
        bootstrap,
        correlate::{Flight, WindowSignals},
    },
    matrix::{self, CellSpec, Config, NodeFacts},
    plan::{OnFailure, Plan},
    results::*,
    schedule, summarise,
};
use crate::{load::RequestSpec, node::Roots, signals};

/// What the experiment runs against.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerTarget {
    /// `tailprobe serve`, launched per cell (pinning applies at launch).
    Builtin,
    /// A server that is already running: its URL and pid (pinning re-pins
    /// its threads through the journal).
    Running { url: String, pid: u32 },
    /// A command that starts the server, launched per cell; `url` is where
    /// it answers once up.
    Command { cmd: String, url: String },
}

#[derive(Debug, Clone)]
pub struct ExperimentOptions {
    pub plan: Plan,
    pub target: ServerTarget,
    /// results.json, plots, per-cell raw snapshots.
    pub out_dir: PathBuf,
    pub roots: Roots,
    pub journal: PathBuf,
    pub progress: bool,
    /// The tailprobe binary (runs the built-in server).
    pub exe: PathBuf,
}

struct Runner<'a> {
    o: &'a ExperimentOptions,
    facts: NodeFacts,
    started: Instant,
    tmp: PathBuf,
    /// Offered rate of every cell.
    rate: f64,
    /// The request every cell sends (model resolved at calibration).
    request: RequestSpec,
}

/// Everything a finished cell hands to the analysis, beside its metrics.
#[derive(Default)]
struct CellData {
    flights: Vec<Flight>,
    windows: Vec<WindowSignals>,
}

/// The cells so far.
#[derive(Default)]
struct Cells {
    cells: Vec<CellResult>,
    /// Analysis data of the cells that count.
    data: Vec<(Config, CellData)>,
    /// Why the remaining cells are not run.
    stopped: Option<String>,
    notes: Vec<String>,
}

fn est_cell_s(p: &Plan) -> f64 {
    p.warmup_s + p.measure_s + 2.5
}

fn new_cell(spec: &CellSpec) -> CellResult {
    CellResult {
        order: spec.order,
        repeat: spec.repeat,
        config: spec.config.clone(),
        label: spec.config.label(),
        status: CellStatus::Ran,
        reason: None,
        placement: None,
        noise_cpus: None,
        notes: Vec::new(),
        metrics: None,
        raw: Vec::new(),
        seconds: 0.0,
        excluded: None,
        rerun_of: None,
        restore: None,
    }
}

impl Runner<'_> {
    fn plan(&self) -> &Plan {
        &self.o.plan
    }

    fn say(&self, msg: &str) {
        if self.o.progress {
            eprintln!("[{:>5.1} s] {msg}", self.started.elapsed().as_secs_f64());
        }
    }

    fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Calibration: the model, the server's answers, the offered rate.
    fn calibration(&mut self) -> Result<(Calibration, f64)> {
        let p = self.o.plan.clone();
        self.say("calibrating: closed loop on the baseline for 2.5 s");
        let closed = self
            .calibrate()
            .context("calibrating against the baseline")?;
        self.rate = p.rate.unwrap_or((closed * p.load_fraction).max(1.0));
        let model = match (&self.request.model, self.request.api.is_openai()) {
            (_, false) => String::new(),
            (crate::load::ModelChoice::Discovered(m), _) => {
                format!("; model {m} (discovered with GET /v1/models)")
            }
            (crate::load::ModelChoice::Given(m), _) => format!("; model {m} (given)"),
            _ => "; model from the body template".into(),
        };
        let how = match p.rate {
            Some(x) => format!("{x} requests/s from the plan{model}"),
            None => format!(
                "{:.0}% of the closed-loop throughput of the baseline ({closed:.1} requests/s with {} connections){model}",
                p.load_fraction * 100.0,
                self.connections()
            ),
        };
        self.say(&format!("offered rate {:.1} requests/s{model}", self.rate));
        Ok((
            Calibration {
                closed_loop_rps: Some(closed),
                offered_rps: self.rate,
                how,
            },
            closed,
        ))
    }

    /// Run `spec` (or record why not) and push the cell; returns its index
    /// when it ran and was disturbed enough to re-run.
    fn one(
        &self,
        mut spec: CellSpec,
        st: &mut Cells,
        end_s: f64,
        rerun_of: Option<usize>,
    ) -> Option<usize> {
        let p = self.plan();
        spec.order = st.cells.len();
        let mut cell = new_cell(&spec);
        cell.rerun_of = rerun_of;
        if let Err(why) = self.facts.applicable(&spec.config, p) {
            if spec.repeat < p.repeats {
                cell.status = CellStatus::NotApplicable;
                cell.reason = Some(why);
                st.cells.push(cell);
            }
            return None;
        }
        if let Some(s) = &st.stopped {
            cell.status = CellStatus::Skipped;
            cell.reason = Some(s.clone());
            st.cells.push(cell);
            return None;
        }
        if self.elapsed() + est_cell_s(p) > end_s {
            cell.status = CellStatus::Skipped;
            cell.reason = Some(format!(
                "time bound: max_total_s = {} would be exceeded",
                p.max_total_s
            ));
            st.cells.push(cell);
            return None;
        }
        self.say(&format!(
            "cell {}: {} (repeat {}{})",
            spec.order,
            cell.label,
            spec.repeat + 1,
            if rerun_of.is_some() { ", re-run" } else { "" }
        ));
        let t = Instant::now();
        let mut d = CellData::default();
        let res = self.cell(&spec, &mut cell, &mut d);
        cell.seconds = t.elapsed().as_secs_f64();
        match res {
            Ok(()) => self.judge(&mut cell, d, st),
            Err(why) if signals::stop_requested() => {
                cell.status = CellStatus::Skipped;
                cell.reason = Some(format!("interrupted by Ctrl-C ({why})"));
                st.stopped = Some("not run: interrupted by Ctrl-C".into());
            }
            Err(why) => {
                self.say(&format!("  failed: {why}"));
                cell.status = CellStatus::Failed;
                cell.reason = Some(why);
                if p.on_failure == OnFailure::Stop {
                    st.stopped =
                        Some("not run: an earlier cell failed and on_failure = stop".into());
                }
            }
        }
        let rerun = schedule::wants_rerun(p, &cell);
        st.cells.push(cell);
        rerun.then_some(st.cells.len() - 1)
    }

    /// Say what a cell measured; keep a disturbed one out of the conclusions.
    fn judge(&self, cell: &mut CellResult, d: CellData, st: &mut Cells) {
        let Some(m) = &cell.metrics else {
            return;
        };
        self.say(&format!(
            "  p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, {:.1} req/s, run-queue wait {:.1} ms",
            m.latency_ms.p50, m.latency_ms.p95, m.latency_ms.p99, m.throughput_rps, m.runq_wait_ms
        ));
        match m.interference.as_ref().and_then(|i| i.disturbed.as_ref()) {
            Some(dist) => {
                self.say(&format!("  {}: kept out of the conclusions", dist.text));
                cell.excluded = Some(Exclusion {
                    reason: format!(
                        "{} (threshold {:.0} ms: {})",
                        dist.text,
                        m.interference.as_ref().map_or(0.0, |i| i.threshold_ms),
                        m.interference
                            .as_ref()
                            .map_or(String::new(), |i| i.threshold_rule.clone())
                    ),
                    rerun_by: None,
                });
            }
            None => st.data.push((cell.config.clone(), d)),
        }
    }

    /// Rounds of cells until the plan's repeats (and target interval) are
    /// met, or the time bound or Ctrl-C comes first.
    fn run_cells(&self, configs: &[Config], end_s: f64, st: &mut Cells) {
        let p = self.plan();
        let runnable = configs
            .iter()
            .filter(|c| self.facts.applicable(c, p).is_ok())
            .count();
        let mut round = 0u32;
        loop {
            let mut reruns = Vec::new();
            for spec in schedule::round(configs, round, st.cells.len()) {
                reruns.extend(self.one(spec, st, end_s, None));
            }
            for i in reruns {
                let orig = &st.cells[i];
                let spec = CellSpec {
                    order: 0,
                    repeat: orig.repeat,
                    config: orig.config.clone(),
                };
                let order = orig.order;
                let before = st.cells.len();
                self.one(spec, st, end_s, Some(order));
                let by = st
                    .cells
                    .get(before)
                    .filter(|c| c.status == CellStatus::Ran)
                    .map(|c| c.order);
                if let (Some(by), Some(x)) = (by, st.cells[i].excluded.as_mut()) {
                    x.rerun_by = Some(by);
                }
            }
            round += 1;
            if st.stopped.is_some() || signals::stop_requested() {
                break;
            }
            let sums = if p.target_interval.is_some() && round >= p.repeats {
                summarise::summarise(&st.cells, bootstrap::RESAMPLES, p.seed)
            } else {
                Vec::new()
            };
            if let Some(why) = schedule::enough(p, round, &sums) {
                if p.target_interval.is_some() {
                    st.notes.push(format!("adaptive repeats: {why}"));
                }
                break;
            }
            if round >= p.repeats && self.elapsed() + runnable as f64 * est_cell_s(p) > end_s {
                st.notes.push(format!(
                    "adaptive repeats: the time bound came after {round} repeats, before the target interval"
                ));
                break;
            }
        }
    }
}

/// Run the whole experiment; what finished is returned also after Ctrl-C.
pub fn run(o: &ExperimentOptions) -> Result<Results> {
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (facts, inv) = node_facts(&o.roots);
    facts.check_plan(&o.plan)?;
    let request = request_spec(&o.plan, &o.target)?;
    // A private directory (random name, mode 0700, created by us): another
    // user cannot plant it or the files in it beforehand.
    let tmp_guard = crate::node::fsx::private_temp_dir("tailprobe-experiment-")
        .context("creating a private temporary directory")?;
    let mut r = Runner {
        o,
        facts: facts.clone(),
        started: Instant::now(),
        tmp: tmp_guard.path().to_path_buf(),
        rate: o.plan.rate.unwrap_or(0.0),
        request,
    };
    let p = &o.plan;
    let (calibration, closed) = r.calibration()?;
    let configs = matrix::configs(p);
    let search_s = r.search_reserve_s(&configs);
    let end_s = p.max_total_s - search_s.min(p.max_total_s / 3.0);
    let mut st = Cells::default();
    r.run_cells(&configs, end_s, &mut st);
    let capacity = r.capacity(&configs, closed, st.stopped.is_some(), &mut st.notes);
    drop(tmp_guard);
    Ok(r.finish(st, capacity, calibration, started_unix, &inv))
}
