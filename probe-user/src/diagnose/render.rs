//! The diagnosis as text for a person (pure).

use std::fmt::Write as _;

use super::{finding::DetectorStatus, preemption::ms, Diagnosis};

pub fn text(d: &Diagnosis) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "tailprobe diagnose: {} {} ({}), {:.1} s, {} threads: on-CPU {:.1} ms, run-queue wait {:.1} ms",
        d.target.kind,
        d.target.spec,
        d.target.comm,
        d.duration_ns as f64 / 1e9,
        d.threads_seen,
        ms(d.target_oncpu_ns),
        ms(d.target_runq_wait_ns)
    );
    let _ = writeln!(o);
    if d.findings.is_empty() {
        let _ = writeln!(
            o,
            "No CPU-side cause found: no detector reached its threshold (rules below)."
        );
    } else {
        let _ = writeln!(
            o,
            "Findings, the most target time lost first ({}):",
            d.findings.len()
        );
        for (i, f) in d.findings.iter().enumerate() {
            let lost = if f.impact_ns == 0 {
                "time lost not measured".to_string()
            } else {
                format!("{:.1} ms of target thread-time", ms(f.impact_ns))
            };
            let _ = writeln!(
                o,
                "{}. {} [{}, confidence {}, {lost}]",
                i + 1,
                f.what,
                f.detector,
                f.confidence.word(),
            );
            for e in &f.evidence {
                let _ = writeln!(o, "   - {}", e.text);
            }
            let _ = writeln!(o, "   what to do: {}", f.advice);
        }
    }
    if let Some(l) = &d.load {
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "Load driven: {} at {} req/s: {} sent, {} ok, p50 {:.2} ms, p95 {:.2} ms (from the \
             intended send time); {} matched to the server thread that served them",
            l.url, l.rate, l.sent, l.ok, l.p50_ms, l.p95_ms, l.served_matched
        );
        for t in &l.ties {
            let _ = writeln!(o, "  {:<17} {}", t.detector, t.text);
        }
        for n in &l.not_tied {
            let _ = writeln!(o, "  {:<17} not tied: {}", n.detector, n.reason);
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "Detectors:");
    for r in &d.detectors {
        let status = match r.status {
            DetectorStatus::Fired => "fired",
            DetectorStatus::Quiet => "quiet",
            DetectorStatus::NotAvailable => "not available",
        };
        let _ = writeln!(o, "  {:<17} {:<13} {}", r.detector, status, r.rule);
        if let Some(n) = &r.note {
            let _ = writeln!(o, "  {:<17} {:<13} ({n})", "", "");
        }
        if !r.measured.is_empty() {
            let m: Vec<String> = r.measured.iter().map(|m| m.text()).collect();
            let _ = writeln!(o, "  {:<17} {:<13} measured: {}", "", "", m.join("; "));
        }
    }
    if let (Some(v), Some(p)) = (d.cgroup_version, &d.cgroup_path) {
        let _ = writeln!(o, "CPU cgroup: {p} ({v:?})");
    }
    for n in &d.notes {
        let _ = writeln!(o, "note: {n}");
    }
    o
}
