//! Whole-document tests on the recorded run and its adversarial variants:
//! assertions on the sentences (direction words, numbers, and the absence
//! of the wrong sentence).
//! (Test-only: its parent declares it under `#[cfg(test)]`.)

use super::{baseline, capacity, plain, runs, summary, testkit::*};
use crate::experiment::results::{
    CellStatus, Direction, Effect, Interval, Outcome, RestoreReport, Results,
};

fn summary_doc(r: &Results) -> String {
    [
        summary::engineering(r, "b.md"),
        summary::consultant(r, Some("d.conf")),
        summary::checklist(r, Some("d.conf")),
        plain::feynman(r),
    ]
    .join("\n")
}

fn baseline_doc(r: &Results) -> String {
    [
        baseline::run_section(r, "results.json", &[]),
        baseline::governor_section(r),
        baseline::noise_section(r),
        baseline::sched_section(r),
        baseline::numa_section(r),
        baseline::irq_section(r, ""),
        capacity::section(r),
        runs::answers_section(r),
        runs::interference_section(r),
        runs::cells_section(r, ""),
    ]
    .join("\n")
}

const NOISY: &str = "governor as found / unpinned / noise same node";
const NOISY_PINNED: &str = "governor as found / pinned local / noise same node";
const BASE: &str = "governor as found / unpinned / no noise";

#[test]
fn recorded_run_documents() {
    let r = recorded();
    let s = summary_doc(&r);
    assert!(s.contains("**Risk level: Medium.**"), "{s}");
    assert!(s.contains("At 251 requests/s, the service answers half its requests within 4.99 ms and 95 in 100 within 10.5 ms; the slowest 1 in 100 take 13.0 ms or more (mean of 3 repeat(s))."), "{s}");
    assert!(s.contains("A busy neighbour on the same machine (`governor as found / unpinned / noise same node`) slows the slowest 5% of answers from 10.5 to 40.7 ms (+288%, significant). Capacity at the SLO drops from 452 to 251 requests/s per server (0.56x)"), "{s}");
    assert!(s.contains("Of the 6.64 ms gap, 5.83 ms (88%) is queueing in the server"));
    assert!(s.contains("Pinning the server to its local CPUs and memory slows the slowest 5% of answers from 10.5 to 10.8 ms (+2.7%, within run-to-run noise)"), "{s}");
    // The wrong sentences of the issue are gone.
    assert!(!s.contains("Persist the best measured placement"));
    assert!(!s.contains("+0.0%"));
    assert!(!s.contains("moves most with latency"));
    let b = baseline_doc(&r);
    assert!(!b.contains("moves most with latency"), "{b}");
    assert!(b.contains("No signal both ranks with latency"));
    assert!(b.contains("## Capacity at the SLO"));
}

#[test]
fn neighbour_that_speeds_things_up() {
    let mut r = recorded();
    set_p95(&mut r, NOISY, &[6.0, 6.2, 6.1]);
    set_p95(&mut r, NOISY_PINNED, &[6.0, 6.2, 6.1]);
    for c in r.configs.iter_mut().filter(|c| c.label == NOISY) {
        c.avg_ms = crate::experiment::analysis::stats::Estimate::of(&[4.0, 4.1, 3.9]);
    }
    let s = summary_doc(&r);
    assert!(s.contains("(`governor as found / unpinned / noise same node`) speeds up the slowest 5% of answers from 10.5 to 6.10 ms (-42%, significant)"), "{s}");
    assert!(!s.contains("slows the slowest 5% of answers from 10.5 to 6.10"));
    // No "average hides the damage" after a fall, no isolation advice.
    assert!(!s.contains("Why not look at the average"), "{s}");
    assert!(!s.contains("Keep CPU-heavy batch work off"));
    assert!(!s.contains("**Risk level: Medium.**"), "{s}");
}

#[test]
fn within_noise_everything_is_low_and_no_change() {
    let mut r = recorded();
    all_within_noise(&mut r);
    let s = summary_doc(&r);
    assert!(s.contains("**Risk level: Low.**"));
    assert!(
        s.contains(
            "No change recommended: no configuration measured a significant change of 5% or more"
        ),
        "{s}"
    );
    assert!(!s.contains("\n1. Keep") && !s.contains("\n1. Run the server as"));
    assert!(!s.contains("significant)"), "{s}");
}

#[test]
fn one_repeat_is_never_a_verdict() {
    let mut r = recorded();
    for l in [
        BASE,
        NOISY,
        "governor as found / pinned local / no noise",
        NOISY_PINNED,
    ] {
        let v = r
            .configs
            .iter()
            .find(|c| c.label == l)
            .unwrap()
            .p95_ms
            .unwrap()
            .mean;
        set_p95(&mut r, l, &[v]);
    }
    let s = summary_doc(&r);
    assert!(s.contains("**Risk level: Low.**"));
    assert!(
        s.contains("too little data to tell: 1 and 1 repeat(s)"),
        "{s}"
    );
    assert!(!s.contains("significant)"), "{s}");
    assert!(
        s.contains("| Tail protected from noisy neighbours | inconclusive |"),
        "{s}"
    );
}

#[test]
fn analysis_effect_beats_welch_with_two_repeats() {
    // The case: 2 repeats, a neighbour that triples p95. Welch
    // (1 df) cannot tell; the analysis' bootstrap effect says significant
    // and the documents follow it.
    let mut r = recorded();
    set_p95(&mut r, BASE, &[20.0, 33.0]);
    set_p95(&mut r, NOISY, &[70.0, 90.0]);
    let e = super::verdict::neighbour_effects(&r)
        .into_iter()
        .find(|e| e.label == NOISY)
        .unwrap();
    assert_eq!(e.outcome, super::verdict::Outcome::WithinNoise);
    let c = r.configs.iter_mut().find(|c| c.label == NOISY).unwrap();
    c.effects.push(Effect {
        metric: "p95_ms".into(),
        baseline: 26.0,
        value: 80.0,
        ratio: Interval {
            estimate: 80.0 / 26.0,
            lo: 2.1,
            hi: 4.0,
            level: 0.95,
        },
        method: "two-level bootstrap".into(),
        outcome: Outcome::Significant,
        direction: Direction::Higher,
        repeats: (2, 2),
        requests: (2000, 2000),
        settle: None,
    });
    let s = summary_doc(&r);
    assert!(
        s.contains("slows the slowest 5% of answers from 26.0 to 80.0 ms (+208%, significant)"),
        "{s}"
    );
}

#[test]
fn all_cells_not_applicable() {
    let mut r = recorded();
    for c in r.cells.iter_mut() {
        c.status = CellStatus::NotApplicable;
        c.reason = Some("the server could not start here".into());
        c.metrics = None;
    }
    for c in r.configs.iter_mut() {
        c.status = CellStatus::NotApplicable;
        c.reason = Some("the server could not start here".into());
    }
    r.attribution = None;
    r.correlation = None;
    r.capacity = None;
    let s = summary_doc(&r);
    assert!(s.contains("**Risk level: not assessed"), "{s}");
    assert!(
        s.contains(
            "- Not applicable on this node (27 configurations): the server could not start here."
        ),
        "{s}"
    );
    assert!(!s.contains("| pass |"), "{s}");
    assert!(s.contains("None: no baseline run counts"));
    let b = baseline_doc(&r);
    assert!(b.contains("81 cells not applicable on this node"));
    assert!(b.contains("None from this run: no neighbour cell ran."));
}

#[test]
fn missing_counters_say_not_measured() {
    let mut r = recorded();
    for c in r.cells.iter_mut() {
        if let Some(m) = c.metrics.as_mut() {
            m.ipc = None;
            m.probe_cpu_pct = None;
            m.counters.clear();
            m.remote_share = None;
        }
    }
    r.attribution = None;
    let b = baseline_doc(&r);
    assert!(
        b.contains("| not measured (no PMU) | not measured |"),
        "{b}"
    );
    assert!(
        b.contains("the interrupt share of the tail was not measured"),
        "{b}"
    );
    let s = summary_doc(&r);
    assert!(
        s.contains("| Device IRQs off the server's CPUs | not measured |"),
        "{s}"
    );
}

#[test]
fn failed_restore_is_shown_first() {
    let mut r = recorded();
    r.cells[3].restore = Some(RestoreReport {
        complete: false,
        failures: vec!["governor of policy0: write refused (EBUSY)".into()],
    });
    r.restore_failed = true;
    let s = summary::consultant(&r, None);
    assert!(s.starts_with("## Assessment and recommendations\n\n> **Warning: the node was not put back completely"), "{s}");
    assert!(s.contains("governor of policy0: write refused (EBUSY)"));
    assert!(baseline::run_section(&r, "x", &[]).contains("> **Warning"));
}

#[test]
fn incomplete_answers_are_counted_apart() {
    let mut r = recorded();
    for c in r.cells.iter_mut() {
        if let Some(m) = c.metrics.as_mut() {
            m.incomplete = 5;
        }
    }
    let s = summary_doc(&r);
    assert!(s.contains("60 answers came back cut short or empty"), "{s}");
}

#[test]
fn real_run_with_every_cell_disturbed() {
    let r = recorded_all_disturbed();
    assert!(r
        .cells
        .iter()
        .all(|c| c.excluded.is_some() || c.metrics.is_none()));
    let s = summary_doc(&r);
    assert!(
        s.contains("**Risk level: not assessed (no baseline run counts"),
        "{s}"
    );
    assert!(s.contains("kept out of every conclusion here: cell 0 (`governor as found / unpinned / no noise`, repeat 1): disturbed by 9466 rust-lld (25 ms)"), "{s}");
    assert!(
        !s.contains("no neighbour or setting measurably moved"),
        "{s}"
    );
    // Only the capacity search (not subject to exclusion) passes.
    assert_eq!(s.matches("| pass |").count(), 1, "{s}");
    assert!(s.contains("| Capacity at the SLO measured | pass | 26 requests/s per server"));
    assert!(!s.contains("significant)"), "{s}");
    let b = baseline_doc(&r);
    assert!(b.contains("| 1 | governor as found / unpinned / noise same node | 1 | 6663.1 | 139.6 | 115.1 | 156.8 | 515.4 | 2869.8 | 2866.4 | **disturbed by 4619 rustc (746 ms), 4243 rustc (484 ms), 9468 rust-lld (330 ms), and 12 more**: excluded, re-run as cell 3 |"), "{b}");
    assert!(b.contains(
        "All 8 measured cells were kept out of the conclusions: this run supports no conclusion."
    ));
    assert!(b.contains("No configuration has a run that counts"));
}
