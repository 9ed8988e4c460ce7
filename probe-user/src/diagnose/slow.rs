//! Tying findings to the slow requests (pure): with `--url/--rate`,
//! diagnose knows every request's interval on the kernel's clock. For each
//! finding whose evidence has timestamps (run-queue waits after preemption,
//! IRQ and softirq runs, pauses), count the requests above the p95 latency
//! whose interval overlaps that evidence, against the share of all requests
//! that do, and the evidence time inside a slow request against inside the
//! others: a cause of the tail overlaps the slow requests at least as often
//! as requests in general (their 95% interval reaches the overall share)
//! and holds more of their time: at least [`MIN_GAP_EXPLAINED_PCT`] of the
//! latency gap between the slow requests and the others.

use std::collections::BTreeSet;

use serde::Serialize;

use super::{pauses, preemption::is_softirq_thread};
use crate::report::RecordReport;

/// Fewest measured requests before slow ones are told apart.
pub const MIN_REQUESTS: usize = 20;
/// The evidence must account for at least this share of the latency gap
/// between the slow requests and the others to be tied to the tail.
pub const MIN_GAP_EXPLAINED_PCT: f64 = 10.0;

/// One measured request: its interval (CLOCK_MONOTONIC ns, from the
/// intended send time in rate mode to the end) and, where the built-in
/// server said so, the thread that served it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub start_ns: u64,
    pub end_ns: u64,
    pub served_by: Option<u32>,
}

impl Request {
    fn latency_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }
}

/// A stretch of evidence: [start, end) on the kernel's clock, for one
/// target thread (`None`: the whole target, e.g. a pause).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start_ns: u64,
    pub end_ns: u64,
    pub tid: Option<u32>,
}

/// How a finding's evidence lines up with the slow requests.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SlowTie {
    pub detector: &'static str,
    /// What was counted as the finding's evidence.
    pub evidence: &'static str,
    /// Requests above the p95 latency.
    pub slow_requests: usize,
    pub slow_overlapping: usize,
    /// 95% Wilson interval of the slow requests' overlapping share, in %.
    pub slow_overlap_pct_low: f64,
    pub slow_overlap_pct_high: f64,
    pub all_requests: usize,
    pub all_overlapping: usize,
    /// Evidence time inside a slow request, on average, and inside the
    /// others (at or below p95).
    pub slow_mean_overlap_ms: f64,
    pub other_mean_overlap_ms: f64,
    /// Mean latency of the slow requests minus that of the others, and the
    /// part of that gap the evidence time accounts for
    /// (`slow_mean_overlap_ms - other_mean_overlap_ms`), in %.
    pub latency_gap_ms: f64,
    pub gap_explained_pct: f64,
    /// True when the slow requests overlap the evidence at least as often as
    /// all requests do and hold more of it on average.
    pub tied: bool,
    pub text: String,
}

/// The evidence of `detector` with timestamps in `report`; `None` when the
/// detector's evidence has none (counts, configuration, who-woke-whom
/// totals), with what it rests on.
pub fn spans(detector: &str, report: &RecordReport) -> Result<(Vec<Span>, &'static str), String> {
    let target_tids: BTreeSet<u32> = report.threads.iter().map(|t| t.tid).collect();
    let softirq_thread = |p: u32| {
        report
            .preemptors
            .iter()
            .any(|x| x.pid == p && is_softirq_thread(&x.comm))
    };
    let runq = |keep: &dyn Fn(u32) -> bool| -> Vec<Span> {
        report
            .outliers
            .iter()
            .filter(|o| o.kind == "runq_wait")
            .filter(|o| o.preempted_by.is_some_and(keep))
            .map(|o| Span {
                start_ns: o.ts_ns.saturating_sub(o.value_ns),
                end_ns: o.ts_ns,
                tid: Some(o.tid),
            })
            .collect()
    };
    Ok(match detector {
        "preemption" => (
            runq(&|p| !target_tids.contains(&p) && !softirq_thread(p)),
            "run-queue waits after preemption by other processes",
        ),
        "cpu_starvation" | "cfs_throttling" => (
            report
                .outliers
                .iter()
                .filter(|o| o.kind == "runq_wait")
                .map(|o| Span {
                    start_ns: o.ts_ns.saturating_sub(o.value_ns),
                    end_ns: o.ts_ns,
                    tid: Some(o.tid),
                })
                .collect(),
            "run-queue waits",
        ),
        "irq" => {
            let mut s = runq(&softirq_thread);
            s.extend(
                report
                    .outliers
                    .iter()
                    .filter(|o| o.kind == "hardirq" || o.kind == "softirq")
                    .map(|o| Span {
                        start_ns: o.ts_ns.saturating_sub(o.value_ns),
                        end_ns: o.ts_ns,
                        tid: Some(o.tid),
                    }),
            );
            (s, "IRQ and softirq runs, and waits behind ksoftirqd")
        }
        "stop_the_world" => (
            pauses::find(&report.windows, report.window_ns)
                .0
                .iter()
                .map(|p| Span {
                    start_ns: p.start_ns,
                    end_ns: p.start_ns + p.len_ns,
                    tid: None,
                })
                .collect(),
            "the pauses",
        ),
        _ => return Err("its evidence has no timestamps (totals or configuration)".into()),
    })
}

/// Time of `spans` inside `r` (only the serving thread's when known).
fn overlap_ns(r: &Request, spans: &[Span]) -> u64 {
    spans
        .iter()
        .filter(|s| match (s.tid, r.served_by) {
            (Some(t), Some(by)) => t == by,
            _ => true,
        })
        .map(|s| {
            let a = s.start_ns.max(r.start_ns);
            let b = s.end_ns.min(r.end_ns);
            b.saturating_sub(a)
        })
        .sum()
}

/// The p95 latency (nearest rank) of `reqs`, ns.
pub fn p95_ns(reqs: &[Request]) -> Option<u64> {
    let mut l: Vec<u64> = reqs.iter().map(Request::latency_ns).collect();
    l.sort_unstable();
    let rank = (l.len() * 95).div_ceil(100);
    l.get(rank.checked_sub(1)?).copied()
}

/// 95% Wilson score interval of k successes in n, in %.
pub fn wilson_pct(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 100.0);
    }
    let (k, n) = (k as f64, n as f64);
    let z = 1.96f64;
    let p = k / n;
    let den = 1.0 + z * z / n;
    let mid = (p + z * z / (2.0 * n)) / den;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / den;
    (100.0 * (mid - half).max(0.0), 100.0 * (mid + half).min(1.0))
}

/// Line up `spans` with the requests; `None` when there are fewer than
/// [`MIN_REQUESTS`] or none is above p95.
pub fn tie(
    detector: &'static str,
    evidence: &'static str,
    reqs: &[Request],
    spans: &[Span],
) -> Option<SlowTie> {
    if reqs.len() < MIN_REQUESTS {
        return None;
    }
    let p95 = p95_ns(reqs)?;
    let (mut slow, mut slow_hit, mut slow_ns, mut slow_lat) = (0usize, 0usize, 0u64, 0u64);
    let (mut other, mut other_ns, mut other_lat, mut all_hit) = (0usize, 0u64, 0u64, 0usize);
    for r in reqs {
        let o = overlap_ns(r, spans);
        all_hit += usize::from(o > 0);
        if r.latency_ns() > p95 {
            slow += 1;
            slow_hit += usize::from(o > 0);
            slow_ns += o;
            slow_lat += r.latency_ns();
        } else {
            other += 1;
            other_ns += o;
            other_lat += r.latency_ns();
        }
    }
    if slow == 0 {
        return None;
    }
    let mean = |ns: u64, n: usize| ns as f64 / 1e6 / n.max(1) as f64;
    let (lo, hi) = wilson_pct(slow_hit, slow);
    let all_pct = 100.0 * all_hit as f64 / reqs.len() as f64;
    let slow_pct = 100.0 * slow_hit as f64 / slow as f64;
    let (sm, om) = (mean(slow_ns, slow), mean(other_ns, other));
    let gap = mean(slow_lat, slow) - mean(other_lat, other);
    let explained = if gap > 0.0 {
        100.0 * (sm - om) / gap
    } else {
        0.0
    };
    // Overlapping less often only counts against a tie when the slow
    // requests' interval says so: with nearly every request overlapping,
    // one slow request in six that does not is noise.
    let as_often = hi >= all_pct;
    let tied = as_often && sm > om && explained >= MIN_GAP_EXPLAINED_PCT;
    let verdict = if tied {
        format!(
            "tied to the tail: {:.2} ms more of it in a slow request, {explained:.0}% of the \
             {gap:.2} ms by which the slow requests are slower",
            sm - om
        )
    } else if !as_often {
        "not tied to the tail: the slow requests overlap it less often than requests in general"
            .into()
    } else if sm <= om {
        "not tied to the tail: the slow requests do not hold more of it than the others".into()
    } else {
        format!(
            "not tied to the tail: the slow requests hold {:.2} ms more of it, {explained:.0}% of \
             the {gap:.2} ms by which they are slower (under {MIN_GAP_EXPLAINED_PCT:.0}%)",
            sm - om
        )
    };
    let text = format!(
        "{slow_hit} of the {slow} requests above p95 ({:.1} ms) overlap {evidence} \
         ({slow_pct:.0}%, 95% interval {lo:.0}-{hi:.0}%), against {all_hit} of all {} \
         ({all_pct:.0}%); inside a slow request it took {sm:.2} ms on average, {om:.2} ms in \
         the others: {verdict}",
        p95 as f64 / 1e6,
        reqs.len()
    );
    Some(SlowTie {
        detector,
        evidence,
        slow_requests: slow,
        slow_overlapping: slow_hit,
        slow_overlap_pct_low: lo,
        slow_overlap_pct_high: hi,
        all_requests: reqs.len(),
        all_overlapping: all_hit,
        slow_mean_overlap_ms: sm,
        other_mean_overlap_ms: om,
        latency_gap_ms: gap,
        gap_explained_pct: explained,
        tied,
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(start_ms: u64, len_ms: u64, by: Option<u32>) -> Request {
        Request {
            start_ns: start_ms * 1_000_000,
            end_ns: (start_ms + len_ms) * 1_000_000,
            served_by: by,
        }
    }

    fn span(start_ms: u64, len_ms: u64, tid: Option<u32>) -> Span {
        Span {
            start_ns: start_ms * 1_000_000,
            end_ns: (start_ms + len_ms) * 1_000_000,
            tid,
        }
    }

    #[test]
    fn p95_is_nearest_rank() {
        let reqs: Vec<Request> = (1..=100).map(|i| req(i * 10, i, None)).collect();
        assert_eq!(p95_ns(&reqs), Some(95_000_000));
        assert_eq!(p95_ns(&[]), None);
    }

    #[test]
    fn wilson_brackets_the_share() {
        let (lo, hi) = wilson_pct(7, 7);
        assert!(lo > 60.0 && lo < 70.0, "{lo}");
        assert!((hi - 100.0).abs() < 1e-9);
        let (lo, hi) = wilson_pct(0, 10);
        assert_eq!(lo, 0.0);
        assert!(hi > 25.0 && hi < 35.0, "{hi}");
    }

    /// 40 requests of 2 ms, every 10 ms; the two longest (9 ms) are the
    /// ones preempted. Spans on another thread than the serving one do not
    /// count.
    #[test]
    fn slow_requests_that_hold_the_evidence_are_tied() {
        let mut reqs: Vec<Request> = (0..40).map(|i| req(i * 10, 2, Some(5))).collect();
        reqs[3] = req(30, 9, Some(5));
        reqs[17] = req(170, 9, Some(5));
        let spans = vec![
            span(32, 5, Some(5)),
            span(172, 5, Some(5)),
            span(100, 1, Some(5)),
            // Another thread than the one that served the request.
            span(200, 5, Some(6)),
        ];
        let t = tie("preemption", "waits", &reqs, &spans).expect("enough requests");
        assert_eq!((t.slow_requests, t.slow_overlapping), (2, 2));
        assert_eq!((t.all_requests, t.all_overlapping), (40, 3));
        assert!(t.tied, "{}", t.text);
        assert!((t.slow_mean_overlap_ms - 5.0).abs() < 1e-9);
        // Slow 9 ms vs others 2 ms: 7 ms gap; 5 - 1/38 ms of it explained.
        assert!((t.latency_gap_ms - 7.0).abs() < 1e-9);
        let want = 100.0 * (5.0 - 1.0 / 38.0) / 7.0;
        assert!(
            (t.gap_explained_pct - want).abs() < 1e-6,
            "{}",
            t.gap_explained_pct
        );
        assert!(
            t.text.contains("2 of the 2 requests above p95"),
            "{}",
            t.text
        );
    }

    #[test]
    fn evidence_spread_evenly_is_not_tied() {
        let mut reqs: Vec<Request> = (0..40).map(|i| req(i * 10, 2, None)).collect();
        reqs[3] = req(30, 9, None);
        reqs[17] = req(170, 9, None);
        // A 1 ms span at the start of every request.
        let spans: Vec<Span> = (0..40).map(|i| span(i * 10, 1, None)).collect();
        let t = tie("irq", "irq runs", &reqs, &spans).expect("enough requests");
        assert_eq!(t.slow_overlapping, 2);
        assert_eq!(t.all_overlapping, 40);
        assert!(!t.tied, "{}", t.text);
        assert!(t.text.contains("not tied"), "{}", t.text);
    }

    /// 120 requests of 5 ms, nearly all overlapping 1 ms of evidence; the 6
    /// slow ones (20 ms) hold 10 ms each, but one of them holds none: 5 of
    /// 6 against 114 of 120 is within the interval, and the held time
    /// decides. With the slow ones holding 2 ms (1.67 ms on average against
    /// 0.95 ms: 5% of the 15 ms gap) it is not tied.
    #[test]
    fn a_slow_request_without_evidence_is_noise_and_a_small_share_is_not_a_tie() {
        let build = |slow_ms: u64| {
            let mut reqs: Vec<Request> = (0..120).map(|i| req(i * 50, 5, None)).collect();
            let mut spans: Vec<Span> = (0..114).map(|i| span(i * 50 + 1, 1, None)).collect();
            for i in 0..6u64 {
                let at = 120 * 50 + i * 50;
                reqs.push(req(at, 20, None));
                if i > 0 {
                    spans.push(span(at + 1, slow_ms, None));
                }
            }
            (reqs, spans)
        };
        let (reqs, spans) = build(12);
        let t = tie("preemption", "waits", &reqs, &spans).expect("enough requests");
        assert_eq!((t.slow_requests, t.slow_overlapping), (6, 5));
        assert!(
            t.slow_overlap_pct_high >= 100.0 * 119.0 / 126.0,
            "{}",
            t.text
        );
        assert!(t.tied, "{}", t.text);
        let (reqs, spans) = build(2);
        let t = tie("preemption", "waits", &reqs, &spans).expect("enough requests");
        assert!(!t.tied, "{}", t.text);
        assert!(t.text.contains("under 10%"), "{}", t.text);
    }

    #[test]
    fn too_few_requests_are_not_told_apart() {
        let reqs: Vec<Request> = (0..10).map(|i| req(i * 10, 2, None)).collect();
        assert!(tie("preemption", "w", &reqs, &[]).is_none());
    }
}
