//! Human rendering of a [`RecordReport`].

use std::fmt::Write as _;

use super::model::{EndReason, RecordReport, ThreadReport};
use probe_common::loss;

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

/// A runqlat-style histogram: one row per power of two of the fine buckets.
pub fn histogram(rows: &[(u64, u64, u64)], width: usize) -> String {
    let mut pow: Vec<(u32, u64)> = Vec::new();
    for (lo, _, c) in rows {
        let p = 63 - lo.max(&1).leading_zeros();
        match pow.last_mut() {
            Some((q, n)) if *q == p => *n += c,
            _ => pow.push((p, *c)),
        }
    }
    let Some(peak) = pow.iter().map(|(_, c)| *c).max() else {
        return String::new();
    };
    let mut o = String::new();
    let (first, last) = (pow[0].0, pow[pow.len() - 1].0);
    for p in first..=last {
        let c = pow
            .iter()
            .find(|(q, _)| *q == p)
            .map(|(_, c)| *c)
            .unwrap_or(0);
        let stars = ((c as f64 / peak as f64) * width as f64).round() as usize;
        let _ = writeln!(
            o,
            "  {:>10} .. {:<10} {:>9} |{:<width$}|",
            ns(1u64 << p),
            ns((1u64 << (p + 1)) - 1),
            c,
            "*".repeat(stars),
        );
    }
    o
}

/// Render the report; `max_threads` limits the per-thread table (0 = all).
pub fn render(r: &RecordReport, max_threads: usize) -> String {
    let mut o = String::new();
    header(&mut o, r);
    waits(&mut o, r);
    irqs(&mut o, r);
    numa(&mut o, r);
    cpus_and_outliers(&mut o, r);
    run_quality(&mut o, r);
    threads_table(&mut o, r, max_threads);
    o
}

/// The target, how long and how the run ended.
fn header(o: &mut String, r: &RecordReport) {
    let how = match r.end_reason {
        EndReason::Duration => "",
        EndReason::Interrupted => " (interrupted)",
        EndReason::TargetExited => " (target exited during the run)",
        EndReason::CommandExited => " (command finished)",
        EndReason::Stopped => " (stopped)",
    };
    let what = match r.target.kind {
        "builtin" => format!("pid {} [built-in workload]", r.target.pid),
        "pid" => format!("pid {} ({})", r.target.pid, r.target.comm),
        "tid" => format!(
            "tid {} ({}) of pid {}",
            r.target.spec, r.target.comm, r.target.pid
        ),
        k => format!(
            "{k} {} ({} processes)",
            r.target.spec,
            r.target.processes.len()
        ),
    };
    let _ = writeln!(
        o,
        "tailprobe record: {what}, {:.2} s{how}, kernel {}",
        r.duration_ns as f64 / 1e9,
        r.kernel_release
    );
    if let Some(cg) = &r.target.cgroup {
        let rt = r
            .target
            .runtime
            .map(|x| format!(" ({x})"))
            .unwrap_or_default();
        let _ = writeln!(o, "cgroup{rt}: {cg}");
    }
    if !r.target.ns_pids.is_empty() {
        let pairs: Vec<String> = r
            .target
            .ns_pids
            .iter()
            .take(8)
            .map(|(host, ns)| format!("{host} = {ns}"))
            .collect();
        let more = r.target.ns_pids.len().saturating_sub(8);
        let _ = writeln!(
            o,
            "pids inside their PID namespace (host = namespace): {}{}",
            pairs.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
    }
    if let Some(code) = r.target.command_exit_code {
        let _ = writeln!(o, "command exit status: {code}");
    }
}

/// Run-queue waits, time on CPU, switches, migrations and preemptors.
fn waits(o: &mut String, r: &RecordReport) {
    let p = &r.process;
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
    o.push_str(&histogram(&p.runq_histogram, 40));
    let _ = writeln!(
        o,
        "on CPU: {}; context switches: {} voluntary, {} involuntary; wakeups: {}",
        ns(p.oncpu_ns),
        p.voluntary_switches,
        p.involuntary_switches,
        p.wakeups
    );
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
        if let Some(n) = &p.runq_agreement_note {
            let _ = writeln!(o, "  note: {n}");
        }
    }
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
    if !r.preemptors.is_empty() {
        let _ = writeln!(o, "preempted by (top 5, by the wait that followed):");
        for x in r.preemptors.iter().take(5) {
            let _ = writeln!(
                o,
                "  {:>8} {:<16} {:>7} times, {}",
                x.pid,
                x.comm,
                x.count,
                ns(x.target_wait_ns)
            );
        }
    }
}

/// Time IRQs and softirqs took from the target, and the softirq delay.
fn irqs(o: &mut String, r: &RecordReport) {
    let p = &r.process;
    let _ = writeln!(
        o,
        "IRQ time stolen: hard {} in {}, soft {} in {}; user page faults: {}",
        ns(p.hardirq.total_ns),
        p.hardirq.count,
        ns(p.softirq.total_ns),
        p.softirq.count,
        p.page_faults
    );
    for x in r.irqs.iter().take(5) {
        let _ = writeln!(
            o,
            "  irq {:>4} {:<24} {:>7} times, {} (max {})",
            x.irq,
            x.name,
            x.count,
            ns(x.total_ns),
            ns(x.max_ns)
        );
    }
    for x in r.softirqs.iter().take(5) {
        let _ = writeln!(
            o,
            "  softirq {:<8} {:>7} times, {} (max {})",
            x.name,
            x.count,
            ns(x.total_ns),
            ns(x.max_ns)
        );
    }
    if !r.softirq_delay.is_empty() {
        let parts: Vec<String> = r
            .softirq_delay
            .iter()
            .map(|d| format!("{} mean {} max {}", d.name, ns(d.mean_ns), ns(d.max_ns)))
            .collect();
        let _ = writeln!(
            o,
            "softirq raise-to-run delay on the target's CPUs: {}",
            parts.join("; ")
        );
    }
}

/// NUMA: nodes, balancing, task and page moves, memory by node.
fn numa(o: &mut String, r: &RecordReport) {
    let n = &r.numa;
    let _ = writeln!(
        o,
        "NUMA: {} node(s), balancing {}; task moves {}, swaps {}, failed moves {}; remote hint faults {}",
        n.nodes,
        match n.balancing {
            Some(0) => "off".to_string(),
            Some(v) => format!("on ({v})"),
            None => "not built in".to_string(),
        },
        n.task_events.moves,
        n.task_events.swaps,
        n.task_events.sticks,
        match (n.remote_hint_faults, n.remote_hint_fault_share) {
            (Some(v), Some(s)) => format!("{v} ({:.1}% of hint faults)", s * 100.0),
            (Some(v), None) => v.to_string(),
            _ => "not available here".to_string(),
        }
    );
    if !n.kib_per_node_end.is_empty() {
        let parts: Vec<String> = n
            .kib_per_node_end
            .iter()
            .map(|(k, v)| format!("node{k} {} MiB", v / 1024))
            .collect();
        let _ = writeln!(o, "  target memory by node: {}", parts.join(", "));
    }
    for m in &n.migrate_pages {
        let _ = writeln!(
            o,
            "  page migrations ({}): {} events, {} pages ({} events in target context)",
            m.name, m.events, m.pages_succeeded, m.target_events
        );
    }
    for note in &n.notes {
        let _ = writeln!(o, "  {note}");
    }
}

/// On-CPU time by CPU, and the outliers with the worst three.
fn cpus_and_outliers(o: &mut String, r: &RecordReport) {
    if !r.cpus.is_empty() {
        let parts: Vec<String> = r
            .cpus
            .iter()
            .map(|c| format!("cpu{} {}", c.cpu, ns(c.target_oncpu_ns)))
            .collect();
        let _ = writeln!(o, "on-CPU time by CPU: {}", parts.join(", "));
    }
    let total_outliers = r.outliers.len() as u64 + r.outliers_not_kept;
    let _ = writeln!(
        o,
        "outliers: {total_outliers} (run-queue waits >= {}, IRQs >= {}); {} windows of {}",
        ns(r.outlier_thresholds_ns.runq_wait_ns),
        ns(r.outlier_thresholds_ns.irq_ns),
        r.windows.len(),
        ns(r.window_ns)
    );
    let mut worst: Vec<_> = r.outliers.iter().collect();
    worst.sort_by_key(|o| std::cmp::Reverse(o.value_ns));
    for x in worst.iter().take(3) {
        let _ = writeln!(
            o,
            "  {} {} on tid {} cpu {} at t+{}",
            x.kind,
            ns(x.value_ns),
            x.tid,
            x.cpu,
            ns(x.ts_ns.saturating_sub(r.start_monotonic_ns))
        );
    }
}

/// What the probes cost, what was lost, left out or not measured, how
/// long attaching took, and the notes.
fn run_quality(o: &mut String, r: &RecordReport) {
    if r.overhead.measured {
        let _ = writeln!(
            o,
            "probe cost: {} events ({:.0}/s), {} in the kernel = {:.3}% of one CPU",
            r.overhead.total_events,
            r.overhead.events_per_second.unwrap_or(0.0),
            ns(r.overhead.total_run_time_ns),
            r.overhead.cpu_share_pct.unwrap_or(0.0)
        );
    }
    let rebuilt = loss::NAMES[loss::SWITCH_IN_REBUILT as usize];
    if let Some(l) = r.losses.iter().find(|l| l.name == rebuilt && l.total > 0) {
        let _ = writeln!(
            o,
            "rebuilt: {} switch-ins of target threads that the kernel did not trace; each slice and wait from its own accounting (docs/accuracy.md)",
            l.total
        );
    }
    if r.lossy {
        let lost: Vec<String> = r
            .losses
            .iter()
            .filter(|l| l.total > 0 && loss::is_loss(l.name))
            .map(|l| format!("{} {}", l.name, l.total))
            .collect();
        let _ = writeln!(
            o,
            "WARNING: events were lost, numbers may be low: {}",
            lost.join(", ")
        );
    } else {
        let _ = writeln!(o, "no events lost");
    }
    for u in &r.unavailable {
        let _ = writeln!(o, "not measured: {u}");
    }
    for l in &r.left_out {
        let _ = writeln!(o, "not loaded: {} ({})", l.program, l.reason);
    }
    let a = &r.attach_ms;
    let _ = writeln!(
        o,
        "attached in {:.0} ms (first program {:.0} ms after start; start-up at {}, then priority {})",
        a.all, a.first, a.startup_priority, a.priority
    );
    for note in &r.notes {
        let _ = writeln!(o, "note: {note}");
    }
}

/// The per-thread table, `max_threads` rows at most (0 = all).
fn threads_table(o: &mut String, r: &RecordReport, max_threads: usize) {
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:>8} {:<16} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>7} {:>7} {:>6} {:>9} {:>7}",
        "TID",
        "COMM",
        "WAITS",
        "RUNQ",
        "P50",
        "P95",
        "P99",
        "MAX",
        "ONCPU",
        "VOL",
        "INVOL",
        "MIGR",
        "IRQ",
        "FAULTS"
    );
    let shown = if max_threads == 0 {
        r.threads.len()
    } else {
        max_threads.min(r.threads.len())
    };
    for t in r.threads.iter().take(shown) {
        row(o, t);
    }
    if shown < r.threads.len() {
        let _ = writeln!(
            o,
            "... {} more threads (--all-threads shows them)",
            r.threads.len() - shown
        );
    }
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
        "{:>8} {:<16} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9} {:>10} {:>7} {:>7} {:>6} {:>9} {:>7}",
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
        t.migrations.total,
        ns(t.hardirq.total_ns + t.softirq.total_ns),
        t.page_faults
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

    #[test]
    fn histogram_rows_per_power_of_two() {
        // 10 waits in [1024, 2047], 5 in [4096, 8191]; nothing in between.
        let rows = [(1024, 1087, 6), (1088, 1151, 4), (4096, 4351, 5)];
        let h = histogram(&rows, 10);
        let lines: Vec<&str> = h.lines().collect();
        assert_eq!(lines.len(), 3, "{h}");
        assert!(lines[0].contains("10 |**********|"), "{h}");
        assert!(lines[1].contains(" 0 |"), "{h}");
        assert!(lines[2].contains("5 |*****"), "{h}");
        assert_eq!(histogram(&[], 10), "");
    }
}
