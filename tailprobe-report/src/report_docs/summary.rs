//! `os_node_os_tuning_summary_day05.md`: the measurements, the assessment
//! (risk level with its rule, findings, recommendations), the health check
//! with evidence, the engagement, and a plain explanation. Every sentence
//! with a number or a verdict comes from `verdict`, `why`, `advice` or
//! `checklist`; a case that did not happen prints nothing. Pure.

use std::fmt::Write as _;

use super::{
    advice, checklist,
    fmt::{est, not_run_lines},
    runs,
    verdict::{self, ms, slo_percentile},
    why,
};
use crate::experiment::{analysis::capacity::CapacityRow, results::Results};

pub const TITLE: &str = "# Inference node OS & NUMA tuning summary";

pub fn preamble() -> String {
    format!(
        "{TITLE}\n\n\
         Generated sections sit between `tailprobe:begin`/`tailprobe:end` markers and are\n\
         replaced on every `tailprobe experiment` run; anything written outside them is kept.\n"
    )
}

pub fn engineering(r: &Results, baseline_link: &str) -> String {
    let mut s = String::from("## Measurements\n\n### Topology\n\n");
    s.push_str(
        r.node
            .topology_markdown
            .trim_start_matches("## Node topology")
            .trim(),
    );
    let p = slo_percentile(r);
    let _ = writeln!(
        s,
        "\n\n### Configurations measured\n\nLatency in ms, end of answer minus intended send; ± is the 95% interval over repeats.\n\n| configuration | repeats | p50 ms | p95 ms | p99 ms | throughput req/s |\n| --- | --- | --- | --- | --- | --- |"
    );
    for c in r.ran() {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            c.label,
            c.repeats,
            est(&c.p50_ms, 2),
            est(&c.p95_ms, 2),
            est(&c.p99_ms, 2),
            est(&c.throughput_rps, 1)
        );
    }
    let lines = not_run_lines(&r.configs);
    if !lines.is_empty() {
        let _ = writeln!(s, "\nNot run:\n\n{}", lines.join("\n"));
    }
    let effects: Vec<verdict::Effect> = verdict::tuning_effects(r)
        .into_iter()
        .chain(verdict::neighbour_effects(r))
        .collect();
    if !effects.is_empty() {
        let _ = writeln!(s, "\n### Effects on p{p} (the SLO percentile)\n");
        for e in &effects {
            let _ = writeln!(
                s,
                "- `{}` against `{}` {}.",
                e.label,
                e.reference,
                e.sentence()
            );
        }
    }
    let _ = writeln!(
        s,
        "\nDetails, tables per topic and the raw snapshots: [{baseline_link}]({baseline_link})."
    );
    s
}

fn capacity_row<'a>(r: &'a Results, label: &str) -> Option<&'a CapacityRow> {
    r.capacity.as_ref()?.rows.iter().find(|x| x.label == label)
}

/// "Capacity at the SLO drops from 452 to 251 requests/s per server (0.56x)".
fn capacity_change(r: &Results, quiet: &str, noisy: &str) -> Option<String> {
    let (q, n) = (capacity_row(r, quiet)?, capacity_row(r, noisy)?);
    let qc = q.capacity_rps?;
    let lowest = n
        .points
        .iter()
        .map(|p| p.offered_rps)
        .fold(f64::INFINITY, f64::min);
    Some(match n.capacity_rps {
        Some(nc) => {
            let verb = if nc < qc {
                "drops"
            } else if nc > qc {
                "rises"
            } else {
                "stays"
            };
            format!(
                " Capacity at the SLO {verb} from {qc:.0} to {nc:.0} requests/s per server ({:.2}x){}.",
                nc / qc,
                match (q.replicas_n1, n.replicas_n1, r.capacity.as_ref().and_then(|c| c.fleet_load_rps)) {
                    (Some(a), Some(b), Some(f)) if a != b =>
                        format!("; for the stated peak of {f:.0} requests/s that is {b} servers instead of {a} (N+1)"),
                    _ => String::new(),
                }
            )
        }
        None if lowest.is_finite() => format!(
            " With it the SLO failed at every rate tried, even {lowest:.0} requests/s (capacity without it: {qc:.0} requests/s per server)."
        ),
        None => return None,
    })
}

/// The baseline's latency in words: p50, p95, p99.
fn latency_finding(r: &Results) -> Option<String> {
    let b = r.baseline()?;
    // The analysis' pooled percentiles (the same numbers the effects
    // use) when present, else the mean of the repeats' percentiles.
    let pooled = b.percentiles.as_ref().and_then(|q| {
        Some((
            q.p50_ms?.estimate,
            q.p95_ms?.estimate,
            q.p99_ms?.estimate,
            format!(
                "pooled over {} repeat(s), {} requests",
                q.repeats, q.requests
            ),
        ))
    });
    let mean = || {
        Some((
            b.p50_ms?.mean,
            b.p95_ms?.mean,
            b.p99_ms?.mean,
            format!("mean of {} repeat(s)", b.repeats),
        ))
    };
    let (p50, p95, p99, how) = pooled.or_else(mean)?;
    Some(format!(
        "{}he service answers half its requests within {} ms and 95 in 100 within {} ms; the slowest 1 in 100 take {} ms or more ({how}).",
        r.calibration
            .as_ref()
            .map(|c| format!("At {:.0} requests/s, t", c.offered_rps))
            .unwrap_or_else(|| "T".into()),
        ms(p50),
        ms(p95),
        ms(p99),
    ))
}

/// What was kept out of the figures: disturbed cells, incomplete answers.
fn kept_out_findings(r: &Results, out: &mut Vec<String>) {
    let excluded: Vec<String> = r
        .excluded()
        .filter_map(|c| {
            Some(format!(
                "cell {} (`{}`, repeat {}): {}{}",
                c.order,
                c.label,
                c.repeat + 1,
                c.excluded.as_ref()?.reason,
                match c.excluded.as_ref()?.rerun_by {
                    Some(o) => format!(", re-run as cell {o}"),
                    None => ", not re-run".into(),
                }
            ))
        })
        .collect();
    if !excluded.is_empty() {
        out.push(format!(
            "Something outside the experiment took CPU time from the server, so these runs are kept out of every conclusion here: {}.",
            excluded.join("; ")
        ));
    }
    let incomplete: u64 = r
        .cells
        .iter()
        .filter(|c| c.counts())
        .filter_map(|c| c.metrics.as_ref())
        .map(|m| m.incomplete)
        .sum();
    if incomplete > 0 {
        out.push(format!(
            "{incomplete} answers came back cut short or empty; they are counted apart and not in any latency figure (see the baseline document's answers table)."
        ));
    }
}

fn findings(r: &Results) -> Vec<String> {
    let mut out = Vec::new();
    out.extend(latency_finding(r));
    kept_out_findings(r, &mut out);
    if let Some(t) = r
        .baseline()
        .and_then(|b| r.cells.iter().find(|c| c.label == b.label && c.counts()))
        .and_then(|c| c.metrics.as_ref()?.tokens)
    {
        out.push(format!(
            "Each complete answer carried {:.1} output tokens on average ({} asked), {:.0} tokens/s per server at the offered load (baseline, one repeat).",
            t.per_request_avg, t.requested, t.tokens_per_s
        ));
    }
    if let Some(e) = verdict::worst_neighbour(r) {
        out.push(format!(
            "A busy neighbour on the same machine (`{}`) {}.{}",
            e.label,
            e.sentence(),
            capacity_change(r, &e.reference, &e.label).unwrap_or_default()
        ));
    }
    if let Some(g) = why::headline(r) {
        out.push(format!(
            "Why the tail is slow (`{}`, {}): {}",
            g.label,
            g.method,
            g.sentence()
        ));
    }
    if let Some(e) = verdict::pinning_effect(r) {
        out.push(format!(
            "Pinning the server to its local CPUs and memory {}{}.",
            e.sentence(),
            if r.node.nodes.len() <= 1 {
                "; this machine has one NUMA node, so there is no remote memory to avoid"
            } else {
                ""
            }
        ));
    }
    if let Err(why) = &r.node.facts.governors {
        out.push(format!(
            "The CPU frequency policy cannot be set on this machine ({}): governor tuning is not a lever here.",
            why.trim_start_matches("not available on this node: ")
        ));
    }
    if let Some((c, row)) = r
        .capacity
        .as_ref()
        .and_then(|c| Some((c, capacity_row(r, &r.baseline()?.label)?)))
    {
        if let Some(cap) = row.capacity_rps {
            out.push(format!(
                "One server keeps the SLO (p{} <= {} ms) up to {cap:.0} requests/s{}.",
                c.slo_percentile,
                ms(c.slo_ms),
                match (c.fleet_load_rps, row.replicas, row.replicas_n1) {
                    (Some(f), Some(n), Some(n1)) => format!(
                        "; for the stated peak of {f:.0} requests/s at {:.0}% use that is N = {n} servers, N+1 = {n1}",
                        c.headroom * 100.0
                    ),
                    _ => String::new(),
                }
            ));
        }
    }
    out
}

pub fn consultant(r: &Results, dropin_link: Option<&str>) -> String {
    let mut s = String::from("## Assessment and recommendations\n\n");
    s.push_str(&runs::restore_banner(r));
    let k = advice::risk(r);
    let _ = writeln!(s, "**Risk level: {}.**", k.level.words());
    for b in &k.because {
        let _ = writeln!(s, "- Because {b}.");
    }
    let _ = writeln!(s, "\nRule: {}\n", advice::RULE);
    let _ = writeln!(s, "### Findings\n");
    for (i, f) in findings(r).iter().enumerate() {
        let _ = writeln!(s, "{}. {f}", i + 1);
    }
    let _ = writeln!(s, "\n### Recommendations\n");
    let recs = advice::recommendations(r, dropin_link);
    if recs.is_empty() {
        let _ = writeln!(s, "{}", advice::no_change(r));
    }
    for (i, x) in recs.iter().enumerate() {
        let _ = writeln!(s, "{}. {} Evidence: {}.", i + 1, x.action, x.evidence);
    }
    s
}

pub fn checklist(r: &Results, dropin_link: Option<&str>) -> String {
    let mut s = String::from(
        "## Inference node health check\n\n| item | status | evidence |\n| --- | --- | --- |\n",
    );
    for c in checklist::checks(r, dropin_link) {
        let _ = writeln!(s, "| {} | {} | {} |", c.item, c.status.words(), c.evidence);
    }
    s
}

pub fn engagement() -> String {
    "## How this fits a 2-3 week health-check engagement\n\n\
     - **Week 1 — inventory and baseline.** `tailprobe topo` on every node type; agree the SLO percentile and the planned peak load with the service owner; run the default plan on one node of each type to get the baseline document and the first risk level.\n\
     - **Week 2 — matrix on a representative node.** Run the thorough plan (all governors, local and remote pinning, neighbours on the same and the other node, 5 repeats, rate sweep) during a quiet window; the results, raw snapshots and plots are the evidence for every finding.\n\
     - **Week 3 — recommendations and proof.** Apply the recommended placement with the generated systemd drop-in, re-run the same plan (same seed: the same request schedule), and hand over this document with the before/after deltas, the N vs N+1 numbers and the checklist.\n\
     - Re-running `tailprobe experiment` refreshes only the generated sections: the engagement notes written around them stay.\n".into()
}
