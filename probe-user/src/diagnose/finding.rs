//! A finding (one named cause, with its evidence and advice), how findings
//! are ranked, and the diagnosis as a whole.
//!
//! Ranking: every detector states the target's time lost to its cause in
//! thread-milliseconds (`impact_ns`, summed over the target's threads, over
//! the recording). Findings are ranked by it, longest first; ties go to the
//! more certain finding.

use serde::Serialize;

/// How sure a detector is that its cause is real and matters.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

impl Confidence {
    pub fn word(self) -> &'static str {
        match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        }
    }

    /// `High` at or above `high` times the threshold, `Medium` at or above
    /// `medium` times, else `Low` (the value already passed its threshold).
    pub fn from_margin(value_over_threshold: f64, medium: f64, high: f64) -> Confidence {
        if value_over_threshold >= high {
            Confidence::High
        } else if value_over_threshold >= medium {
            Confidence::Medium
        } else {
            Confidence::Low
        }
    }
}

/// One number of a finding's evidence.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Evidence {
    /// Stable key, e.g. `wait_share_pct`.
    pub key: &'static str,
    pub value: f64,
    /// The sentence shown to a person, with the number in it.
    pub text: String,
}

/// A cause the evidence supports above its detector's threshold.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Finding {
    /// Detector id: preemption, saturated_thread, cfs_throttling,
    /// stop_the_world, irq, ...
    pub detector: &'static str,
    /// One line: what is happening.
    pub what: String,
    pub confidence: Confidence,
    /// The target's thread-time lost to this cause (ranking key).
    pub impact_ns: u64,
    pub evidence: Vec<Evidence>,
    /// What to do about it.
    pub advice: String,
}

impl Finding {
    pub fn evidence(&mut self, key: &'static str, value: f64, text: String) {
        self.evidence.push(Evidence { key, value, text });
    }
}

/// Sort findings: most target time lost first, then the surer one.
pub fn rank(findings: &mut [Finding]) {
    findings.sort_by(|a, b| {
        b.impact_ns
            .cmp(&a.impact_ns)
            .then(b.confidence.cmp(&a.confidence))
            .then(a.detector.cmp(b.detector))
    });
}

/// A detector's state after a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DetectorRun {
    pub detector: &'static str,
    /// The rule and threshold it applied, in words.
    pub rule: &'static str,
    /// ran: the rule was evaluated; not_available: the evidence could not be
    /// gathered here (see `note`).
    pub status: DetectorStatus,
    pub note: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DetectorStatus {
    Fired,
    Quiet,
    NotAvailable,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(detector: &'static str, impact_ns: u64, confidence: Confidence) -> Finding {
        Finding {
            detector,
            what: String::new(),
            confidence,
            impact_ns,
            evidence: Vec::new(),
            advice: String::new(),
        }
    }

    #[test]
    fn ranks_by_impact_then_confidence() {
        let mut v = vec![
            f("a", 10, Confidence::High),
            f("b", 30, Confidence::Low),
            f("c", 10, Confidence::Low),
            f("d", 10, Confidence::Medium),
        ];
        rank(&mut v);
        let order: Vec<_> = v.iter().map(|x| x.detector).collect();
        assert_eq!(order, ["b", "a", "d", "c"]);
    }

    #[test]
    fn margins() {
        assert_eq!(Confidence::from_margin(1.1, 2.0, 4.0), Confidence::Low);
        assert_eq!(Confidence::from_margin(2.0, 2.0, 4.0), Confidence::Medium);
        assert_eq!(Confidence::from_margin(9.0, 2.0, 4.0), Confidence::High);
    }
}
