//! What happened to the runs themselves: a failed restore (shown first,
//! prominently), what the server answered (complete, errors, timeouts,
//! incomplete, output tokens), who disturbed which cell and what was done
//! about it, and every cell (not-run cells one line per reason). Pure.

use std::fmt::Write as _;

use super::fmt::not_run_lines;
use crate::experiment::results::{CellResult, CellStatus, Results};

/// The restore failures, one line each, or nothing when all went back.
pub fn restore_failures(r: &Results) -> Vec<String> {
    let mut out: Vec<String> = r
        .cells
        .iter()
        .filter_map(|c| Some((c, c.restore.as_ref()?)))
        .filter(|(_, x)| !x.complete)
        .map(|(c, x)| {
            format!(
                "cell {} ({}, repeat {}): {}",
                c.order,
                c.label,
                c.repeat + 1,
                if x.failures.is_empty() {
                    "incomplete, no detail recorded".to_string()
                } else {
                    x.failures.join("; ")
                }
            )
        })
        .collect();
    if out.is_empty() && r.restore_failed {
        out.push("a cell could not put the node back completely (no detail recorded)".into());
    }
    out
}

/// A warning block for the top of a document, empty when the node was put
/// back completely.
pub fn restore_banner(r: &Results) -> String {
    let f = restore_failures(r);
    if f.is_empty() {
        return String::new();
    }
    let mut s = String::from("> **Warning: the node was not put back completely after the experiment.** Check these settings by hand (`tailprobe node restore` retries from the journal):\n");
    for x in f {
        let _ = writeln!(s, "> - {x}");
    }
    s.push('\n');
    s
}

fn counted<'a>(r: &'a Results, label: &str) -> Vec<&'a CellResult> {
    r.cells
        .iter()
        .filter(|c| c.label == label && c.counts())
        .collect()
}

/// Answers per configuration: complete, errors, timeouts, incomplete, and
/// output tokens where the answers carry them.
pub fn answers_section(r: &Results) -> String {
    let mut s = String::from("## What the server answered\n\n");
    let _ = writeln!(
        s,
        "Per configuration, summed over the repeats that count. Incomplete answers (cut short or empty) are not successes and are not in any latency figure.\n\n\
         | configuration | complete | errors | timeouts | incomplete | output tokens per answer (avg, min-max; asked) | output tokens/s |\n| --- | --- | --- | --- | --- | --- | --- |"
    );
    if r.ran().next().is_none() {
        let _ = writeln!(
            s,
            "No configuration has a run that counts toward the conclusions."
        );
    }
    for c in r.ran() {
        let cells = counted(r, &c.label);
        let ms: Vec<_> = cells.iter().filter_map(|x| x.metrics.as_ref()).collect();
        let sum = |f: &dyn Fn(&crate::experiment::results::CellMetrics) -> u64| {
            ms.iter().map(|m| f(m)).sum::<u64>()
        };
        let toks: Vec<_> = ms.iter().filter_map(|m| m.tokens).collect();
        let (per, rate) = if toks.is_empty() {
            (
                "not measured (answers carry no token count)".to_string(),
                "not measured".to_string(),
            )
        } else {
            let n: u64 = toks.iter().map(|t| t.answers).sum();
            let avg = toks
                .iter()
                .map(|t| t.per_request_avg * t.answers as f64)
                .sum::<f64>()
                / (n.max(1) as f64);
            let lo = toks.iter().map(|t| t.per_request_min).min().unwrap_or(0);
            let hi = toks.iter().map(|t| t.per_request_max).max().unwrap_or(0);
            let tps = toks.iter().map(|t| t.tokens_per_s).sum::<f64>() / toks.len() as f64;
            (
                format!("{avg:.1} ({lo}-{hi}; {})", toks[0].requested),
                format!("{tps:.1}"),
            )
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {per} | {rate} |",
            c.label,
            sum(&|m| m.ok),
            sum(&|m| m.errors),
            sum(&|m| m.timeouts),
            sum(&|m| m.incomplete)
        );
    }
    s
}

/// Who took CPU time from the server, per cell; disturbed cells and what
/// was done about them.
pub fn interference_section(r: &Results) -> String {
    let mut s = String::from("## Interference: who took CPU time from the server\n\n");
    let with: Vec<&CellResult> = r
        .cells
        .iter()
        .filter(|c| c.metrics.as_ref().is_some_and(|m| m.interference.is_some()))
        .collect();
    if with.is_empty() {
        let _ = writeln!(s, "Not measured in this run: the results carry no per-cell account of the server's lost CPU time, so a disturbance by another process could not be detected.");
        return s;
    }
    let _ = writeln!(s, "The server threads' run-queue wait after a preemption, by who preempted them (ms).\n\n| # | configuration | repeat | run-queue wait | own threads | planned neighbour | load generator | kernel threads | other processes | after a wake-up | verdict |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    use crate::experiment::results::TakerKind as K;
    for c in &with {
        let Some(i) = c.metrics.as_ref().and_then(|m| m.interference.as_ref()) else {
            continue;
        };
        let k = |kind: K| {
            i.by_kind
                .iter()
                .find(|(x, _)| *x == kind)
                .map(|(_, v)| format!("{v:.1}"))
                .unwrap_or_else(|| "0".into())
        };
        let verdict = match (&i.disturbed, &c.excluded) {
            (Some(d), Some(x)) => format!(
                "**{}**: excluded{}{}",
                d.text,
                if x.reason.starts_with(&d.text) {
                    String::new()
                } else {
                    format!(" ({})", x.reason)
                },
                x.rerun_by
                    .map(|o| format!(", re-run as cell {o}"))
                    .unwrap_or_else(|| ", not re-run (time budget)".into())
            ),
            (Some(d), None) => format!("**{}**: kept (not excluded)", d.text),
            (None, Some(x)) => format!("excluded: {}", x.reason),
            (None, None) => format!(
                "clean (threshold {:.1} ms: {})",
                i.threshold_ms, i.threshold_rule
            ),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.1} | {} | {} | {} | {} | {} | {:.1} | {verdict} |",
            c.order,
            c.label,
            c.repeat + 1,
            i.runq_wait_ms,
            k(K::Own),
            k(K::Neighbour),
            k(K::LoadGenerator),
            k(K::Kernel),
            k(K::Other),
            i.after_wakeup_ms
        );
    }
    let excluded: Vec<&CellResult> = r.excluded().collect();
    let _ = writeln!(
        s,
        "\n{}",
        if excluded.is_empty() {
            "No cell was kept out of the conclusions.".to_string()
        } else if !r.cells.iter().any(|c| c.counts()) {
            format!(
                "All {} measured cells were kept out of the conclusions: this run supports no conclusion. Run it again when the machine is quiet (the processes named above are what to stop).",
                excluded.len()
            )
        } else {
            format!(
                "{} cell(s) kept out of the conclusions; every figure and verdict in these documents rests on the other cells.",
                excluded.len()
            )
        }
    );
    s
}

/// Every cell that ran, failed or was skipped; not-applicable ones
/// collapse to one line per reason.
pub fn cells_section(r: &Results, prefix: &str) -> String {
    let mut s = String::from("## Every cell\n\n| # | repeat | configuration | status | p95 ms | placement | noise CPUs | raw snapshots |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n");
    for c in r
        .cells
        .iter()
        .filter(|c| c.status != CellStatus::NotApplicable)
    {
        let st = match (&c.status, &c.excluded, c.rerun_of) {
            (CellStatus::Ran, Some(x), _) => format!("excluded: {}", x.reason),
            (CellStatus::Ran, None, Some(o)) => format!("ran (re-run of cell {o})"),
            (CellStatus::Ran, None, None) => "ran".to_string(),
            (x, _, _) => format!("{}: {}", x.words(), c.reason.as_deref().unwrap_or("")),
        };
        let raw = c
            .raw
            .iter()
            .map(|p| format!("[{}]({prefix}{p})", p.rsplit('/').next().unwrap_or(p)))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            c.order,
            c.repeat + 1,
            c.label,
            st,
            c.metrics
                .as_ref()
                .map(|m| format!("{:.2}", m.latency_ms.p95))
                .unwrap_or_else(|| "–".into()),
            c.placement
                .as_ref()
                .map(|p| p.why.clone())
                .unwrap_or_else(|| if c.status == CellStatus::Ran {
                    "unpinned".into()
                } else {
                    "–".into()
                }),
            c.noise_cpus
                .as_ref()
                .map(|v| crate::cpulist::Display(v).to_string())
                .unwrap_or_else(|| "–".into()),
            if raw.is_empty() { "–".into() } else { raw }
        );
        for n in &c.notes {
            let _ = writeln!(s, "|  |  |  | note: {n} |  |  |  |  |");
        }
    }
    let traces = r
        .cells
        .iter()
        .filter(|c| c.raw.iter().any(|p| p.ends_with(".pftrace")))
        .count();
    if traces > 0 {
        let _ = writeln!(
            s,
            "\n{traces} cells have a Perfetto trace (`trace.pftrace` in the raw snapshots: \
             the server's threads as the kernel ran them and every request on one clock; open \
             it at ui.perfetto.dev, see docs/timeline.md). A trace that reached the plan's \
             `trace_mb` cap says in its cell's notes what was left out."
        );
    }
    let na = r
        .cells
        .iter()
        .filter(|c| c.status == CellStatus::NotApplicable)
        .count();
    let lines: Vec<String> = not_run_lines(&r.configs)
        .into_iter()
        .filter(|l| l.starts_with("- Not applicable"))
        .collect();
    if na > 0 {
        let _ = writeln!(
            s,
            "\n{na} cells not applicable on this node, not run:\n\n{}",
            lines.join("\n")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::results::{
        Disturbance, Exclusion, Interference, RestoreReport, Taker, TakerKind, TokenStats,
    };
    use crate::report_docs::testkit::recorded;

    #[test]
    fn failed_restore_is_a_banner() {
        let mut r = recorded();
        assert!(restore_banner(&r).is_empty());
        r.cells[0].restore = Some(RestoreReport {
            complete: false,
            failures: vec!["/proc/irq/24/smp_affinity_list: EIO (managed IRQ)".into()],
        });
        r.restore_failed = true;
        let b = restore_banner(&r);
        assert!(b.starts_with("> **Warning: the node was not put back completely"));
        assert!(
            b.contains("repeat 1): /proc/irq/24/smp_affinity_list: EIO"),
            "{b}"
        );
    }

    #[test]
    fn disturbed_cell_names_the_process_and_what_was_done() {
        let mut r = recorded();
        assert!(interference_section(&r).starts_with("## Interference"));
        assert!(interference_section(&r).contains("Not measured in this run"));
        let hog = Taker {
            kind: TakerKind::Other,
            pid: 4242,
            tgid: 4242,
            comm: "stress-ng".into(),
            count: 900,
            ms: 312.0,
        };
        let c = &mut r.cells[0];
        if let Some(m) = c.metrics.as_mut() {
            m.interference = Some(Interference {
                runq_wait_ms: 1900.0,
                by_kind: vec![(TakerKind::Own, 1500.0), (TakerKind::Other, 312.0)],
                after_wakeup_ms: 88.0,
                takers: vec![hog.clone()],
                threshold_ms: 95.0,
                threshold_rule: "5% of the run-queue wait, at least 10 ms".into(),
                disturbed: Some(Disturbance {
                    by: vec![hog],
                    total_ms: 312.0,
                    text: "disturbed by 4242 stress-ng (312 ms)".into(),
                }),
            });
        }
        c.excluded = Some(Exclusion {
            reason: "disturbed by 4242 stress-ng (312 ms)".into(),
            rerun_by: Some(81),
        });
        let s = interference_section(&r);
        assert!(
            s.contains("**disturbed by 4242 stress-ng (312 ms)**: excluded"),
            "{s}"
        );
        assert!(s.contains("re-run as cell 81"));
        assert!(s.contains("| 1500.0 | 0 | 0 | 0 | 312.0 | 88.0 |"), "{s}");
        assert!(s.contains("1 cell(s) kept out of the conclusions"));
        let cells = cells_section(&r, "");
        assert!(cells.contains("excluded: disturbed by 4242 stress-ng"));
    }

    #[test]
    fn not_applicable_cells_collapse_and_tokens_show() {
        let mut r = recorded();
        let s = cells_section(&r, "");
        assert!(s.contains("69 cells not applicable on this node"), "{s}");
        assert!(!s.contains("| not applicable on this node:"));
        // 3 reasons: no cpufreq (governors), no second node for remote
        // pinning, no second node for other-node noise.
        assert_eq!(s.matches("\n- Not applicable").count(), 3, "{s}");
        let a = answers_section(&r);
        assert!(a.contains("not measured (answers carry no token count)"));
        for c in r.cells.iter_mut() {
            if let Some(m) = c.metrics.as_mut() {
                m.tokens = Some(TokenStats {
                    requested: 32,
                    answers: 100,
                    per_request_avg: 1.0,
                    per_request_min: 1,
                    per_request_p50: 1.0,
                    per_request_max: 1,
                    tokens_per_s: 250.0,
                });
                m.incomplete = 7;
            }
        }
        let a = answers_section(&r);
        assert!(a.contains("| 1.0 (1-1; 32) | 250.0 |"), "{a}");
        assert!(a.contains("| 21 | 1.0"), "{a}");
    }
}
