//! From cells to per-configuration figures with confidence over repeats,
//! deltas against the baseline, and the best measured configuration. Pure.

use super::{
    analysis::{
        bootstrap::{self, Comparison},
        stats::{delta, Estimate},
    },
    matrix::Config,
    results::{CellMetrics, CellResult, CellStatus, ConfigSummary, Effect, Percentiles},
};

/// Percentiles compared with the baseline, by metric name.
const PCTLS: [(&str, f64); 3] = [("p50_ms", 50.0), ("p95_ms", 95.0), ("p99_ms", 99.0)];

fn est(ms: &[&CellMetrics], f: impl Fn(&CellMetrics) -> f64) -> Option<Estimate> {
    let v: Vec<f64> = ms.iter().map(|m| f(m)).collect();
    Estimate::of(&v)
}

/// Per-request latencies of each counted repeat.
fn request_sets<'a>(ran: &[&'a CellMetrics]) -> Vec<&'a [f64]> {
    ran.iter()
        .map(|m| m.samples_ms.as_slice())
        .filter(|s| !s.is_empty())
        .collect()
}

fn percentiles(ran: &[&CellMetrics], resamples: usize, seed: u64) -> Option<Percentiles> {
    let sets = request_sets(ran);
    if sets.is_empty() {
        return None;
    }
    let ps: Vec<f64> = PCTLS.iter().map(|(_, p)| *p).collect();
    let mut d = bootstrap::draws(&sets, &ps, resamples, seed);
    let mut iv = |i: usize| {
        let est = bootstrap::pooled_percentile(&sets, ps[i])?;
        bootstrap::interval_of(est, &mut d[i])
    };
    Some(Percentiles {
        method: bootstrap::method(resamples, seed),
        repeats: sets.len(),
        requests: sets.iter().map(|s| s.len() as u64).sum(),
        p50_ms: iv(0),
        p95_ms: iv(1),
        p99_ms: iv(2),
    })
}

fn effect(
    metric: &str,
    c: Comparison,
    base: (usize, u64),
    me: (usize, u64),
    method: String,
) -> Effect {
    Effect {
        metric: metric.into(),
        baseline: c.baseline,
        value: c.value,
        ratio: c.ratio,
        method,
        outcome: c.outcome,
        direction: c.direction,
        repeats: (base.0, me.0),
        requests: (base.1, me.1),
        settle: c.settle,
    }
}

/// Effects of one configuration against the baseline.
fn effects(base: &[&CellMetrics], me: &[&CellMetrics], resamples: usize, seed: u64) -> Vec<Effect> {
    let (bs, ms) = (request_sets(base), request_sets(me));
    let n = |s: &[&[f64]]| (s.len(), s.iter().map(|x| x.len() as u64).sum::<u64>());
    let mut out = Vec::new();
    for (name, p) in PCTLS {
        if let Some(c) = bootstrap::compare(&bs, &ms, p, resamples, seed) {
            out.push(effect(
                name,
                c,
                n(&bs),
                n(&ms),
                bootstrap::method(resamples, seed),
            ));
        }
    }
    let tp = |v: &[&CellMetrics]| v.iter().map(|m| m.throughput_rps).collect::<Vec<f64>>();
    if let Some(c) = bootstrap::compare_means(&tp(base), &tp(me), resamples, seed) {
        let reqs = |v: &[&CellMetrics]| (v.len(), v.iter().map(|m| m.ok).sum::<u64>());
        out.push(effect(
            "throughput_rps",
            c,
            reqs(base),
            reqs(me),
            format!("bootstrap over repeats (mean of per-repeat throughput), {resamples} resamples, 95% percentile interval, seed {seed}"),
        ));
    }
    out
}

fn counted<'a>(cells: &'a [CellResult], cfg: &Config) -> Vec<&'a CellMetrics> {
    cells
        .iter()
        .filter(|c| &c.config == cfg && c.counts())
        .filter_map(|c| c.metrics.as_ref())
        .collect()
}

/// One summary per configuration, in first-run order. Only cells that
/// count (ran, measured, not excluded) enter the figures.
pub fn summarise(cells: &[CellResult], resamples: usize, seed: u64) -> Vec<ConfigSummary> {
    let mut order: Vec<Config> = Vec::new();
    for c in cells {
        if !order.contains(&c.config) {
            order.push(c.config.clone());
        }
    }
    let mut out: Vec<ConfigSummary> = order
        .iter()
        .map(|cfg| {
            let mine: Vec<&CellResult> = cells.iter().filter(|c| &c.config == cfg).collect();
            let ran = counted(cells, cfg);
            let excluded: Vec<&&CellResult> =
                mine.iter().filter(|c| c.excluded.is_some()).collect();
            let (status, reason) = if !ran.is_empty() {
                (CellStatus::Ran, None)
            } else if let Some(x) = excluded.first().and_then(|c| c.excluded.as_ref()) {
                (
                    CellStatus::Failed,
                    Some(format!(
                        "every run was kept out of the conclusions ({})",
                        x.reason
                    )),
                )
            } else {
                let first = mine
                    .iter()
                    .find(|c| c.status == CellStatus::NotApplicable)
                    .or_else(|| mine.iter().find(|c| c.status == CellStatus::Failed))
                    .or(mine.first());
                (
                    first.map(|c| c.status).unwrap_or(CellStatus::Skipped),
                    first.and_then(|c| c.reason.clone()),
                )
            };
            ConfigSummary {
                config: cfg.clone(),
                label: cfg.label(),
                status,
                reason,
                repeats: ran.len(),
                p50_ms: est(&ran, |m| m.latency_ms.p50),
                p95_ms: est(&ran, |m| m.latency_ms.p95),
                p99_ms: est(&ran, |m| m.latency_ms.p99),
                avg_ms: est(&ran, |m| m.latency_ms.avg),
                throughput_rps: est(&ran, |m| m.throughput_rps),
                runq_wait_ms: est(&ran, |m| m.runq_wait_ms),
                involuntary_switches: est(&ran, |m| m.involuntary_switches as f64),
                migrations: est(&ran, |m| m.migrations as f64),
                irq_stolen_ms: est(&ran, |m| m.irq_stolen_ms),
                page_faults: est(&ran, |m| m.page_faults as f64),
                remote_share: est(&ran, |m| m.remote_share.unwrap_or(f64::NAN)),
                delta_p95: None,
                delta_p99: None,
                delta_throughput: None,
                delta_runq: None,
                percentiles: percentiles(&ran, resamples, seed),
                effects: Vec::new(),
                excluded: excluded.len(),
            }
        })
        .collect();
    let base = out
        .iter()
        .find(|s| s.config.is_baseline() && s.status == CellStatus::Ran)
        .cloned();
    if let Some(b) = base {
        for s in out.iter_mut().filter(|s| s.status == CellStatus::Ran) {
            let d = |a: &Option<Estimate>, x: &Option<Estimate>| match (a, x) {
                (Some(a), Some(x)) => Some(delta(a, x)),
                _ => None,
            };
            s.delta_p95 = d(&b.p95_ms, &s.p95_ms);
            s.delta_p99 = d(&b.p99_ms, &s.p99_ms);
            s.delta_throughput = d(&b.throughput_rps, &s.throughput_rps);
            s.delta_runq = d(&b.runq_wait_ms, &s.runq_wait_ms);
            if s.config != b.config {
                s.effects = effects(
                    &counted(cells, &b.config),
                    &counted(cells, &s.config),
                    resamples,
                    seed,
                );
            }
        }
    }
    out
}

/// The best measured configuration without a noisy neighbour: lowest mean
/// p95 (noise is not something you configure).
pub fn best(configs: &[ConfigSummary]) -> Option<&ConfigSummary> {
    configs
        .iter()
        .filter(|c| c.status == CellStatus::Ran)
        .filter(|c| c.config.noise == super::plan::NoiseAxis::None)
        .filter(|c| c.p95_ms.is_some())
        .min_by(|a, b| {
            let pa = a.p95_ms.map(|e| e.mean).unwrap_or(f64::INFINITY);
            let pb = b.p95_ms.map(|e| e.mean).unwrap_or(f64::INFINITY);
            pa.total_cmp(&pb)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::{
        plan::{NoiseAxis, Pinning},
        results::Latency,
    };

    pub fn cell(cfg: &Config, repeat: u32, p95: f64, status: CellStatus) -> CellResult {
        CellResult {
            order: 0,
            repeat,
            config: cfg.clone(),
            label: cfg.label(),
            status,
            reason: (status != CellStatus::Ran).then(|| "one node".to_string()),
            placement: None,
            noise_cpus: None,
            notes: vec![],
            metrics: (status == CellStatus::Ran).then(|| CellMetrics {
                latency_ms: Latency {
                    p95,
                    ..Latency::default()
                },
                throughput_rps: 100.0,
                ..CellMetrics::default()
            }),
            raw: vec![],
            seconds: 1.0,
            excluded: None,
            rerun_of: None,
            restore: None,
        }
    }

    #[test]
    fn deltas_against_the_baseline() {
        let base = Config {
            governor: "current".into(),
            pinning: Pinning::Unpinned,
            noise: NoiseAxis::None,
        };
        let noisy = Config {
            noise: NoiseAxis::SameNode,
            ..base.clone()
        };
        let remote = Config {
            pinning: Pinning::Remote,
            ..base.clone()
        };
        let cells = vec![
            cell(&base, 0, 10.0, CellStatus::Ran),
            cell(&noisy, 0, 20.0, CellStatus::Ran),
            cell(&remote, 0, 0.0, CellStatus::NotApplicable),
            cell(&noisy, 1, 24.0, CellStatus::Ran),
            cell(&base, 1, 12.0, CellStatus::Ran),
            cell(&remote, 1, 0.0, CellStatus::NotApplicable),
        ];
        let s = summarise(&cells, 200, 7);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].p95_ms.unwrap().mean, 11.0);
        let d = s[1].delta_p95.unwrap();
        assert_eq!(d.diff, 11.0);
        assert!((d.pct.unwrap() - 100.0).abs() < 1e-9);
        assert_eq!(s[2].status, CellStatus::NotApplicable);
        assert_eq!(s[2].reason.as_deref(), Some("one node"));
        assert!(s[2].delta_p95.is_none());
        assert_eq!(best(&s).unwrap().config, base);
    }

    fn with_samples(mut c: CellResult, median: f64, n: usize) -> CellResult {
        let m = c.metrics.as_mut().unwrap();
        m.samples_ms = (0..n)
            .map(|i| median * (0.5 + (i as f64 / n as f64)))
            .collect();
        m.ok = n as u64;
        c
    }

    #[test]
    fn excluded_cells_stay_out_and_effects_use_the_requests() {
        let base = Config {
            governor: "current".into(),
            pinning: Pinning::Unpinned,
            noise: NoiseAxis::None,
        };
        let noisy = Config {
            noise: NoiseAxis::SameNode,
            ..base.clone()
        };
        let mut disturbed = with_samples(cell(&base, 2, 300.0, CellStatus::Ran), 300.0, 200);
        disturbed.excluded = Some(crate::experiment::results::Exclusion {
            reason: "disturbed by 42 hog (500 ms)".into(),
            rerun_by: None,
        });
        let cells = vec![
            with_samples(cell(&base, 0, 10.0, CellStatus::Ran), 10.0, 200),
            with_samples(cell(&noisy, 0, 30.0, CellStatus::Ran), 30.0, 200),
            with_samples(cell(&noisy, 1, 31.0, CellStatus::Ran), 31.0, 200),
            with_samples(cell(&base, 1, 11.0, CellStatus::Ran), 11.0, 200),
            disturbed,
        ];
        let s = summarise(&cells, 300, 7);
        assert_eq!(s[0].repeats, 2);
        assert_eq!(s[0].excluded, 1);
        assert_eq!(s[0].p95_ms.unwrap().mean, 10.5);
        let pc = s[0].percentiles.as_ref().unwrap();
        assert_eq!((pc.repeats, pc.requests), (2, 400));
        assert!(pc.p95_ms.unwrap().estimate < 20.0);
        assert!(s[0].effects.is_empty());
        let e = s[1].effects.iter().find(|e| e.metric == "p95_ms").unwrap();
        assert_eq!(e.outcome, crate::experiment::results::Outcome::Significant);
        assert_eq!(e.direction, crate::experiment::results::Direction::Higher);
        assert_eq!(e.repeats, (2, 2));
        assert!(s[1].effects.iter().any(|e| e.metric == "throughput_rps"));
    }
}
