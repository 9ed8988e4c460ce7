//! From cells to per-configuration figures with confidence over repeats,
//! deltas against the baseline, and the best measured configuration. Pure.

use super::{
    analysis::stats::{delta, Estimate},
    matrix::Config,
    results::{CellMetrics, CellResult, CellStatus, ConfigSummary},
};

fn est(ms: &[&CellMetrics], f: impl Fn(&CellMetrics) -> f64) -> Option<Estimate> {
    let v: Vec<f64> = ms.iter().map(|m| f(m)).collect();
    Estimate::of(&v)
}

/// One summary per configuration, in first-run order.
pub fn summarise(cells: &[CellResult]) -> Vec<ConfigSummary> {
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
            let ran: Vec<&CellMetrics> = mine
                .iter()
                .filter(|c| c.status == CellStatus::Ran)
                .filter_map(|c| c.metrics.as_ref())
                .collect();
            let (status, reason) = if !ran.is_empty() {
                (CellStatus::Ran, None)
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
                percentiles: None,
                effects: Vec::new(),
                excluded: 0,
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
        let s = summarise(&cells);
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
}
