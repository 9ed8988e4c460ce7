//! The capacity section of the baseline document: per-server capacity at
//! the SLO per configuration, the ratio between configurations, the sweep
//! table (offered, achieved, pXX with its samples, pass/fail), and N vs N+1
//! only when the plan states the fleet's peak load. Pure.

use std::fmt::Write as _;

use super::verdict::ms;
use crate::experiment::{analysis::capacity::CapacityRow, results::Results};

fn capacity_words(row: &CapacityRow) -> String {
    match (row.capacity_rps, &row.refused) {
        (_, Some(why)) => format!("not reported: {why}"),
        (Some(c), None) => format!("{c:.0} req/s"),
        (None, None) => {
            let lowest = row
                .points
                .iter()
                .map(|p| p.offered_rps)
                .fold(f64::INFINITY, f64::min);
            if lowest.is_finite() {
                format!("below {lowest:.0} req/s (the SLO failed at every rate tried)")
            } else {
                "not measured (no sweep point)".into()
            }
        }
    }
}

fn bracket(row: &CapacityRow) -> String {
    match (row.passed_rps, row.failed_rps) {
        (Some(p), Some(f)) => format!("passed {p:.0}, failed {f:.0}"),
        (Some(p), None) => format!("passed {p:.0}; no failing rate found"),
        (None, Some(f)) => format!("failed {f:.0}"),
        (None, None) => "–".into(),
    }
}

pub fn section(r: &Results) -> String {
    let mut s = String::from("## Capacity at the SLO\n\n");
    let Some(c) = &r.capacity else {
        let _ = writeln!(
            s,
            "Not measured: the plan has no SLO or no rate sweep, or the run stopped before it."
        );
        return s;
    };
    let p = c.slo_percentile;
    let _ = writeln!(
        s,
        "Capacity is the highest offered rate at which one server keeps the SLO (p{p} <= {} ms, no errors){}{}.\n",
        ms(c.slo_ms),
        c.method
            .as_deref()
            .map(|m| format!(", found by {m}"))
            .unwrap_or_default(),
        c.resolution_pct
            .map(|x| format!(" to ±{x:.0}%"))
            .unwrap_or_default()
    );
    let fleet = c.fleet_load_rps;
    let _ = writeln!(
        s,
        "| configuration | capacity per server | vs baseline | search bracket |{}\n| --- | --- | --- | --- |{}",
        if fleet.is_some() { " N | N+1 |" } else { "" },
        if fleet.is_some() { " --- | --- |" } else { "" }
    );
    for row in &c.rows {
        let _ = write!(
            s,
            "| {} | {} | {} | {} |",
            row.label,
            capacity_words(row),
            row.ratio_vs_baseline
                .map(|x| format!("{x:.2}x"))
                .unwrap_or_else(|| "–".into()),
            bracket(row)
        );
        if fleet.is_some() {
            let o = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_else(|| "–".into());
            let _ = write!(s, " {} | {} |", o(row.replicas), o(row.replicas_n1));
        }
        s.push('\n');
    }
    match fleet {
        Some(f) => {
            let _ = writeln!(
                s,
                "\nN = ceil({f:.0} req/s peak / (capacity x {:.0}% headroom)); N+1 adds one server for a failure or a deploy.",
                c.headroom * 100.0
            );
        }
        None => {
            let _ = writeln!(
                s,
                "\nNo fleet peak load was given (`fleet_load_rps` / `--fleet-load`), so no fleet size is computed."
            );
        }
    }
    let _ = writeln!(s, "\n### Sweep\n");
    let _ = writeln!(
        s,
        "| configuration | phase | offered req/s | achieved req/s | p{p} ms | requests | errors | incomplete | SLO |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for row in &c.rows {
        let mut pts = row.points.clone();
        pts.sort_by(|a, b| a.offered_rps.total_cmp(&b.offered_rps));
        for pt in pts {
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {:.1} | {} | {} | {} | {} | {} |",
                row.label,
                if pt.phase.is_empty() {
                    "–"
                } else {
                    &pt.phase
                },
                pt.offered_rps,
                pt.achieved_rps,
                ms(pt.pctl_ms),
                if pt.samples > 0 {
                    pt.samples.to_string()
                } else {
                    "not recorded".into()
                },
                pt.errors,
                pt.incomplete,
                if pt.passes(c.slo_ms) { "pass" } else { "fail" }
            );
        }
    }
    for n in &c.notes {
        let _ = writeln!(s, "\n- {n}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report_docs::testkit::recorded;

    #[test]
    fn sweep_table_and_no_invented_fleet() {
        let mut r = recorded();
        let s = section(&r);
        assert!(
            s.contains("| governor as found / unpinned / no noise | 452 req/s | 1.00x |"),
            "{s}"
        );
        assert!(
            s.contains("| governor as found / unpinned / noise same node | 251 req/s | 0.56x |")
        );
        assert!(s.contains("| governor as found / unpinned / noise same node | – | 452.3 | 350.1 | 641 | not recorded | 0 | 0 | fail |"), "{s}");
        assert!(s.contains("N+1 |"));
        if let Some(c) = r.capacity.as_mut() {
            c.fleet_load_rps = None;
            c.rows[0].capacity_rps = None;
            c.rows[0].refused =
                Some("answers incomplete above 1% (the server cuts streams)".into());
        }
        let s = section(&r);
        assert!(!s.contains("N+1"), "{s}");
        assert!(s.contains("No fleet peak load was given"));
        assert!(s.contains("not reported: answers incomplete above 1%"));
    }
}
