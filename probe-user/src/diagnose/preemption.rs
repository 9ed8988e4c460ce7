//! Detector 1: preemption by other processes (and other cgroups).
//!
//! Rule: the run-queue wait that tasks outside the target caused by
//! preempting its threads (the recorder charges each wait to the task that
//! took the CPU) is at least [`MIN_RUN_SHARE`] of the recording (summed over
//! the target's threads) and at least [`MIN_WAIT_SHARE`] of the target's
//! whole run-queue wait. Waits caused by `ksoftirqd` are left to the IRQ
//! detector; while the target's cgroup was throttled, the wait is charged to
//! CFS throttling (its throttled time is subtracted first).

use std::collections::BTreeMap;

use super::finding::{pct, Confidence, Finding, Measure};
use crate::report::PreemptorReport;

/// Outside preemption must cost at least this share of the run (thread-time).
pub const MIN_RUN_SHARE: f64 = 0.05;
/// ... and be at least this share of the target's run-queue wait.
pub const MIN_WAIT_SHARE: f64 = 0.25;

pub const RULE: &str = "run-queue wait caused by tasks outside the target >= 5% of the run \
     (thread-time) and >= 25% of the target's run-queue wait";

/// What the detector looks at.
pub struct Input<'a> {
    pub target_tgids: &'a [u32],
    pub preemptors: &'a [PreemptorReport],
    /// The target's whole run-queue wait over the run.
    pub target_wait_ns: u64,
    pub duration_ns: u64,
    /// Time the target's cgroup was throttled during the run (0 if none).
    pub throttled_ns: u64,
    /// The cgroup of each preemptor's process, where known.
    pub cgroups: &'a BTreeMap<u32, String>,
    /// The target's own cgroup, where known.
    pub target_cgroup: Option<&'a str>,
}

/// Is this preemptor charged to the IRQ detector instead?
pub fn is_softirq_thread(comm: &str) -> bool {
    comm.starts_with("ksoftirqd/")
}

/// A preemptor the rule counts: a task of another process, not an idle
/// task, not a softirq thread (the IRQ detector's).
fn is_outside(inp: &Input, p: &PreemptorReport) -> bool {
    p.pid != 0 && !inp.target_tgids.contains(&p.tgid) && !is_softirq_thread(&p.comm)
}

/// The rule's two numbers, whether it fires or not.
pub fn measured(inp: &Input) -> Vec<Measure> {
    let outside: u64 = inp
        .preemptors
        .iter()
        .filter(|p| is_outside(inp, p))
        .map(|p| p.target_wait_ns)
        .sum();
    let effective = outside.saturating_sub(inp.throttled_ns);
    vec![
        Measure::at_least(
            "outside_wait_run_pct",
            pct(effective, inp.duration_ns),
            100.0 * MIN_RUN_SHARE,
            "%",
        ),
        Measure::at_least(
            "outside_wait_share_pct",
            pct(outside, inp.target_wait_ns),
            100.0 * MIN_WAIT_SHARE,
            "%",
        ),
    ]
}

struct Offender {
    tgid: u32,
    comm: String,
    count: u64,
    wait_ns: u64,
}

pub fn detect(inp: &Input) -> Option<Finding> {
    let mut by_tgid: BTreeMap<u32, Offender> = BTreeMap::new();
    for p in inp.preemptors {
        if !is_outside(inp, p) {
            continue;
        }
        let o = by_tgid.entry(p.tgid).or_insert_with(|| Offender {
            tgid: p.tgid,
            comm: p.comm.clone(),
            count: 0,
            wait_ns: 0,
        });
        o.count += p.count;
        o.wait_ns += p.target_wait_ns;
    }
    let outside: u64 = by_tgid.values().map(|o| o.wait_ns).sum();
    let effective = outside.saturating_sub(inp.throttled_ns);
    let run_floor = inp.duration_ns as f64 * MIN_RUN_SHARE;
    if inp.duration_ns == 0 || inp.target_wait_ns == 0 || (effective as f64) < run_floor {
        return None;
    }
    let wait_share = outside as f64 / inp.target_wait_ns as f64;
    if wait_share < MIN_WAIT_SHARE {
        return None;
    }
    let mut offenders: Vec<Offender> = by_tgid.into_values().collect();
    offenders.sort_by(|a, b| b.wait_ns.cmp(&a.wait_ns).then(a.tgid.cmp(&b.tgid)));
    let top = &offenders[0];
    let top_cg = inp.cgroups.get(&top.tgid).map(String::as_str);
    let other_cgroup = match (top_cg, inp.target_cgroup) {
        (Some(a), Some(b)) => Some(a != b),
        _ => None,
    };
    let where_ = match (other_cgroup, top_cg) {
        (Some(true), Some(cg)) => format!(" in another cgroup ({cg})"),
        (Some(false), _) => " in the target's own cgroup".to_string(),
        _ => String::new(),
    };
    let mut f = Finding {
        detector: "preemption",
        what: format!(
            "other processes take the target's CPU: mostly {} (pid {}){where_}",
            top.comm, top.tgid
        ),
        confidence: Confidence::from_margin(effective as f64 / run_floor, 2.0, 5.0),
        impact_ns: effective,
        evidence: Vec::new(),
        advice: advice(other_cgroup),
    };
    f.evidence(
        "outside_wait_ms",
        ms(outside),
        format!(
            "the target's threads waited {:.1} ms in the run queue after being preempted by \
             other processes ({:.1}% of the run, {:.0}% of all their run-queue wait of {:.1} ms)",
            ms(outside),
            100.0 * outside as f64 / inp.duration_ns as f64,
            100.0 * wait_share,
            ms(inp.target_wait_ns)
        ),
    );
    if inp.throttled_ns > 0 {
        f.evidence(
            "throttled_subtracted_ms",
            ms(inp.throttled_ns),
            format!(
                "{:.1} ms of it overlaps CFS throttling of the target's cgroup and is charged there",
                ms(inp.throttled_ns.min(outside))
            ),
        );
    }
    for o in offenders.iter().take(3) {
        let cg = inp
            .cgroups
            .get(&o.tgid)
            .map(|c| format!(", cgroup {c}"))
            .unwrap_or_default();
        f.evidence(
            "preemptor_wait_ms",
            ms(o.wait_ns),
            format!(
                "{} (pid {}{cg}) preempted it {} times: {:.1} ms of wait ({:.0}% of the outside total)",
                o.comm,
                o.tgid,
                o.count,
                ms(o.wait_ns),
                100.0 * o.wait_ns as f64 / outside.max(1) as f64
            ),
        );
    }
    Some(f)
}

fn advice(other_cgroup: Option<bool>) -> String {
    let base = "give the server CPUs of its own: move the neighbour to other CPUs (cpuset / \
                taskset / AllowedCPUs=), or pin the server's threads to CPUs nothing else uses";
    match other_cgroup {
        Some(true) => format!(
            "{base}; the neighbour is in another cgroup: lower its cpu.weight (cpu.shares on v1) \
             or cap it with a CPU quota"
        ),
        _ => base.to_string(),
    }
}

pub fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: u32, tgid: u32, comm: &str, wait_ms: u64) -> PreemptorReport {
        PreemptorReport {
            pid,
            tgid,
            comm: comm.into(),
            count: 10,
            target_wait_ns: wait_ms * 1_000_000,
        }
    }

    fn run(
        preemptors: &[PreemptorReport],
        target_wait_ms: u64,
        throttled_ms: u64,
    ) -> Option<Finding> {
        let mut cgroups = BTreeMap::new();
        cgroups.insert(200, "/hog".to_string());
        detect(&Input {
            target_tgids: &[100],
            preemptors,
            target_wait_ns: target_wait_ms * 1_000_000,
            duration_ns: 10_000_000_000,
            throttled_ns: throttled_ms * 1_000_000,
            cgroups: &cgroups,
            target_cgroup: Some("/"),
        })
    }

    #[test]
    fn names_the_hog_and_its_cgroup() {
        let ps = [
            p(201, 200, "hog", 3000),
            p(202, 200, "hog", 1000),
            p(301, 300, "rustc", 500),
            p(101, 100, "self", 900),
        ];
        let f = run(&ps, 5000, 0).expect("fires");
        assert_eq!(f.impact_ns, 4_500_000_000);
        assert!(f.what.contains("hog (pid 200)"), "{}", f.what);
        assert!(f.what.contains("another cgroup (/hog)"), "{}", f.what);
        assert_eq!(f.confidence, Confidence::High);
        assert!((f.evidence[0].value - 4500.0).abs() < 1e-9);
    }

    #[test]
    fn quiet_below_either_threshold() {
        // 400 ms over a 10 s run: under 5% of the run.
        assert!(run(&[p(201, 200, "hog", 400)], 400, 0).is_none());
        // 1 s, but only 20% of a 5 s wait that is mostly the target's own.
        assert!(run(&[p(201, 200, "hog", 1000)], 5000, 0).is_none());
        // The target's own threads and ksoftirqd do not count.
        assert!(run(
            &[p(101, 100, "self", 5000), p(9, 9, "ksoftirqd/0", 5000)],
            10000,
            0
        )
        .is_none());
    }

    #[test]
    fn throttled_time_is_charged_to_throttling() {
        assert!(run(&[p(201, 200, "hog", 3000)], 3000, 2800).is_none());
        let f = run(&[p(201, 200, "hog", 3000)], 3000, 1000).expect("fires");
        assert_eq!(f.impact_ns, 2_000_000_000);
    }

    /// The measured numbers meet their bounds exactly when the detector
    /// fires.
    #[test]
    fn measured_agrees_with_the_rule() {
        let mut cgroups = BTreeMap::new();
        cgroups.insert(200, "/hog".to_string());
        for (hog_ms, wait_ms, throttled_ms) in [
            (400, 400, 0),
            (1000, 5000, 0),
            (3000, 5000, 0),
            (3000, 3000, 2800),
            (3000, 3000, 1000),
            (499, 1000, 0),
            (500, 1000, 0),
        ] {
            let ps = [p(201, 200, "hog", hog_ms), p(9, 9, "ksoftirqd/0", 700)];
            let inp = Input {
                target_tgids: &[100],
                preemptors: &ps,
                target_wait_ns: wait_ms * 1_000_000,
                duration_ns: 10_000_000_000,
                throttled_ns: throttled_ms * 1_000_000,
                cgroups: &cgroups,
                target_cgroup: Some("/"),
            };
            let m = measured(&inp);
            assert_eq!(m.len(), 2);
            assert_eq!(
                detect(&inp).is_some(),
                m.iter().all(Measure::met),
                "{hog_ms} {wait_ms} {throttled_ms}: {m:?}"
            );
        }
        let ps = [p(201, 200, "hog", 400)];
        let inp = Input {
            target_tgids: &[100],
            preemptors: &ps,
            target_wait_ns: 1_000_000_000,
            duration_ns: 10_000_000_000,
            throttled_ns: 0,
            cgroups: &cgroups,
            target_cgroup: None,
        };
        let m = measured(&inp);
        assert!((m[0].value - 4.0).abs() < 1e-9, "{m:?}");
        assert!((m[1].value - 40.0).abs() < 1e-9, "{m:?}");
    }
}
