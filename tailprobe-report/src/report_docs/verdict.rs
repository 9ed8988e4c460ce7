//! The conclusions layer: from the results to the effects the documents
//! state. Each effect carries its direction (slows / speeds up), its size
//! and its outcome (significant, within run-to-run noise, too little data),
//! and every sentence about it is produced here, so a document cannot say
//! "slows" about a number that went down. Pure.

use crate::experiment::{
    analysis::stats::{delta, Estimate},
    plan::{NoiseAxis, Pinning},
    results::{self, CellStatus, ConfigSummary, Results},
};

/// How an effect's outcome was decided when the results carry none for the
/// pair (a reference other than the baseline, or older results).
pub const WELCH: &str = "Welch t interval over the repeats' percentiles";

/// Effects smaller than this (in % of the reference) are not acted on,
/// even when significant.
pub const MATERIAL_PCT: f64 = 5.0;

/// What the data says about a difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The 95% interval of the difference excludes zero.
    Significant,
    /// The interval includes zero.
    WithinNoise,
    /// No interval: a side has fewer than two repeats.
    TooLittleData,
}

impl Outcome {
    pub fn words(self) -> &'static str {
        match self {
            Outcome::Significant => "significant",
            Outcome::WithinNoise => "within run-to-run noise",
            Outcome::TooLittleData => "too little data to tell",
        }
    }
}

/// Which way the latency moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Slower,
    Faster,
    Unchanged,
}

/// One configuration against its reference, on one latency percentile.
#[derive(Debug, Clone, PartialEq)]
pub struct Effect {
    pub label: String,
    pub reference: String,
    /// 50, 95 or 99.
    pub percentile: u32,
    pub from_ms: f64,
    pub to_ms: f64,
    /// (to - from) / from, in %; None when the reference is 0.
    pub pct: Option<f64>,
    pub outcome: Outcome,
    /// Repeats behind the reference and the configuration.
    pub repeats: (usize, usize),
    /// How the outcome was decided.
    pub method: String,
    /// What would settle an unsettled outcome, when the analysis said.
    pub settle: Option<String>,
}

impl Effect {
    pub fn direction(&self) -> Direction {
        if self.to_ms > self.from_ms {
            Direction::Slower
        } else if self.to_ms < self.from_ms {
            Direction::Faster
        } else {
            Direction::Unchanged
        }
    }

    fn material(&self) -> bool {
        self.outcome == Outcome::Significant && self.pct.is_some_and(|p| p.abs() >= MATERIAL_PCT)
    }

    /// Significant and at least `MATERIAL_PCT` slower.
    pub fn material_slowdown(&self) -> bool {
        self.material() && self.direction() == Direction::Slower
    }

    /// Significant and at least `MATERIAL_PCT` faster.
    pub fn material_gain(&self) -> bool {
        self.material() && self.direction() == Direction::Faster
    }

    /// "+288%" or "-19%" (one decimal below 10%).
    pub fn pct_words(&self) -> String {
        match self.pct {
            Some(p) if p.abs() < 10.0 => format!("{p:+.1}%"),
            Some(p) => format!("{p:+.0}%"),
            None => "no relative change (reference is 0)".into(),
        }
    }

    /// "slows the slowest 5% of answers from 10.5 to 40.7 ms (+288%,
    /// significant)"; the verb follows the numbers.
    pub fn sentence(&self) -> String {
        let verb = match self.direction() {
            Direction::Slower => "slows",
            Direction::Faster => "speeds up",
            Direction::Unchanged => "leaves unchanged",
        };
        format!(
            "{verb} {} from {} to {} ms ({}, {})",
            tail_words(self.percentile),
            ms(self.from_ms),
            ms(self.to_ms),
            self.pct_words(),
            self.outcome_words()
        )
    }

    /// The outcome, and for an unsettled one what would settle it.
    pub fn outcome_words(&self) -> String {
        match self.outcome {
            Outcome::Significant => "significant".into(),
            Outcome::WithinNoise => "within run-to-run noise".into(),
            Outcome::TooLittleData => format!(
                "too little data to tell: {} and {} repeat(s); needs {}",
                self.repeats.0,
                self.repeats.1,
                self.settle
                    .as_deref()
                    .unwrap_or("2 or more repeats of each configuration")
            ),
        }
    }
}

/// "12.3" below 100 ms, "412" above.
pub fn ms(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// "the slowest 5% of answers" for p95.
pub fn tail_words(p: u32) -> String {
    match p {
        50 => "the median answer".into(),
        p if p < 100 => format!("the slowest {}% of answers", 100 - p),
        _ => "the slowest answer".into(),
    }
}

/// The SLO percentile (95 unless the plan says 50 or 99).
pub fn slo_percentile(r: &Results) -> u32 {
    match r.plan.slo.map(|s| s.percentile.round() as u32) {
        Some(50) => 50,
        Some(99) => 99,
        _ => 95,
    }
}

/// The estimate of a percentile of a configuration.
pub fn pctl(c: &ConfigSummary, p: u32) -> Option<Estimate> {
    match p {
        50 => c.p50_ms,
        99 => c.p99_ms,
        _ => c.p95_ms,
    }
}

/// The analysis' own effect against the baseline (two-level bootstrap),
/// when the results carry one for this metric.
fn stored(reference: &ConfigSummary, c: &ConfigSummary, p: u32) -> Option<Effect> {
    if !reference.config.is_baseline() {
        return None;
    }
    let metric = format!("p{p}_ms");
    let e = c.effects.iter().find(|e| e.metric == metric)?;
    Some(Effect {
        label: c.label.clone(),
        reference: reference.label.clone(),
        percentile: p,
        from_ms: e.baseline,
        to_ms: e.value,
        pct: e
            .ratio
            .estimate
            .is_finite()
            .then_some(100.0 * (e.ratio.estimate - 1.0)),
        outcome: match e.outcome {
            results::Outcome::Significant => Outcome::Significant,
            results::Outcome::WithinNoise => Outcome::WithinNoise,
            results::Outcome::TooLittleData => Outcome::TooLittleData,
        },
        repeats: e.repeats,
        method: e.method.clone(),
        settle: e.settle.clone(),
    })
}

/// `c` against `reference` on percentile `p`; None when either was not
/// measured. The analysis' effect when there is one, else Welch.
pub fn compare(reference: &ConfigSummary, c: &ConfigSummary, p: u32) -> Option<Effect> {
    if reference.status != CellStatus::Ran || c.status != CellStatus::Ran {
        return None;
    }
    if let Some(e) = stored(reference, c, p) {
        return Some(e);
    }
    let (a, b) = (pctl(reference, p)?, pctl(c, p)?);
    let d = delta(&a, &b);
    // Significant only beyond the same run-to-run band as the analysis'
    // bootstrap (experiment::analysis::bootstrap::NOISE_BAND).
    let beyond = |ci: f64| {
        a.mean > 0.0
            && crate::experiment::analysis::bootstrap::beyond_band(
                (d.diff - ci + a.mean) / a.mean,
                (d.diff + ci + a.mean) / a.mean,
            )
    };
    let outcome = match d.ci95 {
        None => Outcome::TooLittleData,
        Some(ci) if d.significant && beyond(ci) => Outcome::Significant,
        Some(_) => Outcome::WithinNoise,
    };
    Some(Effect {
        label: c.label.clone(),
        reference: reference.label.clone(),
        percentile: p,
        from_ms: a.mean,
        to_ms: b.mean,
        pct: d.pct,
        outcome,
        repeats: (a.n, b.n),
        method: WELCH.into(),
        settle: None,
    })
}

fn find<'a>(r: &'a Results, g: &str, p: Pinning, n: NoiseAxis) -> Option<&'a ConfigSummary> {
    r.ran()
        .find(|c| c.config.governor == g && c.config.pinning == p && c.config.noise == n)
}

/// Each neighbour configuration against the same placement without noise.
pub fn neighbour_effects(r: &Results) -> Vec<Effect> {
    let p = slo_percentile(r);
    r.ran()
        .filter(|c| c.config.noise != NoiseAxis::None)
        .filter_map(|c| {
            let q = find(r, &c.config.governor, c.config.pinning, NoiseAxis::None)?;
            compare(q, c, p)
        })
        .collect()
}

/// The neighbour that slowed the tail most (by %), whatever its outcome.
pub fn worst_neighbour(r: &Results) -> Option<Effect> {
    neighbour_effects(r)
        .into_iter()
        .max_by(|a, b| a.pct.unwrap_or(0.0).total_cmp(&b.pct.unwrap_or(0.0)))
}

/// Changes one could apply (other placements, other governors), without a
/// neighbour, against the baseline.
pub fn tuning_effects(r: &Results) -> Vec<Effect> {
    let p = slo_percentile(r);
    let Some(b) = r.baseline() else {
        return Vec::new();
    };
    r.ran()
        .filter(|c| c.config.noise == NoiseAxis::None && !c.config.is_baseline())
        .filter_map(|c| compare(b, c, p))
        .collect()
}

/// The largest significant gain of at least `MATERIAL_PCT`, if any.
pub fn best_gain(r: &Results) -> Option<Effect> {
    tuning_effects(r)
        .into_iter()
        .filter(Effect::material_gain)
        .min_by(|a, b| a.pct.unwrap_or(0.0).total_cmp(&b.pct.unwrap_or(0.0)))
}

/// Pinned to the local node (governor as found, no noise) vs the baseline.
pub fn pinning_effect(r: &Results) -> Option<Effect> {
    let b = r.baseline()?;
    let l = find(r, "current", Pinning::Local, NoiseAxis::None)?;
    compare(b, l, slo_percentile(r))
}

/// The average and the tail of the same pair, when the tail moved more
/// than the average in the same (slower) direction, both significant:
/// the only case in which "the average hides the damage" is true.
pub fn average_hides_tail(r: &Results, e: &Effect) -> Option<(Effect, Effect)> {
    let a = r.ran().find(|c| c.label == e.reference)?;
    let b = r.ran().find(|c| c.label == e.label)?;
    let avg = compare_avg(a, b)?;
    let p99 = compare(a, b, 99)?;
    let (pa, pt) = (avg.pct?, p99.pct?);
    let hides = avg.direction() == Direction::Slower
        && p99.direction() == Direction::Slower
        && p99.outcome == Outcome::Significant
        && pt > pa;
    hides.then_some((avg, p99))
}

fn compare_avg(a: &ConfigSummary, b: &ConfigSummary) -> Option<Effect> {
    let (x, y) = (a.avg_ms?, b.avg_ms?);
    let d = delta(&x, &y);
    Some(Effect {
        label: b.label.clone(),
        reference: a.label.clone(),
        percentile: 0,
        from_ms: x.mean,
        to_ms: y.mean,
        pct: d.pct,
        outcome: match d.ci95 {
            None => Outcome::TooLittleData,
            Some(_) if d.significant => Outcome::Significant,
            Some(_) => Outcome::WithinNoise,
        },
        repeats: (x.n, y.n),
        method: WELCH.into(),
        settle: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report_docs::testkit::{recorded, set_p95};

    #[test]
    fn direction_follows_the_numbers() {
        let mut r = recorded();
        let e = worst_neighbour(&r).unwrap();
        assert_eq!(e.direction(), Direction::Slower);
        assert!(e
            .sentence()
            .starts_with("slows the slowest 5% of answers from 10.5 to 40.7 ms"));
        assert!(e.material_slowdown());
        // A neighbour that speeds things up: the verb flips.
        set_p95(
            &mut r,
            "governor as found / unpinned / noise same node",
            &[6.0, 6.2, 6.1],
        );
        set_p95(
            &mut r,
            "governor as found / pinned local / noise same node",
            &[6.0, 6.2, 6.1],
        );
        let e = neighbour_effects(&r)
            .into_iter()
            .find(|e| e.label.contains("unpinned"))
            .unwrap();
        assert_eq!(e.direction(), Direction::Faster);
        assert!(e.sentence().starts_with("speeds up"), "{}", e.sentence());
        assert!(!e.sentence().contains("slows"));
        assert!(!e.material_slowdown());
        assert!(e.material_gain());
    }

    #[test]
    fn one_repeat_is_too_little_data() {
        let mut r = recorded();
        set_p95(&mut r, "governor as found / unpinned / no noise", &[10.0]);
        let e = pinning_effect(&r).unwrap();
        assert_eq!(e.outcome, Outcome::TooLittleData);
        assert!(e
            .sentence()
            .contains("too little data to tell: 1 and 3 repeat(s)"));
        assert!(!e.material_gain() && !e.material_slowdown());
    }

    #[test]
    fn average_hides_tail_only_when_it_does() {
        let r = recorded();
        let e = worst_neighbour(&r).unwrap();
        assert!(average_hides_tail(&r, &e).is_some());
        // The case: the average went down while the text claimed it
        // hid the damage. Average falls: no such sentence.
        let mut r2 = recorded();
        for c in r2.configs.iter_mut() {
            if c.label == e.label {
                c.avg_ms = Estimate::of(&[3.0, 3.1, 2.9]);
            }
        }
        assert!(average_hides_tail(&r2, &e).is_none());
    }
}
