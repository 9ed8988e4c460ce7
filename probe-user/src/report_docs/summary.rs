//! `os_node_os_tuning_summary_day05.md`: the engineering view, the
//! consultant view (risk level with its rule, findings, recommendations,
//! the health-check checklist with evidence), the engagement, and a plain
//! explanation drafted from the run's own capacity numbers. Pure.

use std::fmt::Write as _;

use crate::experiment::{
    analysis::stats::delta as est_delta,
    plan::{NoiseAxis, Pinning},
    results::{CellStatus, ConfigSummary, Results},
    summarise,
};

pub const TITLE: &str = "# Inference node OS & NUMA tuning summary";

pub fn preamble() -> String {
    format!(
        "{TITLE}\n\n\
         Generated sections sit between `tailprobe:begin`/`tailprobe:end` markers and are\n\
         replaced on every `tailprobe experiment` run; anything written outside them is kept.\n"
    )
}

fn find<'a>(r: &'a Results, g: &str, p: Pinning, n: NoiseAxis) -> Option<&'a ConfigSummary> {
    r.configs.iter().find(|c| {
        c.config.governor == g
            && c.config.pinning == p
            && c.config.noise == n
            && c.status == CellStatus::Ran
    })
}

/// (pct change of p95, significant, a, b) from `a` to `b`.
fn change(a: &ConfigSummary, b: &ConfigSummary) -> Option<(f64, bool, f64, f64)> {
    let (x, y) = (a.p95_ms.as_ref()?, b.p95_ms.as_ref()?);
    let d = est_delta(x, y);
    Some((d.pct?, d.significant, x.mean, y.mean))
}

/// The worst neighbour effect measured (relative to the same placement).
fn worst_noise(r: &Results) -> Option<(String, f64, bool, f64, f64)> {
    r.ran()
        .filter(|c| c.config.noise != NoiseAxis::None)
        .filter_map(|c| {
            let q = find(r, &c.config.governor, c.config.pinning, NoiseAxis::None)?;
            let (p, s, a, b) = change(q, c)?;
            Some((c.label.clone(), p, s, a, b))
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// Risk level and the rule that set it.
pub fn risk(r: &Results) -> (&'static str, String) {
    let slo = r.plan.slo;
    // High: the SLO fails at the planned load, or a measured degradation
    // exceeds the SLO headroom, or device locality is unknown on a
    // multi-socket host.
    if r.node.nodes.len() > 1 && r.node.accelerators > 0 && r.node.facts.device_local_node.is_none()
    {
        return (
            "High",
            "device locality is unknown on a multi-socket host (accelerators report no NUMA node)"
                .into(),
        );
    }
    if let (Some(slo), Some(b)) = (slo, r.baseline()) {
        let p = match slo.percentile as u32 {
            50 => b.p50_ms,
            99 => b.p99_ms,
            _ => b.p95_ms,
        };
        if let Some(p) = p {
            if p.mean > slo.e2e_ms {
                return (
                    "High",
                    format!(
                        "the SLO (p{} <= {} ms) fails at the planned load: baseline p{} = {:.2} ms",
                        slo.percentile, slo.e2e_ms, slo.percentile, p.mean
                    ),
                );
            }
        }
        for c in r.ran().filter(|c| c.config.noise != NoiseAxis::None) {
            let v = match slo.percentile as u32 {
                50 => c.p50_ms,
                99 => c.p99_ms,
                _ => c.p95_ms,
            };
            if let Some(v) = v {
                if v.mean > slo.e2e_ms {
                    return ("High", format!("the measured degradation exceeds the SLO headroom: {} reaches p{} = {:.2} ms against an SLO of {} ms", c.label, slo.percentile, v.mean, slo.e2e_ms));
                }
            }
        }
    }
    // Medium: a measured gain of 5% or more is not applied or not persisted.
    if let (Some(b), Some(best)) = (r.baseline(), summarise::best(&r.configs)) {
        if best.config != b.config {
            if let Some((p, true, _, _)) = change(b, best) {
                if p <= -5.0 {
                    return ("Medium", format!("a measured p95 gain of {:.1}% ({}) is not applied or persisted on this node", -p, best.label));
                }
            }
        }
    }
    ("Low", "the SLO holds at the planned load and under the measured neighbours, and no measured gain of 5% or more is left unapplied".into())
}

pub fn engineering(r: &Results, baseline_link: &str) -> String {
    let mut s = String::from("## Engineering view\n\n### Topology\n\n");
    s.push_str(
        r.node
            .topology_markdown
            .trim_start_matches("## Node topology")
            .trim(),
    );
    s.push_str("\n\n### Baseline vs pinned\n\n| configuration | p50 ms | p95 ms | p99 ms | throughput req/s | Δ p95 vs baseline |\n| --- | --- | --- | --- | --- | --- |\n");
    for c in r
        .configs
        .iter()
        .filter(|c| c.config.governor == "current" && c.config.noise == NoiseAxis::None)
    {
        if c.status != CellStatus::Ran {
            let _ = writeln!(
                s,
                "| {} | {}: {} | | | | |",
                c.label,
                c.status.words(),
                c.reason.as_deref().unwrap_or("")
            );
            continue;
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            c.label,
            super::fmt::est(&c.p50_ms, 2),
            super::fmt::est(&c.p95_ms, 2),
            super::fmt::est(&c.p99_ms, 2),
            super::fmt::est(&c.throughput_rps, 1),
            if c.config.is_baseline() {
                "baseline".into()
            } else {
                super::fmt::delta(&c.delta_p95, " ms")
            }
        );
    }
    let _ = writeln!(s, "\n### Governor and noise findings\n");
    let govs: Vec<&ConfigSummary> = r
        .configs
        .iter()
        .filter(|c| {
            c.config.governor != "current"
                && c.config.pinning == Pinning::Unpinned
                && c.config.noise == NoiseAxis::None
        })
        .collect();
    for g in govs {
        match g.status {
            CellStatus::Ran => {
                let _ = writeln!(
                    s,
                    "- Governor `{}`: Δ p95 {}.",
                    g.config.governor,
                    super::fmt::delta(&g.delta_p95, " ms")
                );
            }
            _ => {
                let _ = writeln!(
                    s,
                    "- Governor `{}`: {} — {}.",
                    g.config.governor,
                    g.status.words(),
                    g.reason.as_deref().unwrap_or("")
                );
            }
        }
    }
    for c in r
        .configs
        .iter()
        .filter(|c| c.config.governor == "current" && c.config.noise != NoiseAxis::None)
    {
        match (
            c.status,
            find(r, "current", c.config.pinning, NoiseAxis::None).and_then(|q| change(q, c)),
        ) {
            (CellStatus::Ran, Some((p, sig, a, b))) => {
                let _ = writeln!(
                    s,
                    "- {}: p95 {a:.2} -> {b:.2} ms ({p:+.1}%, {}).",
                    c.label,
                    if sig { "significant" } else { "within noise" }
                );
            }
            (CellStatus::Ran, None) => {}
            (st, _) => {
                let _ = writeln!(
                    s,
                    "- {}: {} — {}.",
                    c.label,
                    st.words(),
                    c.reason.as_deref().unwrap_or("")
                );
            }
        }
    }
    let _ = writeln!(
        s,
        "\nDetails, tables per topic and the raw snapshots: [{baseline_link}]({baseline_link})."
    );
    s
}

fn capacity_line(r: &Results) -> Option<(f64, Option<u64>, Option<u64>)> {
    let cap = r.capacity.as_ref()?;
    let bl = &r.baseline()?.label;
    let b = cap.rows.iter().find(|x| &x.label == bl)?;
    Some((b.capacity_rps?, b.replicas, b.replicas_n1))
}

pub fn consultant(r: &Results, dropin_link: Option<&str>) -> String {
    let mut s = String::from("## Consultant view\n\n");
    let (level, rule) = risk(r);
    let _ = writeln!(
        s,
        "**Risk level: {level}.** Rule: {rule}.\n\n\
         (The rule: High when the SLO fails at planned load, a measured degradation exceeds the SLO headroom, or device locality is unknown on a multi-socket host; Medium when a measured gain of 5% or more is not applied or not persisted; Low otherwise.)\n"
    );
    // Findings.
    let _ = writeln!(s, "### Findings\n");
    let mut n = 0;
    let base = r.baseline();
    if let Some(b) = base {
        n += 1;
        let _ = writeln!(
            s,
            "{n}. At {:.0} requests/s the service answers half its requests within {:.1} ms and 95 in 100 within {:.1} ms; the slowest 1 in 100 take {:.1} ms or more.",
            r.calibration.as_ref().map(|c| c.offered_rps).unwrap_or(0.0),
            b.p50_ms.map(|e| e.mean).unwrap_or(0.0),
            b.p95_ms.map(|e| e.mean).unwrap_or(0.0),
            b.p99_ms.map(|e| e.mean).unwrap_or(0.0)
        );
    }
    if let Some((label, p, sig, a, bb)) = worst_noise(r) {
        n += 1;
        let cap = r.capacity.as_ref().and_then(|c| {
            let noisy = c.rows.iter().find(|x| x.label == label)?;
            let quiet_label = label
                .replace(" / noise same node", " / no noise")
                .replace(" / noise other node", " / no noise");
            let quiet = c.rows.iter().find(|x| x.label == quiet_label)?;
            let lowest = noisy
                .points
                .iter()
                .map(|p| p.offered_rps)
                .fold(f64::INFINITY, f64::min);
            Some(format!(
                " Capacity at the SLO drops from {:.0} requests/s per server to {}{}.",
                quiet.capacity_rps?,
                match noisy.capacity_rps {
                    Some(c) => format!("{c:.0}"),
                    None => format!(
                        "below the lowest rate tried ({lowest:.0} requests/s: the SLO failed at every rate)"
                    ),
                },
                match (quiet.replicas_n1, noisy.replicas_n1) {
                    (Some(q), Some(x)) =>
                        format!(", so the fleet needs {x} servers instead of {q} (N+1)"),
                    _ => String::new(),
                }
            ))
        });
        let _ = writeln!(
            s,
            "{n}. A busy neighbour on the same machine ({label}) slows the slowest 5% of answers from {a:.1} ms to {bb:.1} ms ({p:+.0}%{}).{}",
            if sig { "" } else { ", within run-to-run noise" },
            cap.unwrap_or_default()
        );
    }
    if let Some(a) = &r.attribution {
        if let Some((_, t)) = a
            .per_config
            .iter()
            .find(|(l, _)| base.is_some_and(|b| &b.label == l))
            .or(a.per_config.first())
        {
            n += 1;
            let _ = writeln!(
                s,
                "{n}. The slow answers are slow because they wait: {:.0}% of their time is spent queued behind other requests and {:.0}% waiting for a CPU, against {:.0}% actually computing.",
                t.tail.share(t.tail.queue_ms),
                t.tail.share(t.tail.runq_ms),
                t.tail.share(t.tail.service_ms)
            );
        }
    }
    if let (Some(b), Some(p)) = (base, find(r, "current", Pinning::Local, NoiseAxis::None)) {
        if let Some((pc, sig, _, _)) = change(b, p) {
            n += 1;
            let _ = writeln!(
                s,
                "{n}. Pinning the server to its local CPUs and memory changes the 95th percentile by {pc:+.1}% here ({}); on this {}-node machine there is no remote memory to avoid.",
                if sig { "a real effect" } else { "within run-to-run noise" },
                r.node.nodes.len().max(1)
            );
        }
    }
    if r.node.facts.governors.is_err() {
        n += 1;
        let _ = writeln!(s, "{n}. CPU frequency policy cannot be set on this machine ({}): the provider decides it, so governor tuning is not available as a lever here.", r.node.cpufreq);
    }
    // Recommendations.
    let _ = writeln!(s, "\n### Recommendations\n");
    let mut k = 0;
    if let Some((label, p, sig, _, _)) = worst_noise(r) {
        k += 1;
        let _ = writeln!(
            s,
            "{k}. Give the inference server CPUs no batch job shares (dedicated cpuset / node). Expected impact: avoids the {p:+.0}% p95 measured with a neighbour ({label}{}).",
            if sig { "" } else { "; within noise on this run" }
        );
    }
    if let (Some(b), Some(best)) = (base, summarise::best(&r.configs)) {
        k += 1;
        let d = change(b, best)
            .map(|(p, sig, _, _)| {
                format!(
                    "{p:+.1}% p95 vs baseline{}",
                    if sig { "" } else { ", within noise" }
                )
            })
            .unwrap_or_else(|| "it is the baseline".into());
        let _ = writeln!(
            s,
            "{k}. Persist the best measured placement ({}) with the systemd drop-in{}. Expected impact: {d}; it also keeps the placement across restarts and deploys.",
            best.label,
            dropin_link.map(|l| format!(" [{l}]({l})")).unwrap_or_default()
        );
    }
    k += 1;
    let _ = writeln!(
        s,
        "{k}. Alert on the server threads' run-queue wait, not on average CPU: it is the signal that moves with the tail (see the correlation table). Expected impact: earlier warning before the p95 SLO is breached."
    );
    if let Some((cap, nn, n1)) = capacity_line(r) {
        k += 1;
        let _ = writeln!(
            s,
            "{k}. Size the fleet from capacity at the SLO percentile: {cap:.0} requests/s per server here{}. Expected impact: no SLO breach at peak with one server down.",
            match (nn, n1) {
                (Some(a), Some(b)) => format!(", {a} servers for the planned peak, {b} with N+1"),
                _ => String::new(),
            }
        );
    }
    if r.node.facts.governors.is_err() {
        k += 1;
        let _ = writeln!(s, "{k}. On bare-metal nodes, repeat this plan with the `performance` governor in the matrix. Expected impact: unknown here (no cpufreq); measure before deciding.");
    }
    s
}

pub fn checklist(r: &Results, dropin_link: Option<&str>) -> String {
    let mut s = String::from("## Inference Node OS & NUMA Health Check v0.1\n\n| item | status | evidence |\n| --- | --- | --- |\n");
    let multi = r.node.nodes.len() > 1;
    let row = |s: &mut String, item: &str, st: &str, ev: String| {
        let _ = writeln!(s, "| {item} | {st} | {ev} |");
    };
    row(
        &mut s,
        "Device / NUMA locality known",
        if r.node.accelerators == 0 {
            "not applicable"
        } else if r.node.facts.device_local_node.is_some() {
            "pass"
        } else {
            "attention"
        },
        format!(
            "{} accelerator(s); local node: {}",
            r.node.accelerators, r.node.device_local
        ),
    );
    let local = find(r, "current", Pinning::Local, NoiseAxis::None);
    row(
        &mut s,
        "Workers pinned to the device-local node",
        if local.is_some() {
            "measured"
        } else {
            "not measured"
        },
        local
            .map(|c| format!("pinned local: p95 {}", super::fmt::est(&c.p95_ms, 2)))
            .unwrap_or_else(|| "no pinned cell ran".into()),
    );
    let rs = r
        .ran()
        .filter_map(|c| c.remote_share.map(|e| e.mean))
        .fold(0.0, f64::max);
    row(
        &mut s,
        "Server memory local (≤ 10% remote)",
        if !multi {
            "pass (one node)"
        } else if rs <= 0.10 {
            "pass"
        } else {
            "attention"
        },
        format!("largest remote share measured: {:.1}%", rs * 100.0),
    );
    row(
        &mut s,
        "No NUMA-balancing churn during pinned runs",
        if !multi { "not applicable" } else { "measured" },
        format!(
            "NUMA balancing {}; task moves in cells: {}",
            match r.node.numa_balancing {
                Some(0) => "off".to_string(),
                Some(_) => "on".into(),
                None => "absent".into(),
            },
            r.cells
                .iter()
                .filter_map(|c| c.metrics.as_ref())
                .map(|m| m.numa_task_moves)
                .sum::<u64>()
        ),
    );
    row(
        &mut s,
        "CPU governor set for latency",
        if r.node.facts.governors.is_err() {
            "not applicable"
        } else if r.node.facts.current_governor.as_deref() == Some("performance") {
            "pass"
        } else {
            "attention"
        },
        r.node.cpufreq.clone(),
    );
    let wn = worst_noise(r);
    row(
        &mut s,
        "Noisy neighbours isolated",
        match &wn {
            Some((_, p, true, _, _)) if *p > 10.0 => "attention",
            Some(_) => "pass",
            None => "not measured",
        },
        wn.map(|(l, p, _, a, b)| format!("{l}: p95 {a:.2} -> {b:.2} ms ({p:+.1}%)"))
            .unwrap_or_else(|| "no noise cell ran".into()),
    );
    let irq_share = r
        .attribution
        .as_ref()
        .and_then(|a| a.per_config.first())
        .map(|(_, t)| t.tail.share(t.tail.hardirq_ms + t.tail.softirq_ms));
    row(
        &mut s,
        "Device IRQs off the worker CPUs",
        match irq_share {
            Some(x) if x < 5.0 => "pass",
            Some(_) => "attention",
            None => "not measured",
        },
        format!(
            "IRQ share of the tail: {}; irqbalance {}",
            irq_share
                .map(|x| format!("{x:.1}%"))
                .unwrap_or_else(|| "–".into()),
            if r.node.irqbalance {
                "running"
            } else {
                "not running"
            }
        ),
    );
    let rq = r.baseline().and_then(|b| {
        r.cells
            .iter()
            .filter(|c| c.config == b.config)
            .filter_map(|c| c.metrics.as_ref())
            .map(|m| m.runq_p99_us)
            .reduce(f64::max)
    });
    row(
        &mut s,
        "Server run-queue wait low",
        match rq {
            Some(x) if x < 1000.0 => "pass",
            Some(_) => "attention",
            None => "not measured",
        },
        rq.map(|x| format!("baseline run-queue wait p99 {x:.0} us (server threads)"))
            .unwrap_or_else(|| "–".into()),
    );
    let cap = capacity_line(r);
    row(
        &mut s,
        "Capacity at SLO measured, N+1 sized",
        if cap.is_some() {
            "pass"
        } else {
            "not measured"
        },
        cap.map(|(c, n, n1)| {
            format!(
                "{c:.0} req/s per server; N = {}, N+1 = {}",
                n.map(|x| x.to_string()).unwrap_or_else(|| "–".into()),
                n1.map(|x| x.to_string()).unwrap_or_else(|| "–".into())
            )
        })
        .unwrap_or_else(|| "no sweep".into()),
    );
    row(
        &mut s,
        "Affinity not overridden by the server",
        "pass",
        "pinned cells ran with the launch affinity (the built-in server keeps it)".into(),
    );
    row(
        &mut s,
        "systemd/cgroup policy defined",
        if dropin_link.is_some() {
            "drop-in written (not installed)"
        } else {
            "attention"
        },
        dropin_link
            .map(|l| format!("[{l}]({l})"))
            .unwrap_or_else(|| "no placement measured".into()),
    );
    s
}

pub fn engagement() -> String {
    "## How this fits a 2-3 week health-check engagement\n\n\
     - **Week 1 — inventory and baseline.** `tailprobe topo` on every node type; agree the SLO percentile and the planned peak load with the service owner; run the default plan on one node of each type to get the baseline document and the first risk level.\n\
     - **Week 2 — matrix on a representative node.** Run the thorough plan (all governors, local and remote pinning, neighbours on the same and the other node, 5 repeats, rate sweep) during a quiet window; the results, raw snapshots and plots are the evidence for every finding.\n\
     - **Week 3 — recommendations and proof.** Apply the recommended placement with the generated systemd drop-in, re-run the same plan (same seed: the same request schedule), and hand over this document with the before/after deltas, the N vs N+1 numbers and the checklist.\n\
     - Re-running `tailprobe experiment` refreshes only the generated sections: the engagement notes written around them stay.\n".into()
}

pub fn feynman(r: &Results) -> String {
    let mut s = String::from("## Feynman explanation: why the tail, not the average\n\n");
    let cap = r.capacity.as_ref();
    let slo = r.plan.slo;
    let base = r.baseline();
    let _ = writeln!(
        s,
        "Think of one server as a shop counter with {} clerks. Customers arrive at random, about {:.0} a second. Most are served at once; some arrive just after a crowd and wait. The promise we make is about those unlucky ones: {} in 100 customers must be done within {} ms.\n",
        r.node.facts.online.len(),
        r.calibration.as_ref().map(|c| c.offered_rps).unwrap_or(0.0),
        slo.map(|x| x.percentile).unwrap_or(95.0),
        slo.map(|x| x.e2e_ms).unwrap_or(0.0)
    );
    if let (Some(c), Some(b)) = (cap, base) {
        if let Some(row) = c.rows.iter().find(|x| x.label == b.label) {
            match (
                row.capacity_rps,
                row.replicas,
                row.replicas_n1,
                c.fleet_load_rps,
            ) {
                (Some(cp), Some(n), Some(n1), Some(f)) => {
                    let _ = writeln!(
                        s,
                        "This run measured how fast customers can arrive before that promise breaks: **{cp:.0} per second per server**. For a peak of {f:.0} per second, using {:.0}% of each server so a burst still fits, you need **N = {n}** servers, and **N+1 = {n1}** so that one can fail or be updated without breaking the promise.\n",
                        c.headroom * 100.0
                    );
                    if let Some(noisy) = c
                        .rows
                        .iter()
                        .filter(|x| x.label.contains(" / noise "))
                        .min_by(|a, b| {
                            a.capacity_rps
                                .unwrap_or(0.0)
                                .total_cmp(&b.capacity_rps.unwrap_or(0.0))
                        })
                    {
                        if noisy.capacity_rps.is_none() {
                            let lowest = noisy
                                .points
                                .iter()
                                .map(|p| p.offered_rps)
                                .fold(f64::INFINITY, f64::min);
                            let _ = writeln!(
                                s,
                                "Now put a busy neighbour on the same machine ({}). The clerks are the same; they just get interrupted. The promise broke at every rate tried, even {lowest:.0} per second: this sweep found no rate at which such a server keeps it.\n",
                                noisy.label
                            );
                        }
                        if let (Some(nc), Some(nn1)) = (noisy.capacity_rps, noisy.replicas_n1) {
                            let _ = writeln!(
                                s,
                                "Now put a busy neighbour on the same machine ({}). The clerks are the same; they just get interrupted. The promise now breaks at **{nc:.0} per second**, and the fleet needs **{nn1}** servers instead of {n1}: {} more machines for the same customers.\n",
                                noisy.label,
                                nn1.saturating_sub(n1)
                            );
                        }
                    }
                }
                _ => {
                    let _ = writeln!(s, "The capacity sweep did not find a rate that meets the promise in every configuration; see the capacity table.\n");
                }
            }
        }
    }
    // Average vs tail from the measured cells.
    if let Some((label, _, _, _, _)) = worst_noise(r) {
        if let (Some(b), Some(n)) = (base, r.ran().find(|c| c.label == label)) {
            if let (Some(ba), Some(na), Some(bp), Some(np)) =
                (b.avg_ms, n.avg_ms, b.p99_ms, n.p99_ms)
            {
                let _ = writeln!(
                    s,
                    "Why not look at the average? With that neighbour the average moved from {:.1} to {:.1} ms ({:+.0}%), but the slowest 1 in 100 moved from {:.1} to {:.1} ms ({:+.0}%). A 5-10% change in the average looks harmless on a dashboard; the promise is written about the slow customers, and capacity is the rate at which *they* break it. A user who sends ten requests to render one page waits for the slowest of the ten, so the tail is what people feel.\n",
                    ba.mean, na.mean, 100.0 * (na.mean / ba.mean - 1.0), bp.mean, np.mean, 100.0 * (np.mean / bp.mean - 1.0)
                );
            }
        }
    }
    let _ = writeln!(s, "So the work is not to make the average faster; it is to keep the clerks uninterrupted — the right CPUs, the right memory, no neighbours — because that is what moves the number of servers you pay for.");
    s
}

/// A sanity check used in tests: every configuration label appears.
pub fn mentions_all(doc: &str, r: &Results) -> bool {
    r.configs.iter().all(|c| doc.contains(&c.label))
}
