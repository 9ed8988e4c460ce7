//! A cell's figures from its raw data: the load report, the recording, the
//! per-request log on the kernel's clock, the server's own request log.
//! Pure (the runner does the I/O and hands the data over).

use serde::Deserialize;

use super::{
    analysis::{
        attribution::{self, Breakdown, EventKind, GroupMeans, KEvent, ServedReq, TailSplit},
        correlate::{self, Flight, WindowSignals},
        interference::Preemptor,
        stats::percentile_sorted,
    },
    results::{CellMetrics, Latency, RestoreReport, TokenStats},
};
use crate::{
    load::{report::LoadReport, stats::Summary},
    node::journal,
    report::RecordReport,
};

/// One line of the load generator's `--requests-out`.
#[derive(Debug, Clone, Deserialize)]
pub struct ClientRec {
    pub warmup: bool,
    pub intended_ns: Option<u64>,
    pub sent_ns: u64,
    pub end_ns: u64,
    pub outcome: String,
}

/// One line of the built-in server's `--requests-out`.
#[derive(Debug, Clone, Deserialize)]
pub struct ServedRec {
    pub id: u64,
    pub tid: u32,
    pub queued_ns: u64,
    pub start_ns: u64,
    pub end_ns: u64,
    pub outcome: String,
}

pub fn latency(s: &Summary) -> Latency {
    Latency {
        count: s.count,
        avg: s.avg,
        p50: s.p50.value,
        p95: s.p95.value,
        p99: s.p99.value,
        max: s.max,
        p95_samples: s.p95.samples,
        p99_samples: s.p99.samples,
    }
}

/// Output tokens of the complete answers; None when none carried a count.
pub fn tokens(l: &LoadReport, requested: u32) -> Option<TokenStats> {
    let s = l.output_tokens_per_request.as_ref()?;
    (s.count > 0).then(|| TokenStats {
        requested,
        answers: s.count,
        per_request_avg: s.avg,
        per_request_min: s.min.round() as u64,
        per_request_p50: s.p50.value,
        per_request_max: s.max.round() as u64,
        tokens_per_s: l.output_tokens_per_s,
    })
}

/// What the load generator measured.
pub fn from_load(l: &LoadReport, offered_rps: f64, requested_tokens: u32) -> CellMetrics {
    let mut m = CellMetrics {
        offered_rps,
        throughput_rps: l.throughput_rps,
        ok: l.ok,
        errors: l.errors,
        timeouts: l.timeouts,
        incomplete: l.incomplete,
        tokens: tokens(l, requested_tokens),
        ..CellMetrics::default()
    };
    if let Some(s) = l
        .latency_ms
        .e2e_sched
        .as_ref()
        .or(l.latency_ms.e2e.as_ref())
    {
        m.latency_ms = latency(s);
    }
    m.uncorrected_p95_ms = l.latency_ms.e2e.as_ref().map_or(0.0, |s| s.p95.value);
    m.ttft_p95_ms = l.latency_ms.ttft_sched.as_ref().map(|s| s.p95.value);
    m
}

/// What the probes measured on the server's threads.
pub fn add_recording(m: &mut CellMetrics, r: &RecordReport) {
    let pr = &r.process;
    m.runq_wait_ms = pr.runq_wait.total_ns as f64 / 1e6;
    m.runq_p99_us = pr.runq_wait.p99_ns.map_or(0.0, |x| x as f64 / 1e3);
    m.runq_max_ms = pr.runq_wait.max_ns as f64 / 1e6;
    m.involuntary_switches = pr.involuntary_switches;
    m.migrations = pr.migrations.total;
    m.migrations_cross_llc = pr.migrations.cross_llc;
    m.migrations_cross_numa = pr.migrations.cross_numa;
    m.irq_stolen_ms = (pr.hardirq.total_ns + pr.softirq.total_ns) as f64 / 1e6;
    m.page_faults = pr.page_faults;
    m.numa_task_moves = pr.numa_balancing.moves + pr.numa_balancing.swaps;
    m.probe_cpu_pct = r.overhead.cpu_share_pct;
    m.lossy = r.lossy;
    m.events_not_kept = r.outliers_not_kept;
}

/// The preemptors of a recording; `kernel(pid)` says from `/proc` whether
/// a task is a kernel thread (None: gone).
pub fn preemptors(r: &RecordReport, kernel: impl Fn(u32) -> Option<bool>) -> Vec<Preemptor> {
    r.preemptors
        .iter()
        .map(|p| Preemptor {
            pid: p.pid,
            tgid: p.tgid,
            comm: p.comm.clone(),
            count: p.count,
            wait_ns: p.target_wait_ns,
            kernel: kernel(p.pid),
        })
        .collect()
}

pub fn windows(r: &RecordReport) -> Vec<WindowSignals> {
    r.windows
        .iter()
        .map(|w| WindowSignals {
            start_ns: w.start_ns,
            len_ns: r.window_ns,
            runq_ns: w.runq_total_ns as f64,
            involuntary_switches: w.involuntary_switches as f64,
            migrations: w.migrations as f64,
            irq_ns: (w.hardirq_ns + w.softirq_ns) as f64,
            page_faults: w.page_faults as f64,
        })
        .collect()
}

pub fn kernel_events(r: &RecordReport) -> Vec<KEvent> {
    r.outliers
        .iter()
        .filter_map(|o| {
            Some(KEvent {
                kind: EventKind::from_outlier(o.kind)?,
                tid: o.tid,
                ts_ns: o.ts_ns,
                value_ns: o.value_ns,
            })
        })
        .collect()
}

/// Measured, complete requests: their latency (end - intended, ms) and
/// their flight on the kernel's clock.
pub fn flights(client: &[ClientRec]) -> Vec<Flight> {
    client
        .iter()
        .filter(|r| !r.warmup && r.outcome == "ok")
        .map(|r| {
            let from = r.intended_ns.unwrap_or(r.sent_ns);
            Flight {
                start_ns: from.min(r.sent_ns),
                end_ns: r.end_ns,
                latency_ms: r.end_ns.saturating_sub(from) as f64 / 1e6,
            }
        })
        .collect()
}

/// Served requests of the measured part (queued at or after the first
/// measured send).
pub fn served(recs: Vec<ServedRec>, measure_from_ns: u64) -> Vec<ServedReq> {
    recs.into_iter()
        .filter(|s| s.outcome == "ok" && s.queued_ns >= measure_from_ns)
        .map(|s| ServedReq {
            id: s.id,
            tid: s.tid,
            queued_ns: s.queued_ns,
            start_ns: s.start_ns,
            end_ns: s.end_ns,
        })
        .collect()
}

/// By time window: the process-wide signals while each request was in
/// flight, each component capped at the request's own length.
pub fn time_window_split(flights: &[Flight], windows: &[WindowSignals]) -> Option<TailSplit> {
    let sig = correlate::per_request(flights, windows);
    let mut ls: Vec<f64> = flights.iter().map(|f| f.latency_ms).collect();
    ls.sort_by(f64::total_cmp);
    let p95 = percentile_sorted(&ls, 95.0)?;
    let p50 = percentile_sorted(&ls, 50.0)?;
    let group = |keep: &dyn Fn(f64) -> bool| {
        let v: Vec<Breakdown> = flights
            .iter()
            .zip(&sig)
            .filter(|(f, _)| keep(f.latency_ms))
            .map(|(f, s)| {
                let total = (f.latency_ms * 1e6) as u64;
                let runq = (s[0] as u64).min(total);
                let irq = (s[3] as u64).min(total - runq);
                Breakdown {
                    total_ns: total,
                    runq_ns: runq,
                    hardirq_ns: irq,
                    page_faults: s[4] as u64,
                    migrations: s[2] as u64,
                    service_ns: total - runq - irq,
                    ..Default::default()
                }
            })
            .collect();
        GroupMeans::of(&v.iter().collect::<Vec<_>>())
    };
    Some(TailSplit {
        method: "time window (process-wide, all threads)".into(),
        p95_ms: p95,
        tail: group(&|l| l > p95),
        typical: group(&|l| l <= p50),
    })
}

/// Exact per request: the serving thread's kernel events inside each.
pub fn exact_split(
    served: &[ServedReq],
    events: &[KEvent],
) -> (Option<TailSplit>, Vec<(f64, f64)>) {
    let bs = attribution::breakdown(served, events);
    let step = (bs.len() / 400).max(1);
    let scatter = bs
        .iter()
        .step_by(step)
        .map(|b| (b.runq_ns as f64 / 1e6, b.total_ns as f64 / 1e6))
        .collect();
    (attribution::tail_split(&bs), scatter)
}

/// What a journal restore did, for the cell.
pub fn restore_report(
    r: Result<journal::RestoreReport, journal::JournalError>,
) -> Option<RestoreReport> {
    match r {
        Ok(rep) if rep.restored.is_empty() && rep.gone.is_empty() && rep.failed.is_empty() => None,
        Ok(rep) => Some(RestoreReport {
            complete: rep.is_complete(),
            failures: rep
                .failed
                .iter()
                .map(|(e, why)| format!("{}: {why}", e.knob.describe()))
                .collect(),
        }),
        Err(e) => Some(RestoreReport {
            complete: false,
            failures: vec![format!("the journal could not be restored: {e}")],
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(warmup: bool, intended: u64, sent: u64, end: u64, outcome: &str) -> ClientRec {
        ClientRec {
            warmup,
            intended_ns: Some(intended),
            sent_ns: sent,
            end_ns: end,
            outcome: outcome.into(),
        }
    }

    #[test]
    fn flights_are_measured_complete_requests_from_the_intended_time() {
        let f = flights(&[
            rec(true, 0, 0, 5_000_000, "ok"),
            rec(false, 10_000_000, 12_000_000, 20_000_000, "ok"),
            rec(false, 20_000_000, 20_000_000, 21_000_000, "incomplete"),
            rec(false, 30_000_000, 30_000_000, 31_000_000, "error"),
        ]);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].start_ns, 10_000_000);
        assert_eq!(f[0].latency_ms, 10.0);
    }

    #[test]
    fn time_window_split_caps_process_wide_signals_at_the_request() {
        // 20 requests of 1..=20 ms, each in its own 100 ms window; the
        // window of the slowest has 500 ms of run-queue wait over all threads.
        let fl: Vec<Flight> = (1..=20u64)
            .map(|i| Flight {
                start_ns: i * 100_000_000,
                end_ns: i * 100_000_000 + i * 1_000_000,
                latency_ms: i as f64,
            })
            .collect();
        let ws: Vec<WindowSignals> = (1..=20u64)
            .map(|i| WindowSignals {
                start_ns: i * 100_000_000,
                len_ns: 100_000_000,
                runq_ns: if i == 20 { 500e6 } else { 0.0 },
                ..Default::default()
            })
            .collect();
        let s = time_window_split(&fl, &ws).unwrap();
        assert_eq!(s.p95_ms, 19.0);
        assert_eq!(s.tail.requests, 1);
        // 500 ms x (20 ms / 100 ms) = 100 ms, capped at the request's 20 ms.
        assert_eq!(s.tail.runq_ms, 20.0);
        assert_eq!(s.tail.service_ms, 0.0);
        assert_eq!(s.typical.runq_ms, 0.0);
    }

    #[test]
    fn restore_outcomes() {
        assert_eq!(restore_report(Ok(journal::RestoreReport::default())), None);
        let e = restore_report(Err(journal::JournalError::Busy {
            path: "/run/x".into(),
            pid: 7,
        }))
        .unwrap();
        assert!(!e.complete);
        assert!(e.failures[0].contains("could not be restored"), "{e:?}");
    }
}
