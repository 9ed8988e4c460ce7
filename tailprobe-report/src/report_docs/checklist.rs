//! The health-check items: each status comes from a check that ran, with
//! its evidence; what was not checked says so. Pure.

use super::{
    verdict::{self, ms, Effect, Outcome},
    why,
};
use crate::experiment::{plan::Pinning, results::Results};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Attention,
    /// Measured, but the data cannot decide (noise, one repeat).
    Inconclusive,
    NotMeasured,
    NotApplicable,
}

impl Status {
    pub fn words(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Attention => "attention",
            Status::Inconclusive => "inconclusive",
            Status::NotMeasured => "not measured",
            Status::NotApplicable => "not applicable",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub item: &'static str,
    pub status: Status,
    pub evidence: String,
}

fn check(item: &'static str, status: Status, evidence: String) -> Check {
    Check {
        item,
        status,
        evidence,
    }
}

/// Attention for a material slowdown/gain, pass when the difference is
/// within noise, inconclusive with too little data.
fn from_effect(e: &Effect, bad: bool) -> Status {
    match e.outcome {
        Outcome::Significant if bad => Status::Attention,
        Outcome::Significant | Outcome::WithinNoise => Status::Pass,
        Outcome::TooLittleData => Status::Inconclusive,
    }
}

fn locality(r: &Results) -> Check {
    let st = if r.node.accelerators == 0 {
        Status::NotApplicable
    } else if r.node.facts.device_local_node.is_some() {
        Status::Pass
    } else {
        Status::Attention
    };
    check(
        "Device / NUMA locality known",
        st,
        format!(
            "{} accelerator(s); local node: {}",
            r.node.accelerators, r.node.device_local
        ),
    )
}

fn pinning(r: &Results) -> Check {
    let item = "Placement: pinning to the local node measured";
    match verdict::pinning_effect(r) {
        Some(e) => check(
            item,
            from_effect(&e, e.material_gain()),
            format!(
                "pinned local {}{}",
                e.sentence(),
                if e.material_gain() { ": apply it" } else { "" }
            ),
        ),
        None => check(
            item,
            Status::NotMeasured,
            "no pinned-local cell ran next to a baseline".into(),
        ),
    }
}

fn memory(r: &Results) -> Check {
    let item = "Server memory local (at most 10% remote)";
    if r.node.nodes.len() <= 1 {
        return check(
            item,
            Status::NotApplicable,
            "one NUMA node: all memory is local".into(),
        );
    }
    match r
        .ran()
        .filter_map(|c| c.remote_share.map(|e| (e.mean, c.label.clone())))
        .max_by(|a, b| a.0.total_cmp(&b.0))
    {
        Some((s, l)) => check(
            item,
            if s <= 0.10 {
                Status::Pass
            } else {
                Status::Attention
            },
            format!("largest remote share {:.1}% ({l})", s * 100.0),
        ),
        None => check(
            item,
            Status::NotMeasured,
            "no cell measured the server's memory per node".into(),
        ),
    }
}

fn balancing(r: &Results) -> Check {
    let item = "No NUMA-balancing churn during pinned runs";
    if r.node.nodes.len() <= 1 {
        return check(
            item,
            Status::NotApplicable,
            "one NUMA node: nothing to balance".into(),
        );
    }
    let moves: Vec<u64> = r
        .cells
        .iter()
        .filter(|c| c.config.pinning != Pinning::Unpinned)
        .filter_map(|c| c.metrics.as_ref().map(|m| m.numa_task_moves))
        .collect();
    if moves.is_empty() {
        return check(item, Status::NotMeasured, "no pinned cell ran".into());
    }
    let n: u64 = moves.iter().sum();
    check(
        item,
        if n == 0 {
            Status::Pass
        } else {
            Status::Attention
        },
        format!(
            "{n} NUMA-balancing task moves in {} pinned cells",
            moves.len()
        ),
    )
}

fn governor(r: &Results) -> Check {
    let item = "CPU governor set for latency";
    if let Err(why) = &r.node.facts.governors {
        return check(item, Status::NotApplicable, why.clone());
    }
    let effects: Vec<Effect> = verdict::tuning_effects(r)
        .into_iter()
        .filter(|e| {
            r.ran()
                .any(|c| c.label == e.label && c.config.governor != "current")
        })
        .collect();
    if let Some(g) = effects.iter().find(|e| e.material_gain()) {
        return check(
            item,
            Status::Attention,
            format!("{} {}", g.label, g.sentence()),
        );
    }
    if r.node.facts.current_governor.as_deref() == Some("performance") {
        return check(
            item,
            Status::Pass,
            "governor as found: `performance`".into(),
        );
    }
    match effects.first() {
        Some(e) => check(
            item,
            from_effect(e, false),
            format!("{} {}", e.label, e.sentence()),
        ),
        None => check(
            item,
            Status::NotMeasured,
            format!("{}; no other governor ran", r.node.cpufreq),
        ),
    }
}

fn neighbours(r: &Results) -> Check {
    let item = "Tail protected from noisy neighbours";
    match verdict::worst_neighbour(r) {
        Some(e) => check(
            item,
            from_effect(&e, e.material_slowdown()),
            format!("{} {}", e.label, e.sentence()),
        ),
        None => check(item, Status::NotMeasured, "no neighbour cell ran".into()),
    }
}

fn irqs(r: &Results) -> Check {
    let item = "Device IRQs off the server's CPUs";
    match why::headline(r).and_then(|g| Some((g.share_of("interrupt work")?, g.gap_ms, g.min_share))) {
        Some((s, g, bar)) => check(
            item,
            if s < bar {
                Status::Pass
            } else {
                Status::Attention
            },
            format!(
                "interrupt work is {:.1}% of the {} ms gap between slow and typical requests; irqbalance {}",
                why::clean(s, 1),
                ms(g),
                if r.node.irqbalance { "running" } else { "not running" }
            ),
        ),
        None => check(
            item,
            Status::NotMeasured,
            "no tail attribution in this run".into(),
        ),
    }
}

fn runq(r: &Results) -> Check {
    let item = "Server run-queue wait low (p99 under 1 ms)";
    let rq = r.baseline().and_then(|b| {
        r.cells
            .iter()
            .filter(|c| c.config == b.config)
            .filter_map(|c| c.metrics.as_ref())
            .map(|m| m.runq_p99_us)
            .reduce(f64::max)
    });
    match rq {
        Some(x) => check(
            item,
            if x < 1000.0 {
                Status::Pass
            } else {
                Status::Attention
            },
            format!("baseline run-queue wait p99 {x:.0} us (server threads, worst repeat)"),
        ),
        None => check(item, Status::NotMeasured, "no baseline cell ran".into()),
    }
}

fn capacity(r: &Results) -> Check {
    let item = "Capacity at the SLO measured";
    let Some(c) = &r.capacity else {
        return check(
            item,
            Status::NotMeasured,
            "no capacity sweep in this run".into(),
        );
    };
    // The baseline's sweep, whether or not its latency cells count.
    let Some(b) = r
        .configs
        .iter()
        .find(|x| x.config.is_baseline())
        .and_then(|b| c.rows.iter().find(|x| x.label == b.label))
    else {
        return check(
            item,
            Status::NotMeasured,
            "the baseline was not swept".into(),
        );
    };
    match b.capacity_rps {
        Some(cap) => check(
            item,
            Status::Pass,
            format!(
                "{cap:.0} requests/s per server at p{} <= {} ms{}",
                c.slo_percentile,
                ms(c.slo_ms),
                match (c.fleet_load_rps, b.replicas, b.replicas_n1) {
                    (Some(f), Some(n), Some(n1)) =>
                        format!("; for {f:.0} requests/s: N = {n}, N+1 = {n1}"),
                    _ => String::new(),
                }
            ),
        ),
        None => check(
            item,
            Status::Attention,
            format!(
                "the SLO (p{} <= {} ms) failed at every rate tried",
                c.slo_percentile,
                ms(c.slo_ms)
            ),
        ),
    }
}

pub fn checks(r: &Results, dropin_link: Option<&str>) -> Vec<Check> {
    vec![
        locality(r),
        pinning(r),
        memory(r),
        balancing(r),
        governor(r),
        neighbours(r),
        irqs(r),
        runq(r),
        capacity(r),
        check(
            "Affinity not overridden by the server",
            Status::NotMeasured,
            "not checked: the server threads' affinity is not read back after launch".into(),
        ),
        check(
            "systemd/cgroup placement policy defined",
            Status::NotMeasured,
            match dropin_link {
                Some(l) => format!("the service's unit is not read; a drop-in for the measured placement is ready: [{l}]({l})"),
                None => "not checked: the service's unit is not read".into(),
            },
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report_docs::testkit::{all_within_noise, recorded};

    fn status(cs: &[Check], item: &str) -> Status {
        cs.iter().find(|c| c.item.starts_with(item)).unwrap().status
    }

    #[test]
    fn statuses_from_the_recorded_run() {
        let r = recorded();
        let cs = checks(&r, None);
        assert_eq!(status(&cs, "Device / NUMA"), Status::NotApplicable);
        assert_eq!(status(&cs, "Placement"), Status::Pass);
        assert_eq!(status(&cs, "Server memory local"), Status::NotApplicable);
        assert_eq!(status(&cs, "Tail protected"), Status::Attention);
        assert_eq!(status(&cs, "Device IRQs"), Status::Pass);
        assert_eq!(status(&cs, "Capacity"), Status::Pass);
        assert_eq!(status(&cs, "Affinity"), Status::NotMeasured);
    }

    #[test]
    fn missing_data_is_not_measured_never_pass() {
        let mut r = recorded();
        r.attribution = None;
        r.capacity = None;
        for c in r.cells.iter_mut() {
            c.metrics = None;
        }
        let cs = checks(&r, None);
        assert_eq!(status(&cs, "Device IRQs"), Status::NotMeasured);
        assert_eq!(status(&cs, "Capacity"), Status::NotMeasured);
        assert_eq!(status(&cs, "Server run-queue"), Status::NotMeasured);
    }

    #[test]
    fn within_noise_neighbour_passes_with_its_evidence() {
        let mut r = recorded();
        all_within_noise(&mut r);
        let cs = checks(&r, None);
        let n = cs
            .iter()
            .find(|c| c.item.starts_with("Tail protected"))
            .unwrap();
        assert_eq!(n.status, Status::Pass);
        assert!(
            n.evidence.contains("within run-to-run noise"),
            "{}",
            n.evidence
        );
    }
}
