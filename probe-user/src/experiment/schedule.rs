//! Which cells run next: rounds of every configuration in alternating
//! order, more rounds while a target interval is not met (adaptive
//! repeats), and one re-run of a disturbed cell. Pure.

use super::{
    matrix::{CellSpec, Config},
    plan::Plan,
    results::{CellResult, CellStatus, ConfigSummary},
};

/// Round `round` of `configs`: forward on even rounds, backward on odd
/// ones, so a drift over time does not line up with one configuration.
pub fn round(configs: &[Config], round: u32, first_order: usize) -> Vec<CellSpec> {
    let idx: Vec<usize> = if round.is_multiple_of(2) {
        (0..configs.len()).collect()
    } else {
        (0..configs.len()).rev().collect()
    };
    idx.into_iter()
        .enumerate()
        .map(|(k, i)| CellSpec {
            order: first_order + k,
            repeat: round,
            config: configs[i].clone(),
        })
        .collect()
}

/// The p95 interval's half-width as a share of its estimate.
pub fn p95_width(c: &ConfigSummary) -> Option<f64> {
    let iv = c.percentiles.as_ref()?.p95_ms?;
    (iv.estimate > 0.0).then(|| (iv.hi - iv.lo) / 2.0 / iv.estimate)
}

/// Why no further round is needed after `rounds` rounds (None: run one
/// more). `configs` summarises what ran so far.
pub fn enough(plan: &Plan, rounds: u32, configs: &[ConfigSummary]) -> Option<String> {
    if rounds < plan.repeats {
        return None;
    }
    let Some(target) = plan.target_interval else {
        return Some(format!("{rounds} repeats as planned"));
    };
    let ran: Vec<&ConfigSummary> = configs
        .iter()
        .filter(|c| c.status == CellStatus::Ran)
        .collect();
    let widest = ran
        .iter()
        .map(|c| p95_width(c).unwrap_or(f64::INFINITY))
        .fold(0.0, f64::max);
    if !ran.is_empty() && widest <= target {
        return Some(format!(
            "after {rounds} repeats every configuration's p95 interval is within +-{:.1}% (target +-{:.1}%)",
            widest * 100.0,
            target * 100.0
        ));
    }
    if rounds >= plan.max_repeats {
        return Some(format!(
            "max_repeats ({}) reached before the target interval (+-{:.1}%; widest +-{:.1}%)",
            plan.max_repeats,
            target * 100.0,
            widest * 100.0
        ));
    }
    None
}

/// A disturbed cell that is not itself a re-run is re-run once.
pub fn wants_rerun(plan: &Plan, cell: &CellResult) -> bool {
    plan.rerun_disturbed
        && cell.rerun_of.is_none()
        && cell
            .metrics
            .as_ref()
            .and_then(|m| m.interference.as_ref())
            .is_some_and(|i| i.disturbed.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::{
        plan::{NoiseAxis, Pinning},
        results::{Interval, Percentiles},
    };

    fn cfg(noise: NoiseAxis) -> Config {
        Config {
            governor: "current".into(),
            pinning: Pinning::Unpinned,
            noise,
        }
    }

    fn summary(width: Option<f64>) -> ConfigSummary {
        let mut s: ConfigSummary = serde_json::from_value(serde_json::json!({
            "config": {"governor": "current", "pinning": "unpinned", "noise": "none"},
            "label": "x", "status": "ran", "reason": null, "repeats": 2,
            "p50_ms": null, "p95_ms": null, "p99_ms": null, "avg_ms": null,
            "throughput_rps": null, "runq_wait_ms": null, "involuntary_switches": null,
            "migrations": null, "irq_stolen_ms": null, "page_faults": null,
            "remote_share": null, "delta_p95": null, "delta_p99": null,
            "delta_throughput": null, "delta_runq": null
        }))
        .unwrap();
        s.percentiles = width.map(|w| Percentiles {
            method: "m".into(),
            repeats: 2,
            requests: 100,
            p50_ms: None,
            p95_ms: Some(Interval {
                estimate: 10.0,
                lo: 10.0 - 10.0 * w,
                hi: 10.0 + 10.0 * w,
                level: 0.95,
            }),
            p99_ms: None,
        });
        s
    }

    #[test]
    fn rounds_alternate_and_number_on() {
        let cs = [cfg(NoiseAxis::None), cfg(NoiseAxis::SameNode)];
        let r0 = round(&cs, 0, 0);
        let r1 = round(&cs, 1, 2);
        assert_eq!(r0[0].config, cs[0]);
        assert_eq!(r1[0].config, cs[1]);
        assert_eq!((r1[0].order, r1[1].order, r1[1].repeat), (2, 3, 1));
    }

    #[test]
    fn adaptive_repeats_stop_at_the_target_or_the_cap() {
        let mut p = Plan {
            repeats: 2,
            ..Plan::default()
        };
        assert!(enough(&p, 1, &[summary(Some(0.01))]).is_none());
        assert!(
            enough(&p, 2, &[summary(Some(0.5))]).is_some(),
            "no target: planned repeats"
        );
        p.target_interval = Some(0.1);
        p.max_repeats = 4;
        assert!(enough(&p, 2, &[summary(Some(0.05)), summary(Some(0.2))]).is_none());
        assert!(enough(&p, 3, &[summary(None)]).is_none(), "no interval yet");
        let done = enough(&p, 3, &[summary(Some(0.05)), summary(Some(0.08))]).unwrap();
        assert!(done.contains("within +-8.0%"), "{done}");
        let capped = enough(&p, 4, &[summary(Some(0.3))]).unwrap();
        assert!(capped.contains("max_repeats (4)"), "{capped}");
    }
}
