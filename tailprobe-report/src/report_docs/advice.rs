//! Risk level and recommendations, from measured, significant effects
//! only. A recommendation carries the effect it rests on; "no change
//! recommended" is a valid outcome. Pure.

use super::{
    verdict::{self, ms, pctl, slo_percentile, Effect, MATERIAL_PCT},
    why,
};
use crate::experiment::{
    plan::{NoiseAxis, Pinning},
    results::Results,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Nothing to judge: no baseline run counts (not run, or excluded).
    NotAssessed,
    Low,
    Medium,
    High,
}

impl Level {
    pub fn words(self) -> &'static str {
        match self {
            Level::NotAssessed => {
                "not assessed (no baseline run counts toward the conclusions, so there is nothing to compare)"
            }
            Level::Low => "Low",
            Level::Medium => "Medium",
            Level::High => "High",
        }
    }
}

/// The rule, as printed in the document.
pub const RULE: &str = "High when the SLO percentile was missed in every baseline repeat, when a neighbour's significant slowdown takes the configuration past the SLO in every repeat, or when device locality is unknown on a multi-socket host with accelerators; Medium when a neighbour significantly slows the tail by 5% or more, or a configuration significantly speeds it up by 5% or more and is not what the node runs now; Low otherwise. Effects within run-to-run noise, or with too little data to tell, never raise the level.";

#[derive(Debug, Clone, PartialEq)]
pub struct Risk {
    pub level: Level,
    /// Why, one sentence per trigger (empty for Low).
    pub because: Vec<String>,
}

/// The lowest repeat of a configuration's SLO percentile above the SLO.
fn missed_every_repeat(r: &Results, label: &str) -> Option<(f64, f64)> {
    let slo = r.plan.slo?;
    let c = r.ran().find(|c| c.label == label)?;
    let e = pctl(c, slo_percentile(r))?;
    (e.min > slo.e2e_ms).then_some((e.min, slo.e2e_ms))
}

pub fn risk(r: &Results) -> Risk {
    if r.baseline().is_none() {
        return Risk {
            level: Level::NotAssessed,
            because: Vec::new(),
        };
    }
    let mut high = Vec::new();
    let mut medium = Vec::new();
    let p = slo_percentile(r);
    if r.node.nodes.len() > 1 && r.node.accelerators > 0 && r.node.facts.device_local_node.is_none()
    {
        high.push("device locality is unknown on a multi-socket host (the accelerators report no NUMA node)".to_string());
    }
    if let Some(b) = r.baseline() {
        if let Some((min, slo)) = missed_every_repeat(r, &b.label) {
            high.push(format!("the SLO (p{p} <= {} ms) was missed in every baseline repeat (the best repeat reached {} ms)", ms(slo), ms(min)));
        }
    }
    for e in verdict::neighbour_effects(r) {
        if !e.material_slowdown() {
            continue;
        }
        match missed_every_repeat(r, &e.label) {
            Some((min, slo)) => high.push(format!(
                "with a neighbour ({}) the SLO (p{p} <= {} ms) was missed in every repeat (best {} ms)",
                e.label,
                ms(slo),
                ms(min)
            )),
            None => medium.push(format!("a neighbour ({}) {}", e.label, e.sentence())),
        }
    }
    if let Some(g) = verdict::best_gain(r) {
        medium.push(format!(
            "{} {}, and it is not what the node runs now",
            g.label,
            g.sentence()
        ));
    }
    match (high.is_empty(), medium.is_empty()) {
        (false, _) => Risk {
            level: Level::High,
            because: high,
        },
        (true, false) => Risk {
            level: Level::Medium,
            because: medium,
        },
        (true, true) => Risk {
            level: Level::Low,
            because: Vec::new(),
        },
    }
}

/// One recommendation and the measurement behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    pub action: String,
    pub evidence: String,
}

/// The pinned configuration to persist: a significant gain of a placement.
pub fn placement_to_persist(r: &Results) -> Option<Effect> {
    verdict::best_gain(r).filter(|g| {
        r.ran().any(|c| {
            c.label == g.label
                && c.config.pinning != Pinning::Unpinned
                && c.config.noise == NoiseAxis::None
        })
    })
}

pub fn recommendations(r: &Results, dropin_link: Option<&str>) -> Vec<Recommendation> {
    let mut out = Vec::new();
    if let Some(e) = verdict::neighbour_effects(r)
        .into_iter()
        .filter(Effect::material_slowdown)
        .max_by(|a, b| a.pct.unwrap_or(0.0).total_cmp(&b.pct.unwrap_or(0.0)))
    {
        out.push(Recommendation {
            action: "Keep CPU-heavy batch work off the inference server's CPUs (a dedicated cpuset or node for the server).".into(),
            evidence: format!("a neighbour ({}) {}", e.label, e.sentence()),
        });
    }
    if let Some(g) = verdict::best_gain(r) {
        let persist = placement_to_persist(r).is_some();
        out.push(Recommendation {
            action: format!(
                "Run the server as `{}`{}.",
                g.label,
                match (persist, dropin_link) {
                    (true, Some(l)) =>
                        format!(" and persist it with the systemd drop-in [{l}]({l})"),
                    (true, None) => " and persist it (systemd CPUAffinity= / NUMAPolicy=)".into(),
                    (false, _) => String::new(),
                }
            ),
            evidence: format!("against the baseline it {}", g.sentence()),
        });
    }
    if let Some(g) = why::headline(r) {
        if let Some(irq) = g.share_of("interrupt work").filter(|s| *s >= g.min_share) {
            out.push(Recommendation {
                action: "Move device interrupts off the server's CPUs (`tailprobe irq watch --irq-move-off CPUS`, then persist in irqbalance's banned CPUs).".into(),
                evidence: format!("interrupt work is {irq:.0}% of the gap between the slowest 5% and typical requests ({} ms)", ms(g.gap_ms)),
            });
        }
        if let Some(rq) = g
            .share_of("waiting for a CPU")
            .filter(|s| *s >= g.min_share)
        {
            out.push(Recommendation {
                action: "Alert on the server threads' run-queue wait rather than on average CPU utilisation.".into(),
                evidence: format!("waiting for a CPU is {rq:.0}% of the gap between the slowest 5% and typical requests ({} ms)", ms(g.gap_ms)),
            });
        }
    }
    out
}

/// The sentence printed when there is no recommendation, with what would
/// settle the open questions.
pub fn no_change(r: &Results) -> String {
    if r.baseline().is_none() {
        return "None: no baseline run counts toward the conclusions, so no effect was measured."
            .into();
    }
    let unsettled: Vec<Effect> = verdict::neighbour_effects(r)
        .into_iter()
        .chain(verdict::tuning_effects(r))
        .filter(|e| e.outcome != verdict::Outcome::Significant)
        .filter(|e| e.pct.is_some_and(|p| p.abs() >= MATERIAL_PCT))
        .collect();
    let mut s = "No change recommended: no configuration measured a significant change of 5% or more in the tail.".to_string();
    if !unsettled.is_empty() {
        s.push_str(&format!(
            " Not settled by this run: {}. More repeats or longer cells would settle them.",
            unsettled
                .iter()
                .map(|e| format!("{} ({}, {})", e.label, e.pct_words(), e.outcome.words()))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report_docs::testkit::{all_within_noise, recorded, set_p95};

    #[test]
    fn recorded_run_is_medium_from_the_neighbour() {
        let r = recorded();
        let k = risk(&r);
        assert_eq!(k.level, Level::Medium);
        assert!(
            k.because[0].contains(
                "slows the slowest 5% of answers from 10.5 to 40.7 ms (+288%, significant)"
            ),
            "{:?}",
            k.because
        );
        let recs = recommendations(&r, None);
        assert_eq!(recs.len(), 1, "{recs:?}");
        assert!(recs[0].action.starts_with("Keep CPU-heavy batch work off"));
        // No placement is persisted: pinning was within noise.
        assert!(placement_to_persist(&r).is_none());
        assert!(recs.iter().all(|x| !x.evidence.contains("+0.0%")));
    }

    #[test]
    fn within_noise_everything_is_low_with_no_recommendation() {
        let mut r = recorded();
        all_within_noise(&mut r);
        let k = risk(&r);
        assert_eq!(k.level, Level::Low);
        assert!(k.because.is_empty());
        assert!(recommendations(&r, Some("x.conf")).is_empty());
        assert!(no_change(&r).starts_with("No change recommended"));
    }

    #[test]
    fn significant_gain_from_pinning_is_recommended_and_persisted() {
        let mut r = recorded();
        set_p95(
            &mut r,
            "governor as found / pinned local / no noise",
            &[7.0, 7.2, 7.1],
        );
        let k = risk(&r);
        assert_eq!(k.level, Level::Medium);
        let recs = recommendations(&r, Some("d.conf"));
        let pin = recs
            .iter()
            .find(|x| x.action.contains("pinned local"))
            .unwrap();
        assert!(pin.action.contains("[d.conf](d.conf)"));
        assert!(
            pin.evidence.contains(
                "speeds up the slowest 5% of answers from 10.5 to 7.10 ms (-32%, significant)"
            ),
            "{}",
            pin.evidence
        );
        assert!(placement_to_persist(&r).is_some());
    }

    #[test]
    fn slo_missed_in_every_baseline_repeat_is_high() {
        let mut r = recorded();
        set_p95(
            &mut r,
            "governor as found / unpinned / no noise",
            &[60.0, 70.0, 65.0],
        );
        let k = risk(&r);
        assert_eq!(k.level, Level::High);
        assert!(
            k.because[0]
                .contains("missed in every baseline repeat (the best repeat reached 60.0 ms)"),
            "{:?}",
            k.because
        );
        // One disturbed repeat (300 ms) next to two that meet the SLO is
        // not "missed in every repeat".
        set_p95(
            &mut r,
            "governor as found / unpinned / no noise",
            &[300.0, 33.0, 20.0],
        );
        assert!(risk(&r)
            .because
            .iter()
            .all(|b| !b.contains("baseline repeat")));
    }

    #[test]
    fn one_repeat_never_raises_the_level() {
        let mut r = recorded();
        for l in [
            "governor as found / unpinned / no noise",
            "governor as found / unpinned / noise same node",
            "governor as found / pinned local / no noise",
            "governor as found / pinned local / noise same node",
        ] {
            let v = r
                .configs
                .iter()
                .find(|c| c.label == l)
                .unwrap()
                .p95_ms
                .unwrap()
                .mean;
            set_p95(&mut r, l, &[v]);
        }
        assert_eq!(risk(&r).level, Level::Low);
        assert!(recommendations(&r, None).is_empty());
        let s = no_change(&r);
        assert!(s.contains("too little data to tell"), "{s}");
    }
}
