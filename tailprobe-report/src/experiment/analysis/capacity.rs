//! Capacity at an SLO and the replicas a fleet needs (N vs N+1). Pure.
//!
//! The capacity of one replica is the highest offered rate at which the SLO
//! percentile still holds, with every lower rate holding too (a rate that
//! passes above a failing one is noise, not capacity). Replicas needed =
//! ceil(peak load / (capacity x headroom)); N+1 adds one for a failure.

use serde::{Deserialize, Serialize};

/// One step of a rate sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    pub offered_rps: f64,
    pub achieved_rps: f64,
    /// The SLO percentile of end-to-end latency from the intended time, ms.
    pub pctl_ms: f64,
    pub errors: u64,
    /// Requests the percentile rests on (measured, complete).
    #[serde(default)]
    pub samples: u64,
    /// Answers cut short or empty.
    #[serde(default)]
    pub incomplete: u64,
    /// `ramp` or `bisect`.
    #[serde(default)]
    pub phase: String,
}

impl SweepPoint {
    pub fn passes(&self, slo_ms: f64) -> bool {
        self.errors == 0 && self.pctl_ms <= slo_ms
    }

    /// Incomplete answers as a share of the answers and failures.
    pub fn incomplete_share(&self) -> f64 {
        let n = self.samples + self.incomplete + self.errors;
        if n == 0 {
            0.0
        } else {
            self.incomplete as f64 / n as f64
        }
    }
}

/// How the capacity of one configuration is searched.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPlan {
    /// Coarse ramp, requests/s, ascending.
    pub ramp: Vec<f64>,
    /// Past the ramp, each step offers this much more while the SLO holds.
    pub growth: f64,
    /// Stop when the bracket is within this share either side of its middle.
    pub resolution: f64,
    pub max_steps: usize,
    /// Incomplete answers above this share refuse the configuration.
    pub max_incomplete: f64,
}

/// What the search does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Probe { rate: f64, phase: &'static str },
    Done(SearchEnd),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchEnd {
    /// The bracket is within the resolution.
    Found,
    /// Even the lowest rate tried failed.
    BelowLowest,
    /// Out of steps before the bracket closed (or before anything failed).
    OutOfSteps,
    /// Answers incomplete above the threshold.
    TooIncomplete,
}

/// Highest passing rate below the lowest failing one, and that failing one.
pub fn bracket(points: &[SweepPoint], slo_ms: f64) -> (Option<f64>, Option<f64>) {
    let fail = points
        .iter()
        .filter(|p| !p.passes(slo_ms))
        .map(|p| p.offered_rps)
        .min_by(f64::total_cmp);
    let pass = points
        .iter()
        .filter(|p| p.passes(slo_ms) && fail.is_none_or(|f| p.offered_rps < f))
        .map(|p| p.offered_rps)
        .max_by(f64::total_cmp);
    (pass, fail)
}

/// The next rate to offer, from the points measured so far.
pub fn next_step(points: &[SweepPoint], slo_ms: f64, plan: &SearchPlan) -> Step {
    if points
        .iter()
        .any(|p| p.incomplete_share() > plan.max_incomplete)
    {
        return Step::Done(SearchEnd::TooIncomplete);
    }
    let (pass, fail) = bracket(points, slo_ms);
    if let (Some(p), Some(f)) = (pass, fail) {
        if (f - p) / (f + p) <= plan.resolution {
            return Step::Done(SearchEnd::Found);
        }
    }
    if points.len() >= plan.max_steps {
        return Step::Done(SearchEnd::OutOfSteps);
    }
    let highest = points.iter().map(|p| p.offered_rps).max_by(f64::total_cmp);
    let lowest = points.iter().map(|p| p.offered_rps).min_by(f64::total_cmp);
    match (pass, fail) {
        (_, None) => {
            let next = plan
                .ramp
                .iter()
                .copied()
                .find(|r| highest.is_none_or(|h| *r > h))
                .or_else(|| highest.map(|h| h * plan.growth));
            match next {
                Some(rate) => Step::Probe {
                    rate,
                    phase: "ramp",
                },
                None => Step::Done(SearchEnd::OutOfSteps),
            }
        }
        (None, Some(_)) => {
            let floor = plan.ramp.first().copied().unwrap_or(1.0) / 8.0;
            match lowest {
                Some(l) if l / 2.0 >= floor => Step::Probe {
                    rate: l / 2.0,
                    phase: "ramp down",
                },
                _ => Step::Done(SearchEnd::BelowLowest),
            }
        }
        (Some(p), Some(f)) => Step::Probe {
            rate: (p + f) / 2.0,
            phase: "bisect",
        },
    }
}

/// Highest offered rate that passes with all lower rates passing.
pub fn capacity(points: &[SweepPoint], slo_ms: f64) -> Option<f64> {
    let mut p: Vec<&SweepPoint> = points.iter().collect();
    p.sort_by(|a, b| a.offered_rps.total_cmp(&b.offered_rps));
    let mut best = None;
    for x in p {
        if !x.passes(slo_ms) {
            break;
        }
        best = Some(x.offered_rps);
    }
    best
}

/// Replicas for `fleet_rps` at `capacity_rps` each, using `headroom` of it.
pub fn replicas(fleet_rps: f64, capacity_rps: f64, headroom: f64) -> Option<u64> {
    let per = capacity_rps * headroom;
    if per <= 0.0 || !per.is_finite() || fleet_rps <= 0.0 {
        return None;
    }
    Some((fleet_rps / per - 1e-9).ceil().max(1.0) as u64)
}

/// Capacity and fleet size of one configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityRow {
    pub label: String,
    pub capacity_rps: Option<f64>,
    /// N: replicas for the fleet load.
    pub replicas: Option<u64>,
    /// N + 1: one more to survive a failure.
    pub replicas_n1: Option<u64>,
    /// Replicas saved against the worst configuration (N+1).
    pub saved_vs_worst: Option<u64>,
    /// capacity / baseline capacity.
    pub ratio_vs_baseline: Option<f64>,
    pub points: Vec<SweepPoint>,
    /// The search's bracket: highest rate that passed, lowest that failed.
    #[serde(default)]
    pub passed_rps: Option<f64>,
    #[serde(default)]
    pub failed_rps: Option<f64>,
    /// Why no capacity was reported (answers incomplete, time bound...).
    #[serde(default)]
    pub refused: Option<String>,
}

/// Fill in replicas, savings and ratios. `rows[baseline]` is the reference.
pub fn fleet(
    mut rows: Vec<CapacityRow>,
    baseline: Option<usize>,
    fleet_rps: Option<f64>,
    headroom: f64,
) -> Vec<CapacityRow> {
    let base = baseline
        .and_then(|b| rows.get(b))
        .and_then(|r| r.capacity_rps);
    for r in rows.iter_mut() {
        if let (Some(f), Some(c)) = (fleet_rps, r.capacity_rps) {
            r.replicas = replicas(f, c, headroom);
            r.replicas_n1 = r.replicas.map(|n| n + 1);
        }
        r.ratio_vs_baseline = match (r.capacity_rps, base) {
            (Some(c), Some(b)) if b > 0.0 => Some(c / b),
            _ => None,
        };
    }
    let worst = rows.iter().filter_map(|r| r.replicas_n1).max();
    for r in rows.iter_mut() {
        r.saved_vs_worst = match (worst, r.replicas_n1) {
            (Some(w), Some(n)) => Some(w - n),
            _ => None,
        };
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(rate: f64, p: f64) -> SweepPoint {
        SweepPoint {
            offered_rps: rate,
            achieved_rps: rate,
            pctl_ms: p,
            errors: 0,
            samples: 100,
            incomplete: 0,
            phase: "ramp".into(),
        }
    }

    #[test]
    fn capacity_is_the_last_passing_rate_before_a_failure() {
        let pts = [
            pt(40.0, 10.0),
            pt(80.0, 20.0),
            pt(60.0, 15.0),
            pt(100.0, 80.0),
            pt(120.0, 30.0),
        ];
        assert_eq!(capacity(&pts, 50.0), Some(80.0));
        assert_eq!(capacity(&pts, 5.0), None);
        let mut e = pt(60.0, 15.0);
        e.errors = 1;
        assert_eq!(
            capacity(&[pt(40.0, 10.0), e, pt(80.0, 20.0)], 50.0),
            Some(40.0)
        );
    }

    fn plan() -> SearchPlan {
        SearchPlan {
            ramp: vec![30.0, 50.0, 70.0, 90.0],
            growth: 1.25,
            resolution: 0.05,
            max_steps: 14,
            max_incomplete: 0.01,
        }
    }

    /// A server whose p95 is 10 ms up to `cap` req/s and 500 ms beyond.
    fn search(cap: f64) -> (Vec<SweepPoint>, Step) {
        let mut pts: Vec<SweepPoint> = Vec::new();
        loop {
            match next_step(&pts, 50.0, &plan()) {
                Step::Probe { rate, phase } => {
                    let mut p = pt(rate, if rate <= cap { 10.0 } else { 500.0 });
                    p.phase = phase.into();
                    pts.push(p);
                }
                done => return (pts, done),
            }
        }
    }

    #[test]
    fn ramp_then_bisection_to_the_resolution() {
        for cap in [37.0, 64.0, 81.0, 88.0, 140.0] {
            let (pts, end) = search(cap);
            assert_eq!(end, Step::Done(SearchEnd::Found), "cap {cap}: {pts:?}");
            let (p, f) = bracket(&pts, 50.0);
            let (p, f) = (p.unwrap(), f.unwrap());
            assert!(p <= cap && cap < f, "cap {cap}: [{p}, {f}]");
            assert!((f - p) / (f + p) <= 0.05, "cap {cap}: [{p}, {f}]");
            assert_eq!(capacity(&pts, 50.0), Some(p));
            assert!(pts.iter().any(|x| x.phase == "bisect"), "{pts:?}");
        }
        // Two configurations 10% apart get different capacities (the old
        // four-point sweep gave both 70).
        let a = capacity(&search(75.0).0, 50.0).unwrap();
        let b = capacity(&search(83.0).0, 50.0).unwrap();
        assert!(b > a, "{a} {b}");
    }

    #[test]
    fn below_the_lowest_rate_and_incomplete_answers_end_the_search() {
        let (pts, end) = search(2.0);
        assert_eq!(end, Step::Done(SearchEnd::BelowLowest), "{pts:?}");
        assert_eq!(capacity(&pts, 50.0), None);
        let mut cut = pt(30.0, 10.0);
        cut.incomplete = 5;
        assert_eq!(
            next_step(&[cut], 50.0, &plan()),
            Step::Done(SearchEnd::TooIncomplete)
        );
        // A pass above a failure is noise, not the bracket.
        let pts = [pt(30.0, 10.0), pt(50.0, 90.0), pt(70.0, 10.0)];
        assert_eq!(bracket(&pts, 50.0), (Some(30.0), Some(50.0)));
    }

    #[test]
    fn replicas_n_vs_n_plus_one() {
        // 1000 rps at 100 rps x 0.8 = 80 per replica: 12.5 -> 13; N+1 = 14.
        assert_eq!(replicas(1000.0, 100.0, 0.8), Some(13));
        // exact fit does not round up
        assert_eq!(replicas(800.0, 100.0, 0.8), Some(10));
        assert_eq!(replicas(1000.0, 0.0, 0.8), None);
        let rows = vec![
            CapacityRow {
                label: "base".into(),
                capacity_rps: Some(100.0),
                replicas: None,
                replicas_n1: None,
                saved_vs_worst: None,
                ratio_vs_baseline: None,
                points: vec![],
                passed_rps: None,
                failed_rps: None,
                refused: None,
            },
            CapacityRow {
                label: "noisy".into(),
                capacity_rps: Some(50.0),
                replicas: None,
                replicas_n1: None,
                saved_vs_worst: None,
                ratio_vs_baseline: None,
                points: vec![],
                passed_rps: None,
                failed_rps: None,
                refused: None,
            },
            CapacityRow {
                label: "none".into(),
                capacity_rps: None,
                replicas: None,
                replicas_n1: None,
                saved_vs_worst: None,
                ratio_vs_baseline: None,
                points: vec![],
                passed_rps: None,
                failed_rps: None,
                refused: None,
            },
        ];
        let r = fleet(rows, Some(0), Some(1000.0), 0.8);
        assert_eq!((r[0].replicas, r[0].replicas_n1), (Some(13), Some(14)));
        assert_eq!((r[1].replicas, r[1].replicas_n1), (Some(25), Some(26)));
        assert_eq!(r[0].saved_vs_worst, Some(12));
        assert_eq!(r[1].saved_vs_worst, Some(0));
        assert_eq!(r[1].ratio_vs_baseline, Some(0.5));
        assert_eq!(r[2].replicas, None);
    }
}
