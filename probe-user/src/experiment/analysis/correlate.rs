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
    SIGNALS
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let col: Vec<f64> = sig.iter().map(|s| s[k]).collect();
            SignalCorrelation {
                signal: name.to_string(),
                rho: spearman(&lat, &col),
                requests: lat.len(),
                tail_mean: mean_where(k, &|l| l > p95),
                typical_mean: mean_where(k, &|l| l <= p50),
            }
        })
        .collect()
}

/// The signal that best explains the tail: the highest positive rho of at
/// least 0.3 (a weak-to-moderate rank association), if any.
pub fn strongest(c: &[SignalCorrelation]) -> Option<&SignalCorrelation> {
    c.iter()
        .filter(|s| s.rho.is_some_and(|r| r >= 0.3))
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
            .map(|i| [(i * i) as f64, 0.0, 0.0, 0.0, ((i * 7919) % 13) as f64])
            .collect();
        let c = correlate(&reqs, &sig);
        assert!((c[0].rho.unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(c[1].rho, None);
        assert!(c[4].rho.unwrap().abs() < 0.3);
        assert_eq!(strongest(&c).unwrap().signal, "run-queue wait");
        // p95 by nearest rank of 40 values is the 38th (37): the tail is
        // 38 and 39, with signals 38^2 and 39^2.
        assert_eq!(c[0].tail_mean, (1444.0 + 1521.0) / 2.0);
    }
}
