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

/// One number a detector's rule compares with a threshold, reported
/// whether the detector fired or stayed quiet, so that a reader sees how
/// far from (or past) its bar each run was.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Measure {
    /// Stable key, e.g. `outside_wait_run_pct`.
    pub key: &'static str,
    pub value: f64,
    /// The rule's bound for this number.
    pub threshold: f64,
    /// `>=`: the rule needs the value at or above the threshold; `<=`: at
    /// or below.
    pub needs: Needs,
    /// `%`, `/s`, `x`, `ms`, `CPUs` or `` (a count).
    pub unit: &'static str,
}

/// Which side of its threshold a measured number must be on.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub enum Needs {
    #[serde(rename = ">=")]
    AtLeast,
    #[serde(rename = "<=")]
    AtMost,
}

impl Needs {
    pub fn symbol(self) -> &'static str {
        match self {
            Needs::AtLeast => ">=",
            Needs::AtMost => "<=",
        }
    }
}

impl Measure {
    pub fn at_least(key: &'static str, value: f64, threshold: f64, unit: &'static str) -> Self {
        Measure {
            key,
            value,
            threshold,
            needs: Needs::AtLeast,
            unit,
        }
    }

    pub fn at_most(key: &'static str, value: f64, threshold: f64, unit: &'static str) -> Self {
        Measure {
            needs: Needs::AtMost,
            ..Measure::at_least(key, value, threshold, unit)
        }
    }

    /// Does the value meet its bound?
    pub fn met(&self) -> bool {
        match self.needs {
            Needs::AtLeast => self.value >= self.threshold,
            Needs::AtMost => self.value <= self.threshold,
        }
    }

    /// `outside_wait_run_pct 0.44% (needs >= 5%)`.
    pub fn text(&self) -> String {
        format!(
            "{} {}{} (needs {} {}{})",
            self.key,
            short(self.value),
            self.unit,
            self.needs.symbol(),
            short(self.threshold),
            self.unit
        )
    }
}

/// A number with 3 significant digits at most, without trailing zeros.
fn short(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    let decimals = if a >= 100.0 || a == 0.0 {
        0
    } else if a >= 10.0 {
        1
    } else if a >= 1.0 {
        2
    } else {
        3
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Share of `part` in `whole`, in percent (0 when `whole` is 0).
pub fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
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
    /// The numbers the rule compared with its thresholds (empty when it
    /// could not run).
    pub measured: Vec<Measure>,
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
    fn measures_say_value_and_bound() {
        let m = Measure::at_least("outside_wait_run_pct", 0.4412, 5.0, "%");
        assert_eq!(m.text(), "outside_wait_run_pct 0.441% (needs >= 5%)");
        assert!(!m.met());
        let c = Measure::at_most("parallel_cpus", 1.0, 1.25, " CPUs");
        assert!(c.met());
        assert_eq!(c.text(), "parallel_cpus 1 CPUs (needs <= 1.25 CPUs)");
        assert_eq!(short(123.456), "123");
        assert_eq!(short(12.34), "12.3");
        assert_eq!(short(0.0), "0");
        assert_eq!(pct(1, 4), 25.0);
        assert_eq!(pct(1, 0), 0.0);
    }

    #[test]
    fn margins() {
        assert_eq!(Confidence::from_margin(1.1, 2.0, 4.0), Confidence::Low);
        assert_eq!(Confidence::from_margin(2.0, 2.0, 4.0), Confidence::Medium);
        assert_eq!(Confidence::from_margin(9.0, 2.0, 4.0), Confidence::High);
    }
}
