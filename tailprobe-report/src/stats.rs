//! Percentiles and summaries from the kernel's log-linear histograms.

use probe_common::{bucket_lower_bound, bucket_upper_bound, HIST_BUCKETS};
use serde::Serialize;

/// The value at quantile `q` (0..=1) of a histogram: the midpoint of the
/// bucket that holds the sample of rank ceil(q * n), clamped to the observed
/// maximum. Relative error is at most half a bucket width (about 3%).
pub fn quantile(buckets: &[u64], q: f64, observed_max: u64) -> Option<u64> {
    let n: u64 = buckets.iter().sum();
    if n == 0 {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
    let mut seen = 0u64;
    for (i, &c) in buckets.iter().enumerate() {
        seen += c;
        if seen >= rank {
            let lo = bucket_lower_bound(i);
            let hi = bucket_upper_bound(i);
            let mid = if hi == u64::MAX {
                lo
            } else {
                lo + (hi - lo) / 2
            };
            return Some(if observed_max > 0 {
                mid.min(observed_max)
            } else {
                mid
            });
        }
    }
    None
}

/// Add histogram `b` into `a`.
pub fn merge(a: &mut [u64], b: &[u64]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x += *y;
    }
}

pub fn empty_hist() -> Vec<u64> {
    vec![0; HIST_BUCKETS]
}

/// Run-queue wait summary.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct WaitSummary {
    pub count: u64,
    pub total_ns: u64,
    pub mean_ns: u64,
    pub p50_ns: Option<u64>,
    pub p95_ns: Option<u64>,
    pub p99_ns: Option<u64>,
    pub max_ns: u64,
}

impl WaitSummary {
    pub fn new(count: u64, total_ns: u64, max_ns: u64, hist: &[u64]) -> Self {
        WaitSummary {
            count,
            total_ns,
            mean_ns: total_ns.checked_div(count).unwrap_or(0),
            p50_ns: quantile(hist, 0.50, max_ns),
            p95_ns: quantile(hist, 0.95, max_ns),
            p99_ns: quantile(hist, 0.99, max_ns),
            max_ns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_common::bucket_index;

    fn hist_of(values: &[u64]) -> Vec<u64> {
        let mut h = empty_hist();
        for &v in values {
            h[bucket_index(v)] += 1;
        }
        h
    }

    #[test]
    fn buckets_cover_every_value_contiguously() {
        for i in 0..HIST_BUCKETS - 1 {
            assert_eq!(
                bucket_upper_bound(i) + 1,
                bucket_lower_bound(i + 1),
                "bucket {i}"
            );
        }
        for v in [
            0u64,
            1,
            15,
            16,
            17,
            31,
            32,
            1000,
            123_456,
            1 << 37,
            (1 << 38) - 1,
            u64::MAX,
        ] {
            let i = bucket_index(v);
            assert!(i < HIST_BUCKETS);
            assert!(
                bucket_lower_bound(i) <= v && v <= bucket_upper_bound(i),
                "v={v} i={i}"
            );
        }
    }

    #[test]
    fn bucket_width_is_at_most_one_sixteenth() {
        for i in 16..HIST_BUCKETS - 1 {
            let lo = bucket_lower_bound(i) as f64;
            let width = (bucket_upper_bound(i) - bucket_lower_bound(i) + 1) as f64;
            assert!(width / lo <= 1.0 / 16.0 + 1e-12, "bucket {i}");
        }
    }

    #[test]
    fn percentiles_within_bucket_error() {
        // 1..=10000 microseconds, uniformly: p50 = 5 ms, p95 = 9.5 ms, p99 = 9.9 ms.
        let values: Vec<u64> = (1..=10_000u64).map(|us| us * 1000).collect();
        let h = hist_of(&values);
        let max = *values.last().unwrap();
        for (q, exact) in [(0.5, 5_000_000.0), (0.95, 9_500_000.0), (0.99, 9_900_000.0)] {
            let got = quantile(&h, q, max).unwrap() as f64;
            assert!(
                (got - exact).abs() / exact < 0.035,
                "q={q} got={got} exact={exact}"
            );
        }
        assert_eq!(quantile(&h, 1.0, max), Some(max));
    }

    #[test]
    fn tail_is_seen_not_averaged_away() {
        // 99 waits of 10 us and one of 50 ms: p99 is still 10 us, max is 50 ms.
        let mut values = vec![10_000u64; 99];
        values.push(50_000_000);
        let h = hist_of(&values);
        let s = WaitSummary::new(100, values.iter().sum(), 50_000_000, &h);
        let p99 = s.p99_ns.unwrap() as f64;
        assert!((p99 - 10_000.0).abs() / 10_000.0 < 0.035);
        assert_eq!(s.max_ns, 50_000_000);
        assert_eq!(s.mean_ns, (99 * 10_000 + 50_000_000) / 100);
    }

    #[test]
    fn empty_histogram_has_no_percentiles() {
        let s = WaitSummary::new(0, 0, 0, &empty_hist());
        assert_eq!(s.p50_ns, None);
        assert_eq!(s.mean_ns, 0);
    }

    #[test]
    fn merge_adds() {
        let mut a = hist_of(&[100, 200]);
        merge(&mut a, &hist_of(&[100]));
        assert_eq!(a[bucket_index(100)], 2);
        assert_eq!(a.iter().sum::<u64>(), 3);
    }
}
