//! After the cells: the capacity search over configurations, then the
//! per-configuration figures, attribution, correlation and the results.

use super::{sweep, Cells, Runner, ServerTarget};
use crate::{
    experiment::{
        analysis::{attribution::TailSplit, bootstrap, capacity, correlate, gap},
        matrix::Config,
        results::*,
        summarise,
    },
    node::inventory,
    signals,
};

const EXACT: &str = "exact: kernel events of the serving thread inside each request (built-in server's request log)";
const WINDOW: &str = "time window: process-wide kernel signals while each request was in flight (the server does not say which thread served a request)";

impl Runner<'_> {
    /// Seconds to keep for the capacity search.
    pub(super) fn search_reserve_s(&self, configs: &[Config]) -> f64 {
        let p = self.plan();
        if p.sweep.is_empty() || p.slo.is_none() {
            return 0.0;
        }
        let n = configs
            .iter()
            .filter(|c| self.facts.applicable(c, p).is_ok())
            .count();
        n as f64 * ((p.sweep.len() + 3) as f64 * sweep::step_s(p.sweep_s) + 2.0)
    }

    /// Capacity of every runnable configuration at the SLO.
    pub(super) fn capacity(
        &self,
        configs: &[Config],
        base_rps: f64,
        stopped: bool,
        notes: &mut Vec<String>,
    ) -> Option<CapacityResult> {
        let p = self.plan();
        let slo = p.slo?;
        if p.sweep.is_empty() {
            return None;
        }
        let mut rows = Vec::new();
        let mut cnotes = Vec::new();
        for cfg in configs
            .iter()
            .filter(|c| self.facts.applicable(c, p).is_ok())
        {
            let left = p.max_total_s - self.elapsed();
            let need = 2.0 * sweep::step_s(p.sweep_s) + 2.0;
            if stopped || signals::stop_requested() || left < need {
                cnotes.push(format!(
                    "{}: search not run ({})",
                    cfg.label(),
                    if left < need { "time bound" } else { "stopped" }
                ));
                continue;
            }
            self.say(&format!("capacity search: {}", cfg.label()));
            match self.search(cfg, slo, base_rps, p.max_total_s) {
                Ok(row) => {
                    self.say(&format!(
                        "  {} after {} rates{}",
                        row.capacity_rps
                            .map_or("no capacity".into(), |c| format!("{c:.1} req/s")),
                        row.points.len(),
                        row.refused
                            .as_ref()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    ));
                    rows.push(row);
                }
                Err(e) => cnotes.push(format!("{}: search failed ({e})", cfg.label())),
            }
        }
        if rows.is_empty() && cnotes.is_empty() {
            notes.push("no configuration could be searched for capacity".into());
        }
        let bi = rows.iter().position(|row| {
            configs
                .iter()
                .any(|c| c.is_baseline() && c.label() == row.label)
        });
        Some(CapacityResult {
            slo_percentile: slo.percentile,
            slo_ms: slo.e2e_ms,
            fleet_load_rps: p.fleet_load_rps,
            headroom: p.headroom,
            rows: capacity::fleet(rows, bi, p.fleet_load_rps, p.headroom),
            notes: cnotes,
            resolution_pct: Some(p.capacity_resolution * 100.0),
            method: Some(format!(
                "coarse ramp over {:?} of the calibrated throughput ({base_rps:.1} requests/s), continued x1.25 while the SLO holds, then bisection until the bracket is within +-{:.0}% of its middle; capacity = the highest rate that met p{} <= {} ms with every lower rate meeting it; at most {} rates, {} s each",
                p.sweep,
                p.capacity_resolution * 100.0,
                slo.percentile,
                slo.e2e_ms,
                sweep::MAX_STEPS,
                p.sweep_s
            )),
        })
    }

    fn target_info(&self) -> TargetInfo {
        let p = self.plan();
        match &self.o.target {
            ServerTarget::Builtin => TargetInfo {
                kind: "built-in server".into(),
                description: format!(
                    "tailprobe serve, {} workers, model {}x{}x{}, launched per cell",
                    self.workers(),
                    p.server.hidden,
                    p.server.hidden,
                    p.server.layers
                ),
                exact_attribution: true,
            },
            ServerTarget::Running { url, pid } => TargetInfo {
                kind: "running server".into(),
                description: format!("{url} (pid {pid}), re-pinned per cell"),
                exact_attribution: false,
            },
            ServerTarget::Command { cmd, url } => TargetInfo {
                kind: "server command".into(),
                description: format!("`{cmd}` launched per cell, load on {url}"),
                exact_attribution: false,
            },
        }
    }

    pub(super) fn finish(
        &self,
        st: Cells,
        capacity: Option<CapacityResult>,
        calibration: Calibration,
        started_unix: u64,
        inv: &inventory::Inventory,
    ) -> Results {
        let p = self.plan();
        let configs = summarise::summarise(&st.cells, bootstrap::RESAMPLES, p.seed);
        let exact = self.o.target == ServerTarget::Builtin;
        let attribution = attribution_of(&st.cells, &configs, exact);
        let restore_failed = st
            .cells
            .iter()
            .any(|c| c.restore.as_ref().is_some_and(|r| !r.complete));
        let mut notes = st.notes;
        let excluded = st.cells.iter().filter(|c| c.excluded.is_some()).count();
        if excluded > 0 {
            notes.push(format!(
                "{excluded} cell(s) disturbed by processes outside the experiment were kept out of the conclusions"
            ));
        }
        Results {
            version: VERSION,
            tool_version: env!("CARGO_PKG_VERSION").into(),
            started_unix,
            elapsed_s: self.elapsed(),
            interrupted: signals::stop_requested(),
            plan: p.clone(),
            node: super::node_info(&self.facts, inv, &self.o.roots),
            target: self.target_info(),
            calibration: Some(calibration),
            correlation: correlation_of(&st.data),
            cells: st.cells,
            configs,
            attribution,
            capacity,
            dropin: None,
            plots: Vec::new(),
            notes,
            restore_failed,
        }
    }
}

/// Per configuration, the tail split of its median-p95 counted repeat, and
/// the gap in ms.
fn attribution_of(
    cells: &[CellResult],
    configs: &[ConfigSummary],
    exact: bool,
) -> Option<AttributionResult> {
    let per: Vec<(String, TailSplit)> = configs
        .iter()
        .filter_map(|c| {
            let mut ts: Vec<&CellMetrics> = cells
                .iter()
                .filter(|x| x.config == c.config && x.counts())
                .filter_map(|x| x.metrics.as_ref())
                .filter(|m| m.tail.is_some())
                .collect();
            ts.sort_by(|a, b| a.latency_ms.p95.total_cmp(&b.latency_ms.p95));
            let m = ts.get(ts.len() / 2)?;
            Some((c.label.clone(), m.tail.clone()?))
        })
        .collect();
    let gaps = per
        .iter()
        .filter_map(|(l, t)| Some((l.clone(), gap::of(t, exact, gap::MIN_SHARE_PCT)?)))
        .collect();
    (!per.is_empty()).then(|| AttributionResult {
        method: if exact { EXACT } else { WINDOW }.into(),
        per_config: per,
        gaps,
    })
}

fn correlation_of(data: &[(Config, super::CellData)]) -> Option<CorrelationResult> {
    let mut flights = Vec::new();
    let mut sig = Vec::new();
    let mut bflights = Vec::new();
    let mut bsig = Vec::new();
    for (cfg, d) in data {
        let s = correlate::per_request(&d.flights, &d.windows);
        if cfg.is_baseline() {
            bflights.extend_from_slice(&d.flights);
            bsig.extend_from_slice(&s);
        }
        flights.extend_from_slice(&d.flights);
        sig.extend(s);
    }
    if flights.is_empty() {
        return None;
    }
    Some(CorrelationResult {
        method: "Spearman rank correlation of each request's latency (end - intended) with the server's kernel signals per unit of its time in flight (times as a share of it, counts per ms; from the 10 ms windows it was in flight, overlap-weighted), CLOCK_MONOTONIC on both sides; a signal is named only when it is a time that explains at least 10% of the slow-vs-typical gap".into(),
        cells: data.len(),
        pooled: correlate::correlate(&flights, &sig),
        baseline: if bflights.is_empty() {
            Vec::new()
        } else {
            correlate::correlate(&bflights, &bsig)
        },
    })
}
