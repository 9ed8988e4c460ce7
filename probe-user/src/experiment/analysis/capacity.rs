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
