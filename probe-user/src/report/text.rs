//! Human rendering of a [`RecordReport`].

use std::fmt::Write as _;

use super::model::{EndReason, RecordReport, ThreadReport};

/// Format nanoseconds with a unit a person reads at a glance.
pub fn ns(v: u64) -> String {
    let f = v as f64;
    if v < 1_000 {
        format!("{v} ns")
    } else if v < 1_000_000 {
        format!("{:.1} us", f / 1e3)
    } else if v < 1_000_000_000 {
        format!("{:.2} ms", f / 1e6)
    } else {
        format!("{:.3} s", f / 1e9)
    }
}

fn opt_ns(v: Option<u64>) -> String {
    v.map(ns).unwrap_or_else(|| "-".into())
}

/// Render the report; `max_threads` limits the per-thread table (0 = all).
pub fn render(r: &RecordReport, max_threads: usize) -> String {
    let mut o = String::new();
    let p = &r.process;
    let how = match r.end_reason {
        EndReason::Duration => "",
        EndReason::Interrupted => " (interrupted)",
        EndReason::TargetExited => " (target exited during the run)",
    };
    let _ = writeln!(
        o,
        "tailprobe record: pid {} ({}){}, {:.2} s{}, kernel {}",
        r.target.pid,
        r.target.comm,
        if r.target.builtin {
            " [built-in workload]"
        } else {
            ""
        },
        r.duration_ns as f64 / 1e9,
        how,
        r.kernel_release
    );
    let _ = writeln!(o, "threads seen: {}", p.threads_seen);
    let w = &p.runq_wait;
    let _ = writeln!(
        o,
        "run-queue wait: {} waits, total {}, mean {}, p50 {}, p95 {}, p99 {}, max {}",
        w.count,
        ns(w.total_ns),
        ns(w.mean_ns),
        opt_ns(w.p50_ns),
        opt_ns(w.p95_ns),
        opt_ns(w.p99_ns),
        ns(w.max_ns)
    );
    let _ = writeln!(
        o,
        "on CPU: {}; context switches: {} voluntary, {} involuntary; wakeups: {}",
        ns(p.oncpu_ns),
        p.voluntary_switches,
        p.involuntary_switches,
        p.wakeups
    );
    let m = &p.migrations;
    if r.topology_known {
        let _ = writeln!(
            o,
            "migrations: {} (cross-LLC {}, cross-NUMA {})",
            m.total, m.cross_llc, m.cross_numa
        );
    } else {
        let _ = writeln!(
            o,
            "migrations: {} (CPU topology not available here: not classified)",
            m.total
        );
    }
    if let (Some(k), Some(pct)) = (&p.kernel, p.runq_agreement_pct) {
        let _ = writeln!(
            o,
            "kernel's own accounting (schedstat/status, threads alive throughout): run-queue {} \
             (ours {:.1}% of it), switches {} voluntary / {} involuntary",
            ns(k.runq_wait_ns),
            pct,
            k.voluntary_switches,
            k.involuntary_switches
        );
    }
    if r.lossy {
        let lost: Vec<String> = r
            .losses
            .iter()
            .filter(|l| l.total > 0)
            .map(|l| format!("{} {}", l.name, l.total))
            .collect();
        let _ = writeln!(
            o,
            "WARNING: events were lost, numbers may be low: {}",
            lost.join(", ")
        );
    }
    for n in &r.notes {
        let _ = writeln!(o, "note: {n}");
    }
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:>8} {:<16} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>7} {:>7} {:>6}",
        "TID", "COMM", "WAITS", "RUNQ", "P50", "P95", "P99", "MAX", "ONCPU", "VOL", "INVOL", "MIGR"
    );
    let shown = if max_threads == 0 {
        r.threads.len()
    } else {
        max_threads.min(r.threads.len())
    };
    for t in r.threads.iter().take(shown) {
        row(&mut o, t);
    }
    if shown < r.threads.len() {
        let _ = writeln!(
            o,
            "... {} more threads (--all-threads shows them)",
            r.threads.len() - shown
        );
    }
    o
}

fn row(o: &mut String, t: &ThreadReport) {
    let mut comm = t.comm.clone();
    if !t.alive_at_end {
        comm.push_str(" [exited]");
    }
    comm.truncate(16);
    let w = &t.runq_wait;
    let _ = writeln!(
        o,
        "{:>8} {:<16} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>7} {:>7} {:>6}",
        t.tid,
        comm,
        w.count,
        ns(w.total_ns),
        opt_ns(w.p50_ns),
        opt_ns(w.p95_ns),
        opt_ns(w.p99_ns),
        ns(w.max_ns),
        ns(t.oncpu_ns),
        t.voluntary_switches,
        t.involuntary_switches,
        t.migrations.total
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(ns(999), "999 ns");
        assert_eq!(ns(1_500), "1.5 us");
        assert_eq!(ns(2_345_678), "2.35 ms");
        assert_eq!(ns(3_000_000_000), "3.000 s");
    }
}
