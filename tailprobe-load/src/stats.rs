//! Latency statistics in HdrHistogram: bounded memory however long the run,
//! mergeable across generator threads, and summarised with the number of
//! samples behind each percentile (a p99 of 50 requests is the maximum).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest value tracked: one hour in ns. Larger values are clamped.
const MAX_NS: u64 = 3_600_000_000_000;

/// A histogram of durations in ns (3 significant digits).
#[derive(Debug, Clone)]
pub struct Hist(Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        Self::new()
    }
}

impl Hist {
    pub fn new() -> Self {
        // The bounds are constants that satisfy the constructor's checks
        // (low >= 1, high >= 2 * low, sigfig <= 5); fall back to an
        // auto-resizing histogram if that ever changes.
        let h = Histogram::new_with_bounds(1, MAX_NS, 3)
            .or_else(|_| Histogram::new(3))
            .unwrap_or_else(|_| unreachable_histogram());
        Hist(h)
    }

    pub fn record(&mut self, v: u64) {
        let _ = self.0.record(v.clamp(1, MAX_NS));
    }

    pub fn merge(&mut self, other: &Hist) {
        let _ = self.0.add(&other.0);
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn quantile(&self, q: f64) -> u64 {
        self.0.value_at_quantile(q)
    }

    /// Summary in `unit_ns` units (1e6 for ms; 1 for plain counts).
    pub fn summary(&self, unit_ns: f64) -> Option<Summary> {
        if self.0.is_empty() {
            return None;
        }
        let n = self.0.len();
        let q = |q: f64| Pct {
            value: self.0.value_at_quantile(q) as f64 / unit_ns,
            samples: tail_samples(n, q),
        };
        Some(Summary {
            count: n,
            avg: self.0.mean() / unit_ns,
            min: self.0.min() as f64 / unit_ns,
            p50: q(0.50),
            p90: q(0.90),
            p95: q(0.95),
            p99: q(0.99),
            p999: q(0.999),
            max: self.0.max() as f64 / unit_ns,
        })
    }
}

fn unreachable_histogram() -> Histogram<u64> {
    // new(3) cannot fail (sigfig 3 is in range); this is never reached, but
    // there is no panic on a runtime path.
    match Histogram::new(2) {
        Ok(h) => h,
        Err(_) => std::process::abort(),
    }
}

/// The samples at or above the `q` quantile: how many requests a
/// percentile rests on.
pub fn tail_samples(n: u64, q: f64) -> u64 {
    // The small epsilon absorbs float error (1000 * 0.01 is 10.000000000000009).
    let above = (n as f64 * (1.0 - q) - 1e-9).ceil() as u64;
    above.clamp(1, n.max(1))
}

/// One percentile and the number of samples at or beyond it.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Pct {
    pub value: f64,
    pub samples: u64,
}

/// avg, p50, p90, p95, p99, p99.9, max, with sample counts.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub avg: f64,
    pub min: f64,
    pub p50: Pct,
    pub p90: Pct,
    pub p95: Pct,
    pub p99: Pct,
    pub p999: Pct,
    pub max: f64,
}

/// Everything one generator thread measures; merged at the end.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// end - send (uncorrected).
    pub e2e: Hist,
    /// end - intended (rate mode's headline).
    pub e2e_sched: Hist,
    /// send - intended.
    pub lag: Hist,
    /// first token (first byte when not streaming) - send.
    pub ttft: Hist,
    /// first token - intended.
    pub ttft_sched: Hist,
    pub tpot: Hist,
    pub itl: Hist,
    /// Output tokens per request (plain counts).
    pub tokens: Hist,
    pub ok: u64,
    pub timeouts: u64,
    /// Errors by kind (`connect`, `http_503`, `stream_error`, ...).
    pub errors: BTreeMap<String, u64>,
    /// 2xx answers that were not what was asked, by reason.
    pub incomplete: BTreeMap<String, u64>,
    /// Complete answers the model ended itself before the asked tokens.
    pub stopped_early: u64,
    /// The first error answer, quoted (`HTTP 404: "..."`).
    pub error_sample: Option<String>,
    pub warmup: u64,
    pub dropped: u64,
    /// Requests that met every SLO.
    pub good: u64,
    pub output_tokens: u64,
    pub streams_without_done: u64,
    pub bytes: u64,
    /// Earliest intended (or sent) time and latest end, CLOCK_MONOTONIC ns.
    pub first_start_ns: Option<u64>,
    pub last_end_ns: Option<u64>,
}

impl Stats {
    pub fn error(&mut self, kind: &str) {
        let n = self.errors.entry(kind.to_string()).or_insert(0);
        *n = n.saturating_add(1);
    }

    pub fn incomplete(&mut self, why: &str) {
        let n = self.incomplete.entry(why.to_string()).or_insert(0);
        *n = n.saturating_add(1);
    }

    pub fn incomplete_total(&self) -> u64 {
        self.incomplete
            .values()
            .fold(0, |a, b| a.saturating_add(*b))
    }

    pub fn window(&mut self, start_ns: u64, end_ns: u64) {
        self.first_start_ns = Some(self.first_start_ns.map_or(start_ns, |s| s.min(start_ns)));
        self.last_end_ns = Some(self.last_end_ns.map_or(end_ns, |e| e.max(end_ns)));
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.values().fold(0, |a, b| a.saturating_add(*b))
    }

    pub fn merge(&mut self, o: &Stats) {
        for (a, b) in [
            (&mut self.e2e, &o.e2e),
            (&mut self.e2e_sched, &o.e2e_sched),
            (&mut self.lag, &o.lag),
            (&mut self.ttft, &o.ttft),
            (&mut self.ttft_sched, &o.ttft_sched),
            (&mut self.tpot, &o.tpot),
            (&mut self.itl, &o.itl),
            (&mut self.tokens, &o.tokens),
        ] {
            a.merge(b);
        }
        // Saturating throughout: counts a server reports (tokens) can be
        // anything; a sum never wraps around.
        self.ok = self.ok.saturating_add(o.ok);
        self.timeouts = self.timeouts.saturating_add(o.timeouts);
        for (mine, theirs) in [
            (&mut self.errors, &o.errors),
            (&mut self.incomplete, &o.incomplete),
        ] {
            for (k, v) in theirs {
                let n = mine.entry(k.clone()).or_insert(0);
                *n = n.saturating_add(*v);
            }
        }
        if self.error_sample.is_none() {
            self.error_sample.clone_from(&o.error_sample);
        }
        self.stopped_early = self.stopped_early.saturating_add(o.stopped_early);
        self.warmup = self.warmup.saturating_add(o.warmup);
        self.dropped = self.dropped.saturating_add(o.dropped);
        self.good = self.good.saturating_add(o.good);
        self.output_tokens = self.output_tokens.saturating_add(o.output_tokens);
        self.streams_without_done = self
            .streams_without_done
            .saturating_add(o.streams_without_done);
        self.bytes = self.bytes.saturating_add(o.bytes);
        if let Some(s) = o.first_start_ns {
            self.first_start_ns = Some(self.first_start_ns.map_or(s, |x| x.min(s)));
        }
        if let Some(e) = o.last_end_ns {
            self.last_end_ns = Some(self.last_end_ns.map_or(e, |x| x.max(e)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_a_known_distribution() {
        let mut h = Hist::new();
        for v in 1..=1000u64 {
            h.record(v * 1_000_000);
        }
        let s = h.summary(1e6).unwrap();
        assert_eq!(s.count, 1000);
        assert!((s.avg - 500.5).abs() < 0.5);
        assert!((s.p50.value - 500.0).abs() < 1.0);
        assert!((s.p99.value - 990.0).abs() < 1.0);
        assert!((s.max - 1000.0).abs() < 1.0);
        assert_eq!(s.p99.samples, 10);
        assert_eq!(s.p999.samples, 1);
        assert_eq!(s.p50.samples, 500);
    }

    #[test]
    fn small_runs_say_how_thin_the_tail_is() {
        assert_eq!(tail_samples(50, 0.95), 3);
        assert_eq!(tail_samples(50, 0.99), 1);
        assert_eq!(tail_samples(50, 0.999), 1);
        assert_eq!(tail_samples(0, 0.99), 1);
    }

    #[test]
    fn merge_adds_counts_windows_and_errors() {
        let mut a = Stats::default();
        a.e2e.record(10);
        a.error("connect");
        a.window(100, 200);
        let mut b = Stats::default();
        b.e2e.record(20);
        b.error("connect");
        b.error("http_500");
        b.window(50, 150);
        a.merge(&b);
        assert_eq!(a.e2e.len(), 2);
        assert_eq!(a.errors["connect"], 2);
        assert_eq!(a.errors_total(), 3);
        assert_eq!((a.first_start_ns, a.last_end_ns), (Some(50), Some(200)));
        assert!(Hist::new().summary(1.0).is_none());
    }

    #[test]
    fn sums_saturate_instead_of_wrapping() {
        // Token counts from a broken server: two near u64::MAX.
        let mut a = Stats {
            output_tokens: u64::MAX - 2,
            bytes: u64::MAX,
            ..Stats::default()
        };
        a.incomplete("empty_stream");
        let mut b = Stats {
            output_tokens: u64::MAX - 2,
            bytes: 5,
            ..Stats::default()
        };
        b.incomplete("empty_stream");
        b.incomplete("no_finish_reason");
        a.merge(&b);
        assert_eq!(a.output_tokens, u64::MAX);
        assert_eq!(a.bytes, u64::MAX);
        assert_eq!(a.incomplete_total(), 3);
        a.errors.insert("x".into(), u64::MAX);
        a.error("x");
        a.error("y");
        assert_eq!(a.errors_total(), u64::MAX);
        // The token histogram clamps rather than failing.
        a.tokens.record(u64::MAX);
        assert_eq!(a.tokens.len(), 1);
    }
}
