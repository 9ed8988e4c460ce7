//! The human rendering of a load report: what ran, outcomes, the latency
//! table with its headline, the generator's own cost.

use std::fmt::Write as _;

use super::*;
use crate::stats::Summary;

fn row(out: &mut String, name: &str, s: &Option<Summary>) {
    if let Some(s) = s {
        let _ = writeln!(
            out,
            "  {name:<26} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>8}",
            s.avg, s.p50.value, s.p90.value, s.p95.value, s.p99.value, s.p999.value, s.max, s.count
        );
    }
}

/// The human rendering.
pub fn text(r: &LoadReport) -> String {
    let mut o = String::new();
    text_setup(&mut o, r);
    text_counts(&mut o, r);
    text_latency(&mut o, r);
    text_generator(&mut o, r);
    o
}

/// What ran: the target, the arrival process, the request.
fn text_setup(o: &mut String, r: &LoadReport) {
    let c = &r.config;
    let what = match c.mode {
        "closed" => format!("closed loop, concurrency {}", c.concurrency.unwrap_or(0)),
        _ => format!(
            "rate {} req/s ({}, seed {}), max in flight {}",
            c.rate.unwrap_or(0.0),
            c.arrival.as_deref().unwrap_or("?"),
            c.seed.unwrap_or(0),
            c.max_in_flight.unwrap_or(0)
        ),
    };
    let _ = writeln!(o, "tailprobe load {}  {what}", r.url);
    if r.interrupted {
        let _ = writeln!(o, "(interrupted: the numbers cover what ran)");
    }
    match (c.model.name(), c.openai) {
        (Some(m), true) => {
            let how = match c.model {
                crate::ModelChoice::Discovered(_) => " (from GET /v1/models)",
                _ => "",
            };
            let _ = writeln!(
                o,
                "request: {} api, model {m:?}{how}{}",
                c.api,
                c.expect
                    .max_tokens
                    .map(|t| format!(", {t} output tokens asked"))
                    .unwrap_or_default()
            );
        }
        (None, true) => {
            let _ = writeln!(o, "request: {} api, body from the template", c.api);
        }
        _ => {}
    }
}

/// Outcomes, throughput, tokens, goodput.
fn text_counts(o: &mut String, r: &LoadReport) {
    let c = &r.config;
    let _ = writeln!(
        o,
        "requests: {} ok, {} incomplete, {} errors, {} timeouts ({} warm-up excluded)",
        r.ok, r.incomplete, r.errors, r.timeouts, r.warmup_excluded
    );
    if !r.incomplete_kinds.is_empty() {
        let kinds: Vec<String> = r
            .incomplete_kinds
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(o, "incomplete by reason: {}", kinds.join(", "));
    }
    if let Some(e) = &r.error_sample {
        let _ = writeln!(o, "first error answer: {e}");
    }
    if !r.error_kinds.is_empty() {
        let kinds: Vec<String> = r
            .error_kinds
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(o, "errors by kind: {}", kinds.join(", "));
    }
    let _ = writeln!(
        o,
        "throughput: {:.1} req/s over {:.3} s",
        r.throughput_rps, r.window_s
    );
    if r.output_tokens > 0 {
        let per = r
            .output_tokens_per_request
            .as_ref()
            .map(|t| {
                format!(
                    "; per ok request min {:.0}, p50 {:.0}, mean {:.1}, max {:.0}{}",
                    t.min,
                    t.p50.value,
                    t.avg,
                    t.max,
                    c.expect
                        .max_tokens
                        .map(|m| format!(" ({m} asked)"))
                        .unwrap_or_default()
                )
            })
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "output tokens: {} ({:.1} tok/s){per}",
            r.output_tokens, r.output_tokens_per_s
        );
    }
    if let (Some(g), Some(n)) = (r.goodput_rps, r.good) {
        let slo: Vec<String> = c
            .slo_ms
            .iter()
            .map(|(k, v)| format!("{k}<={v}ms"))
            .collect();
        let _ = writeln!(
            o,
            "goodput: {g:.1} req/s ({n} of {} requests met {})",
            r.attempted(),
            slo.join(", ")
        );
    }
    if r.streams_without_done > 0 {
        let _ = writeln!(
            o,
            "streams that ended without [DONE]: {}",
            r.streams_without_done
        );
    }
}

/// The latency table and the headline's sample counts.
fn text_latency(o: &mut String, r: &LoadReport) {
    let c = &r.config;
    let _ = writeln!(
        o,
        "\n  {:<26} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}",
        "latency (ms)", "avg", "p50", "p90", "p95", "p99", "p99.9", "max", "n"
    );
    let l = &r.latency_ms;
    if c.mode == "rate" {
        row(o, "e2e from intended (*)", &l.e2e_sched);
        row(o, "e2e from send (uncorr.)", &l.e2e);
        row(o, "schedule lag", &l.schedule_lag);
        row(o, "ttft from intended", &l.ttft_sched);
        row(o, "ttft from send", &l.ttft);
    } else {
        row(o, "e2e (*)", &l.e2e);
        row(o, "ttft", &l.ttft);
    }
    row(o, "tpot", &l.tpot);
    row(o, "itl", &l.itl);
    if let Some(t) = &r.output_tokens_per_request {
        let _ = writeln!(
            o,
            "  {:<26} {:>9.1} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>8}",
            "output tokens / ok request",
            t.avg,
            t.p50.value,
            t.p90.value,
            t.p95.value,
            t.p99.value,
            t.p999.value,
            t.max,
            t.count
        );
    }
    let head = if c.mode == "rate" {
        &l.e2e_sched
    } else {
        &l.e2e
    };
    if let Some(h) = head {
        let _ = writeln!(
            o,
            "  (*) headline. Samples at or above: p90 {}, p95 {}, p99 {}, p99.9 {}{}",
            h.p90.samples,
            h.p95.samples,
            h.p99.samples,
            h.p999.samples,
            if h.p99.samples <= 1 {
                " (p99 rests on one request: run more for a tail)"
            } else {
                ""
            }
        );
    }
}

/// The generator's own threads and CPU, and the warnings.
fn text_generator(o: &mut String, r: &LoadReport) {
    let g = &r.generator;
    let _ = writeln!(
        o,
        "\ngenerator: {} thread(s) (tids {:?}{}), CPU {:.2} s user + {:.2} s sys over {:.2} s ({:.0}% of {} CPU(s)){}",
        g.threads,
        g.tids,
        g.dispatcher_tid.map(|t| format!(", dispatcher {t}")).unwrap_or_default(),
        g.cpu_user_s,
        g.cpu_sys_s,
        g.wall_s,
        g.cpu_share() * 100.0,
        g.allowed_cpus.min(g.threads + 1),
        g.cpus.as_ref().map(|c| format!(", pinned to {c}")).unwrap_or_default()
    );
    for w in r.warnings.iter().chain(&g.warnings) {
        let _ = writeln!(o, "warning: {w}");
    }
}
