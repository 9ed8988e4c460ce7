//! The baseline's "Scheduler signals and why the tail is slow" section: the
//! signals per configuration (run-queue wait, switches, migrations, IRQ time,
//! faults, IPC, probe cost), where the slow requests' extra time goes, and the
//! rank correlations as a secondary view. Pure.

use std::fmt::Write as _;

use crate::experiment::{analysis::stats::Estimate, results::Results};
use crate::report_docs::{
    fmt::{est, opt},
    why,
};

pub(super) fn signals_table(s: &mut String, r: &Results) {
    let _ = writeln!(
        s,
        "Server threads only, per cell over the whole recording (warm-up included), mean ± 95% interval over repeats.\n\n\
         | configuration | run-queue wait ms | involuntary switches | migrations | IRQ time on server threads ms | page faults | IPC | probe cost % CPU |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for c in r.ran() {
        let cells: Vec<_> = r
            .cells
            .iter()
            .filter(|x| x.config == c.config && x.counts())
            .filter_map(|x| x.metrics.as_ref())
            .collect();
        let ipc: Vec<f64> = cells.iter().filter_map(|m| m.ipc).collect();
        let cost: Vec<f64> = cells.iter().filter_map(|m| m.probe_cpu_pct).collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            c.label,
            est(&c.runq_wait_ms, 1),
            est(&c.involuntary_switches, 0),
            est(&c.migrations, 0),
            est(&c.irq_stolen_ms, 2),
            est(&c.page_faults, 0),
            if ipc.is_empty() {
                "not measured (no PMU)".into()
            } else {
                est(&Estimate::of(&ipc), 2)
            },
            if cost.is_empty() {
                "not measured".into()
            } else {
                est(&Estimate::of(&cost), 2)
            },
        );
    }
}

pub fn sched_section(r: &Results) -> String {
    let mut s = String::from("## Scheduler signals and why the tail is slow\n\n");
    signals_table(&mut s, r);
    let head = why::headline(r);
    if let Some(a) = &r.attribution {
        let _ = writeln!(
            s,
            "\n### Where the slow requests' extra time goes\n\nMethod: {}. Slow requests are those above p95, typical ones at or below the median; the gap is the difference of their means, split by component (ms per request).\n\n\
             | configuration | slow ms | typical ms | gap ms | queueing | waiting for a CPU | interrupt work | computing |\n| --- | --- | --- | --- | --- | --- | --- | --- |",
            a.method
        );
        let gaps: Vec<why::Gap> = if a.gaps.is_empty() {
            a.per_config
                .iter()
                .filter_map(|(l, t)| why::gap(l, t))
                .collect()
        } else {
            a.gaps
                .iter()
                .filter_map(|(l, g)| why::from_analysis(l, g))
                .collect()
        };
        for g in &gaps {
            let part = |w: &str| {
                g.parts
                    .iter()
                    .find(|p| p.what.starts_with(w))
                    .map(|p| {
                        format!(
                            "{:.2} ({:.0}%)",
                            why::clean(p.ms, 2),
                            why::clean(p.share, 0)
                        )
                    })
                    .unwrap_or_else(|| "–".into())
            };
            let _ = writeln!(
                s,
                "| {} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} |",
                g.label,
                g.tail_ms,
                g.typical_ms,
                g.gap_ms,
                part("queueing"),
                part("waiting for a CPU"),
                part("interrupt work"),
                part("computing")
            );
        }
        if let Some(g) = &head {
            let _ = writeln!(s, "\n- `{}`: {}", g.label, g.sentence());
        }
    }
    if let Some(cor) = &r.correlation {
        let _ = writeln!(
            s,
            "\n### Secondary: rank correlation with latency\n\n{}. Requests from {} cells pooled (n = {}). A signal summed over a request grows with the request's length, so a high rho alone does not make a cause; a signal is named below only when its component explains at least {:.0}% of the gap above.\n\n\
             | kernel signal | Spearman rho (all cells) | rho (baseline only) | mean over requests above p95 | mean at or below p50 | share of the gap (attribution above) |\n| --- | --- | --- | --- | --- | --- |",
            cor.method,
            cor.cells,
            cor.pooled.first().map(|x| x.requests).unwrap_or(0),
            head.as_ref().map(|g| g.min_share).unwrap_or(why::NAME_SHARE_PCT)
        );
        for (i, row) in cor.pooled.iter().enumerate() {
            let unit = |v: f64| {
                if row.signal.contains("wait") || row.signal.contains("IRQ") {
                    format!("{:.3} ms", v / 1e6)
                } else {
                    format!("{v:.2}")
                }
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} |",
                row.signal,
                opt(row.rho, 2),
                opt(cor.baseline.get(i).and_then(|b| b.rho), 2),
                unit(row.tail_mean),
                unit(row.typical_mean),
                head.as_ref()
                    .and_then(|g| why::share_of_signal(row, g))
                    .or(row.gap_share_pct)
                    .map(|g| format!("{:.1}%", why::clean(g, 1)))
                    .unwrap_or_else(|| "– (a count, or not recorded)".into())
            );
        }
        match head.as_ref().and_then(|g| why::nameable(&cor.pooled, g)) {
            Some((x, share)) => {
                let _ = writeln!(s, "\n- **{}** ranks with latency (rho {}) and its component is {share:.0}% of the gap.", x.signal, opt(x.rho, 2));
            }
            None => {
                let _ = writeln!(s, "\n- No signal both ranks with latency and explains the stated share of the gap; the attribution above is the answer.");
            }
        }
    }
    let rec = match &head {
        Some(g) => match g.parts.first() {
            Some(p) if p.share >= g.min_share && p.what.starts_with("waiting for a CPU") => "Give the server CPUs nobody else runs on, and alert on the server threads' run-queue wait rather than on average CPU utilisation.".to_string(),
            Some(p) if p.share >= g.min_share && p.what.starts_with("queueing") => "The tail is queueing inside the server at the offered load: size capacity from the SLO percentile (see the capacity section), not from the average.".to_string(),
            Some(p) if p.share >= g.min_share && p.what.starts_with("interrupt") => "Move device interrupts off the server's CPUs (see the IRQ section).".to_string(),
            _ => "No scheduler change: the gap is the requests' own work.".to_string(),
        },
        None => "None from this run: no tail attribution was measured.".into(),
    };
    let _ = writeln!(s, "\n**Recommendation.** {rec}");
    s
}
