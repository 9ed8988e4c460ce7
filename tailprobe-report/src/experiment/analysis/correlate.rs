//! Request latencies against kernel time windows, on one clock
//! (CLOCK_MONOTONIC): each request gets the kernel signals of the windows
//! it was in flight, weighted by the overlap, and each signal is rank
//! correlated with latency. Pure.

use serde::{Deserialize, Serialize};

use super::{rank::spearman, stats::percentile_sorted};

/// The signals of one kernel window (process-wide).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowSignals {
    pub start_ns: u64,
    pub len_ns: u64,
    pub runq_ns: f64,
    pub involuntary_switches: f64,
    pub migrations: f64,
    pub irq_ns: f64,
    pub page_faults: f64,
}

pub const SIGNALS: [&str; 5] = [
    "run-queue wait",
    "involuntary switches",
    "migrations",
    "IRQ time stolen",
    "page faults",
];

fn values(w: &WindowSignals) -> [f64; 5] {
    [
        w.runq_ns,
        w.involuntary_switches,
        w.migrations,
        w.irq_ns,
        w.page_faults,
    ]
}

/// A request in flight over `[start_ns, end_ns]` with its latency.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Flight {
    pub start_ns: u64,
    pub end_ns: u64,
    pub latency_ms: f64,
}

/// Overlap-weighted signal sums per request. `windows` sorted by start.
pub fn per_request(reqs: &[Flight], windows: &[WindowSignals]) -> Vec<[f64; 5]> {
    reqs.iter()
        .map(|r| {
            let mut acc = [0.0; 5];
            let lo = windows.partition_point(|w| w.start_ns + w.len_ns <= r.start_ns);
            for w in &windows[lo..] {
                if w.start_ns >= r.end_ns {
                    break;
                }
                let ov = (w.start_ns + w.len_ns).min(r.end_ns) - w.start_ns.max(r.start_ns);
                let f = ov as f64 / w.len_ns.max(1) as f64;
                for (a, v) in acc.iter_mut().zip(values(w)) {
                    *a += v * f;
                }
            }
            acc
        })
        .collect()
}

/// How one signal relates to latency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalCorrelation {
    pub signal: String,
    /// Spearman's rho over all requests; null when the signal never moved.
    pub rho: Option<f64>,
    pub requests: usize,
    /// Mean of the signal over requests above the latency p95, and at or
    /// below the median (ns for times, counts otherwise).
    pub tail_mean: f64,
    pub typical_mean: f64,
    /// For time signals: the tail-minus-typical difference of the signal
    /// as a share of the tail-minus-typical latency gap, in %; None for
    /// counts (their time is not measured) or when there is no gap.
    #[serde(default)]
    pub gap_share_pct: Option<f64>,
}

/// Signals that are times (ns): run-queue wait and IRQ time.
const TIME_SIGNALS: [usize; 2] = [0, 3];

/// A signal named as explaining the tail must explain at least this share
/// of the slow-vs-typical gap (%).
pub const MIN_GAP_SHARE_PCT: f64 = 10.0;

/// Per request, each signal per unit of its time in flight: times as a
/// share of it, counts per ms. A sum over a request's lifetime correlates
/// with its length by construction; a share does not.
pub fn per_unit(reqs: &[Flight], sig: &[[f64; 5]]) -> Vec<[f64; 5]> {
    reqs.iter()
        .zip(sig)
        .map(|(r, s)| {
            let dur = r.end_ns.saturating_sub(r.start_ns).max(1) as f64;
            let mut out = [0.0; 5];
            for (k, v) in s.iter().enumerate() {
                out[k] = if TIME_SIGNALS.contains(&k) {
                    v / dur
                } else {
                    v / (dur / 1e6)
                };
            }
            out
        })
        .collect()
}

pub fn correlate(reqs: &[Flight], sig: &[[f64; 5]]) -> Vec<SignalCorrelation> {
    let lat: Vec<f64> = reqs.iter().map(|r| r.latency_ms).collect();
    let mut sorted = lat.clone();
    sorted.sort_by(f64::total_cmp);
    let p95 = percentile_sorted(&sorted, 95.0).unwrap_or(f64::INFINITY);
    let p50 = percentile_sorted(&sorted, 50.0).unwrap_or(f64::NEG_INFINITY);
    let mean_where = |k: usize, keep: &dyn Fn(f64) -> bool| {
        let v: Vec<f64> = lat
            .iter()
            .zip(sig)
            .filter(|(l, _)| keep(**l))
            .map(|(_, s)| s[k])
            .collect();
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let lat_mean = |keep: &dyn Fn(f64) -> bool| {
        let v: Vec<f64> = lat.iter().copied().filter(|l| keep(*l)).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let gap_ms = match (lat_mean(&|l| l > p95), lat_mean(&|l| l <= p50)) {
        (Some(a), Some(b)) if a > b => Some(a - b),
        _ => None,
    };
    let units = per_unit(reqs, sig);
    SIGNALS
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let col: Vec<f64> = units.iter().map(|s| s[k]).collect();
            let (tail, typical) = (mean_where(k, &|l| l > p95), mean_where(k, &|l| l <= p50));
            SignalCorrelation {
                signal: name.to_string(),
                rho: spearman(&lat, &col),
                requests: lat.len(),
                tail_mean: tail,
                typical_mean: typical,
                gap_share_pct: gap_ms
                    .filter(|_| TIME_SIGNALS.contains(&k))
                    .map(|g| 100.0 * (tail - typical) / 1e6 / g),
            }
        })
        .collect()
}

/// The signal that best explains the tail: the highest positive rho of at
/// least 0.3 (a weak-to-moderate rank association) among time signals that
/// explain at least `MIN_GAP_SHARE_PCT` of the slow-vs-typical gap, if any.
pub fn strongest(c: &[SignalCorrelation]) -> Option<&SignalCorrelation> {
    c.iter()
        .filter(|s| s.rho.is_some_and(|r| r >= 0.3))
        .filter(|s| s.gap_share_pct.is_some_and(|g| g >= MIN_GAP_SHARE_PCT))
        .max_by(|a, b| a.rho.unwrap_or(0.0).total_cmp(&b.rho.unwrap_or(0.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn overlap_weighting() {
        let w = |i: u64, runq: f64| WindowSignals {
            start_ns: i * 10 * MS,
            len_ns: 10 * MS,
            runq_ns: runq,
            page_faults: 10.0,
            ..WindowSignals::default()
        };
        let ws = [w(0, 100.0), w(1, 200.0), w(2, 400.0)];
        // 5..25 ms: half of w0, all of w1, half of w2.
        let r = Flight {
            start_ns: 5 * MS,
            end_ns: 25 * MS,
            latency_ms: 20.0,
        };
        let s = per_request(&[r], &ws);
        assert!((s[0][0] - (50.0 + 200.0 + 200.0)).abs() < 1e-9);
        assert!((s[0][4] - 20.0).abs() < 1e-9);
    }

    #[test]
    fn the_signal_that_moves_with_latency_is_found() {
        // Latency grows with run-queue wait; faults are noise unrelated to it.
        let reqs: Vec<Flight> = (0..40u64)
            .map(|i| Flight {
                start_ns: i * MS,
                end_ns: i * MS + 1,
                latency_ms: i as f64,
            })
            .collect();
        let sig: Vec<[f64; 5]> = (0..40u64)
            .map(|i| {
                [
                    (i * i * 10_000) as f64,
                    0.0,
                    0.0,
                    0.0,
                    ((i * 7919) % 13) as f64,
                ]
            })
            .collect();
        let c = correlate(&reqs, &sig);
        assert!((c[0].rho.unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(c[1].rho, None);
        assert!(c[4].rho.unwrap().abs() < 0.3);
        assert_eq!(strongest(&c).unwrap().signal, "run-queue wait");
        // p95 by nearest rank of 40 values is the 38th (37): the tail is
        // 38 and 39, with signals 38^2 and 39^2.
        assert_eq!(c[0].tail_mean, (1444.0 + 1521.0) / 2.0 * 10_000.0);
    }

    #[test]
    fn a_sum_that_grows_with_request_length_is_not_named() {
        // IRQ time is 0.25% of every request: its sum rises with latency
        // (rho 1 on sums) but its share does not move, and it is a tiny
        // part of the gap; run-queue wait is the gap.
        let reqs: Vec<Flight> = (1..=40u64)
            .map(|i| Flight {
                start_ns: i * 1000 * MS,
                end_ns: i * 1000 * MS + i * 10 * MS,
                latency_ms: (i * 10) as f64,
            })
            .collect();
        let sig: Vec<[f64; 5]> = reqs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let d = (r.end_ns - r.start_ns) as f64;
                let runq = if i >= 38 { 0.8 * d } else { 0.0 };
                [runq, 0.0, 0.0, 0.0025 * d, 0.0]
            })
            .collect();
        let c = correlate(&reqs, &sig);
        let irq = &c[3];
        assert!(irq.rho.is_none_or(|r| r.abs() < 0.3), "{irq:?}");
        assert!(irq.gap_share_pct.unwrap() < 1.0, "{irq:?}");
        let s = strongest(&c).unwrap();
        assert_eq!(s.signal, "run-queue wait");
        assert!(s.gap_share_pct.unwrap() > 50.0, "{s:?}");
        // A count is never named: its time is not measured.
        assert_eq!(c[4].gap_share_pct, None);
    }
}
