//! Detector 3: CFS bandwidth throttling of the target's cgroup.
//!
//! Rule: at some level of the target's CPU cgroup (the cgroup or an
//! ancestor: a parent's quota throttles its children), the kernel's own
//! counters grew during the run so that at least [`MIN_PERIOD_SHARE`] of
//! the enforcement periods ended throttled and the throttled time is at
//! least [`MIN_RUN_SHARE`] of the run. The level that was throttled longest
//! is named. The ranking key is the throttled time (the kernel sums it over
//! the CPUs where the group was throttled).

use super::{
    cgroup_cpu::{Level, Version},
    finding::{pct, Confidence, Finding, Measure},
    preemption::ms,
};

pub const MIN_PERIOD_SHARE: f64 = 0.05;
pub const MIN_RUN_SHARE: f64 = 0.01;

pub const RULE: &str = "cpu.stat of the target's cgroup or an ancestor: nr_throttled grew by \
     >= 5% of nr_periods and throttled time >= 1% of the run";

/// Before/after counters of one level.
pub struct LevelDelta<'a> {
    pub after: &'a Level,
    pub periods: u64,
    pub throttled: u64,
    pub throttled_ns: u64,
}

/// Pair the levels seen at the start and at the end by path.
pub fn deltas<'a>(before: &[Level], after: &'a [Level]) -> Vec<LevelDelta<'a>> {
    after
        .iter()
        .filter_map(|a| {
            let b = before.iter().find(|b| b.path == a.path)?;
            Some(LevelDelta {
                after: a,
                periods: a.stat.nr_periods.saturating_sub(b.stat.nr_periods),
                throttled: a.stat.nr_throttled.saturating_sub(b.stat.nr_throttled),
                throttled_ns: a.stat.throttled_ns.saturating_sub(b.stat.throttled_ns),
            })
        })
        .collect()
}

/// The level throttled longest during the run, if any was.
pub fn worst<'a, 'b>(d: &'b [LevelDelta<'a>]) -> Option<&'b LevelDelta<'a>> {
    d.iter()
        .filter(|l| l.throttled_ns > 0)
        .max_by_key(|l| l.throttled_ns)
}

/// The rule's two numbers for the most throttled cgroup level (none when
/// no level had a period).
pub fn measured(d: &[LevelDelta], duration_ns: u64) -> Vec<Measure> {
    // Nothing throttled: the first level read, at 0.
    let Some(w) = worst(d).or(d.first()) else {
        return Vec::new();
    };
    vec![
        Measure::at_least(
            "throttled_periods_pct",
            pct(w.throttled, w.periods),
            100.0 * MIN_PERIOD_SHARE,
            "%",
        ),
        Measure::at_least(
            "throttled_run_pct",
            pct(w.throttled_ns, duration_ns),
            100.0 * MIN_RUN_SHARE,
            "%",
        ),
    ]
}

pub fn detect(
    d: &[LevelDelta],
    version: Version,
    duration_ns: u64,
    threads: usize,
) -> Option<Finding> {
    let w = worst(d)?;
    if duration_ns == 0 || w.periods == 0 {
        return None;
    }
    let period_share = w.throttled as f64 / w.periods as f64;
    let run_share = w.throttled_ns as f64 / duration_ns as f64;
    if period_share < MIN_PERIOD_SHARE || run_share < MIN_RUN_SHARE {
        return None;
    }
    let (file_quota, file_stat) = match version {
        Version::V1 => ("cpu.cfs_quota_us", "cpu.stat throttled_time"),
        Version::V2 => ("cpu.max", "cpu.stat throttled_usec"),
    };
    let quota_cpus = w.after.quota.map(|(q, p)| q as f64 / p.max(1) as f64);
    let mut f = Finding {
        detector: "cfs_throttling",
        what: format!(
            "the CPU quota of cgroup {} throttles the target ({:.0}% of periods throttled)",
            w.after.path,
            100.0 * period_share
        ),
        confidence: Confidence::from_margin(
            (period_share / MIN_PERIOD_SHARE).min(run_share / MIN_RUN_SHARE),
            2.0,
            5.0,
        ),
        impact_ns: w.throttled_ns,
        evidence: Vec::new(),
        advice: match quota_cpus {
            Some(c) => format!(
                "the quota allows {c:.2} CPUs while the target has {threads} threads: raise the \
                 quota ({file_quota}) to the CPUs it needs at peak, or cap its thread pools \
                 (OMP_NUM_THREADS, torch.set_num_threads, tokenizer parallelism) to the quota"
            ),
            None => format!(
                "raise the CPU quota ({file_quota}) of {} or cap the target's thread pools to it",
                w.after.path
            ),
        },
    };
    f.evidence(
        "throttled_periods_pct",
        100.0 * period_share,
        format!(
            "{} of {} enforcement periods ended throttled ({:.0}%)",
            w.throttled,
            w.periods,
            100.0 * period_share
        ),
    );
    f.evidence(
        "throttled_ms",
        ms(w.throttled_ns),
        format!(
            "throttled for {:.1} ms ({file_stat}), {:.0}% of the {:.1} s run",
            ms(w.throttled_ns),
            100.0 * run_share,
            duration_ns as f64 / 1e9
        ),
    );
    if let (Some((q, p)), Some(c)) = (w.after.quota, quota_cpus) {
        f.evidence(
            "quota_cpus",
            c,
            format!("quota {q} us per {p} us period: {c:.2} CPUs ({file_quota})"),
        );
    }
    Some(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::cgroup_cpu::CpuStat;

    fn level(path: &str, quota: Option<(u64, u64)>, p: u64, t: u64, ns: u64) -> Level {
        Level {
            path: path.into(),
            quota,
            stat: CpuStat {
                nr_periods: p,
                nr_throttled: t,
                throttled_ns: ns,
            },
        }
    }

    const TEN_S: u64 = 10_000_000_000;

    #[test]
    fn names_the_throttled_level() {
        let before = [
            level("/a/b", None, 0, 0, 0),
            level("/a", Some((10_000, 100_000)), 10, 5, 0),
        ];
        let after = [
            level("/a/b", None, 0, 0, 0),
            level("/a", Some((10_000, 100_000)), 110, 95, 8_000_000_000),
        ];
        let d = deltas(&before, &after);
        let f = detect(&d, Version::V1, TEN_S, 1).expect("fires");
        assert!(f.what.contains("cgroup /a "), "{}", f.what);
        assert_eq!(f.impact_ns, 8_000_000_000);
        assert_eq!(f.evidence[0].value, 90.0);
        assert_eq!(f.evidence[2].value, 0.1);
        assert_eq!(f.confidence, Confidence::High);
        assert!(f.advice.contains("0.10 CPUs"), "{}", f.advice);
    }

    #[test]
    fn quiet_without_throttling_or_below_thresholds() {
        let before = [level("/a", Some((50_000, 100_000)), 0, 0, 0)];
        // Never throttled.
        let after = [level("/a", Some((50_000, 100_000)), 100, 0, 0)];
        assert!(detect(&deltas(&before, &after), Version::V2, TEN_S, 1).is_none());
        // 2 of 100 periods.
        let after = [level("/a", Some((50_000, 100_000)), 100, 2, 500_000_000)];
        assert!(detect(&deltas(&before, &after), Version::V2, TEN_S, 1).is_none());
        // 20% of periods but 50 ms: under 1% of the run.
        let after = [level("/a", Some((50_000, 100_000)), 100, 20, 50_000_000)];
        assert!(detect(&deltas(&before, &after), Version::V2, TEN_S, 1).is_none());
        // Levels not present at both ends are ignored.
        let after = [level("/new", Some((1, 100_000)), 100, 100, TEN_S)];
        assert!(detect(&deltas(&before, &after), Version::V2, TEN_S, 1).is_none());
    }
}
