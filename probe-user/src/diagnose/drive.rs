//! `diagnose --url URL --rate R`: drive the target with tailprobe's load
//! generator while the recorder runs, both on CLOCK_MONOTONIC, and keep each
//! measured request's interval (and, for tailprobe's built-in server, the
//! thread that served it) so findings can be tied to the slow requests
//! (`slow`).

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    time::Duration,
};

use anyhow::{anyhow, Context as _, Result};
use serde::Serialize;

use super::slow::{self, Request, SlowTie};
use crate::{
    load::{self, LoadOptions},
    record::{self, Callback, RecordOptions},
    report::RecordReport,
    timeline::{requests::match_served, session::server_journal},
};

/// The load to drive.
#[derive(Debug, Clone)]
pub struct Drive {
    pub url: String,
    pub rate: f64,
    pub load: LoadOptions,
}

/// The driven load, as the diagnosis reports it.
#[derive(Debug, Clone, Serialize)]
pub struct DriveSummary {
    pub url: String,
    pub rate: f64,
    /// Requests sent (warm-up not included) and those that succeeded.
    pub sent: u64,
    pub ok: u64,
    /// Latency (from the intended send time) of the successful requests.
    pub p50_ms: f64,
    pub p95_ms: f64,
    /// Requests matched to the server thread that served them (the built-in
    /// server's journal); 0 for other servers: then evidence of any target
    /// thread counts.
    pub served_matched: usize,
    /// One per finding with timed evidence, in the findings' order.
    pub ties: Vec<SlowTie>,
    /// Findings not tied, and why.
    pub not_tied: Vec<NotTied>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NotTied {
    pub detector: &'static str,
    pub reason: String,
}

/// Record with `ropts` while `drive` runs; returns the recording and the
/// measured requests (ok only, warm-up left out).
pub fn record_with_load(
    mut ropts: RecordOptions,
    drive: &Drive,
) -> Result<(RecordReport, load::report::LoadReport, Vec<Request>, usize)> {
    let before = server_journal(&drive.url, None);
    let after = before
        .as_ref()
        .and_then(|j| j.served.iter().map(|s| s.id).max());
    let tmp = tempfile::tempdir().context("creating a temporary directory for the records")?;
    let records = tmp.path().join("requests.jsonl");
    let mut lo = drive.load.clone();
    lo.requests_out = Some(records.clone());

    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<()>();
    let inner = ropts.on_attached.take();
    ropts.on_attached = Some(Callback::new(move |pid| {
        if let Some(f) = &inner {
            (f.0)(pid);
        }
        let _ = tx.send(());
    }));
    // The load decides when to stop; the duration only bounds a load that
    // never ends.
    ropts.duration =
        Some(lo.duration.unwrap_or(Duration::from_secs(30)) * 4 + Duration::from_secs(60));
    ropts.stop = Some(stop.clone());
    let rec = std::thread::spawn(move || record::run(&ropts));
    while rx.recv_timeout(Duration::from_millis(100)).is_err() {
        if rec.is_finished() {
            return Err(match rec.join() {
                Ok(Err(e)) => e.context("recording the target"),
                _ => anyhow!("the recording ended before the probes were attached"),
            });
        }
    }
    let load_res = load::run(&lo);
    stop.store(true, Ordering::SeqCst);
    let report = rec
        .join()
        .map_err(|_| anyhow!("the recording thread panicked"))??;
    let load_report = load_res.with_context(|| format!("load on {}", drive.url))?;
    let reqs = crate::timeline::read_request_records(&records)?;
    let served = server_journal(&drive.url, after)
        .map(|j| j.served)
        .unwrap_or_default();
    let m = match_served(&reqs, &served);
    let mut out = Vec::new();
    let mut matched = 0;
    for (r, si) in reqs.iter().zip(m) {
        if r.warmup || r.outcome != "ok" {
            continue;
        }
        let served_by = si.and_then(|i| served.get(i)).map(|s| s.tid);
        matched += usize::from(served_by.is_some());
        out.push(Request {
            start_ns: r.intended_ns.unwrap_or(r.sent_ns),
            end_ns: r.end_ns,
            served_by,
        });
    }
    Ok((report, load_report, out, matched))
}

/// Tie every finding of `detectors` (in ranked order) to the slow requests.
pub fn summarise(
    drive: &Drive,
    load_report: &load::report::LoadReport,
    report: &RecordReport,
    reqs: &[Request],
    served_matched: usize,
    detectors: &[&'static str],
) -> DriveSummary {
    let mut lat: Vec<u64> = reqs
        .iter()
        .map(|r| r.end_ns.saturating_sub(r.start_ns))
        .collect();
    lat.sort_unstable();
    let p50 = lat.get(lat.len() / 2).copied().unwrap_or(0);
    let p95 = slow::p95_ns(reqs).unwrap_or(0);
    let mut ties = Vec::new();
    let mut not_tied = Vec::new();
    for d in detectors {
        match slow::spans(d, report) {
            Ok((spans, what)) => match slow::tie(d, what, reqs, &spans) {
                Some(t) => ties.push(t),
                None => not_tied.push(NotTied {
                    detector: d,
                    reason: format!(
                        "{} successful requests: at least {} are needed to tell the slow ones apart",
                        reqs.len(),
                        slow::MIN_REQUESTS
                    ),
                }),
            },
            Err(why) => not_tied.push(NotTied {
                detector: d,
                reason: why,
            }),
        }
    }
    DriveSummary {
        url: drive.url.clone(),
        rate: drive.rate,
        sent: load_report.attempted(),
        ok: reqs.len() as u64,
        p50_ms: p50 as f64 / 1e6,
        p95_ms: p95 as f64 / 1e6,
        served_matched,
        ties,
        not_tied,
    }
}
