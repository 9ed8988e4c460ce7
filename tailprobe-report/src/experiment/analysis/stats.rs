//! Statistics over repeats: a mean with its 95% confidence interval
//! (Student's t), and the difference of two means with Welch's interval.

use serde::{Deserialize, Serialize};

/// Two-sided 95% Student t critical values for 1..=30 degrees of freedom.
const T95: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// t critical value (95%, two-sided) for `df` degrees of freedom; fractional
/// df (Welch) round down, which widens the interval (conservative).
pub fn t95(df: f64) -> f64 {
    if !df.is_finite() || df < 1.0 {
        return f64::NAN;
    }
    let d = df.floor() as usize;
    if d <= 30 {
        T95[d - 1]
    } else if d <= 60 {
        2.000
    } else if d <= 120 {
        1.980
    } else {
        1.960
    }
}

/// A mean over repeats with its spread.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (n - 1); 0 when n = 1.
    pub sd: f64,
    /// Half-width of the 95% interval; null when n = 1 (no interval).
    pub ci95: Option<f64>,
    pub min: f64,
    pub max: f64,
}

impl Estimate {
    pub fn of(xs: &[f64]) -> Option<Estimate> {
        let xs: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
        if xs.is_empty() {
            return None;
        }
        let n = xs.len();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let sd = if n > 1 {
            (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        let ci95 = (n > 1).then(|| t95((n - 1) as f64) * sd / (n as f64).sqrt());
        Some(Estimate {
            n,
            mean,
            sd,
            ci95,
            min: xs.iter().copied().fold(f64::INFINITY, f64::min),
            max: xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }
}

/// `b - a` with a 95% Welch interval, and as a share of `a`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    pub diff: f64,
    pub ci95: Option<f64>,
    /// diff / mean(a), in %.
    pub pct: Option<f64>,
    /// The interval excludes zero.
    pub significant: bool,
}

pub fn delta(a: &Estimate, b: &Estimate) -> Delta {
    let diff = b.mean - a.mean;
    let ci95 = if a.n > 1 && b.n > 1 {
        let va = a.sd.powi(2) / a.n as f64;
        let vb = b.sd.powi(2) / b.n as f64;
        let se = (va + vb).sqrt();
        if se == 0.0 {
            Some(0.0)
        } else {
            let df =
                (va + vb).powi(2) / (va.powi(2) / (a.n - 1) as f64 + vb.powi(2) / (b.n - 1) as f64);
            Some(t95(df) * se)
        }
    } else {
        None
    };
    Delta {
        diff,
        ci95,
        pct: (a.mean != 0.0).then(|| 100.0 * diff / a.mean),
        significant: ci95.is_some_and(|c| diff.abs() > c),
    }
}

/// Nearest-rank percentile (`p` in 0..=100) of sorted values.
pub fn percentile_sorted(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// (fraction, value) points of the empirical CDF, at most `points` of them
/// (always including the maximum).
pub fn cdf_points(sorted: &[f64], points: usize) -> Vec<(f64, f64)> {
    let n = sorted.len();
    if n == 0 || points == 0 {
        return Vec::new();
    }
    let step = n.div_ceil(points).max(1);
    // The first value, then every step-th ending exactly at the maximum.
    let mut out = vec![(1.0 / n as f64, sorted[0])];
    let mut i = (n - 1) % step;
    while i < n {
        if i > 0 {
            out.push(((i + 1) as f64 / n as f64, sorted[i]));
        }
        i += step;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_interval_match_hand_computation() {
        // mean 12, sd 2 (values 10, 12, 14), t(2) = 4.303: 4.303 * 2 / sqrt(3)
        let e = Estimate::of(&[10.0, 12.0, 14.0]).unwrap();
        assert_eq!(e.mean, 12.0);
        assert!((e.sd - 2.0).abs() < 1e-12);
        assert!((e.ci95.unwrap() - 4.303 * 2.0 / 3f64.sqrt()).abs() < 1e-9);
        assert_eq!((e.min, e.max), (10.0, 14.0));
        let one = Estimate::of(&[5.0]).unwrap();
        assert_eq!(one.ci95, None);
        assert!(Estimate::of(&[]).is_none());
    }

    #[test]
    fn welch_delta() {
        let a = Estimate::of(&[10.0, 12.0, 14.0]).unwrap();
        let b = Estimate::of(&[20.0, 22.0, 24.0]).unwrap();
        let d = delta(&a, &b);
        assert_eq!(d.diff, 10.0);
        assert!((d.pct.unwrap() - 100.0 * 10.0 / 12.0).abs() < 1e-9);
        // equal variances and n: df = 4, se = sqrt(4/3 + 4/3)
        let se = (8.0f64 / 3.0).sqrt();
        assert!((d.ci95.unwrap() - 2.776 * se).abs() < 1e-9);
        assert!(d.significant);
        let c = Estimate::of(&[11.0, 12.5, 13.5]).unwrap();
        assert!(!delta(&a, &c).significant);
    }

    #[test]
    fn percentiles_and_cdf() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile_sorted(&v, 95.0), Some(95.0));
        assert_eq!(percentile_sorted(&v, 99.0), Some(99.0));
        assert_eq!(percentile_sorted(&v, 100.0), Some(100.0));
        assert_eq!(percentile_sorted(&[3.0], 50.0), Some(3.0));
        let c = cdf_points(&v, 10);
        assert_eq!(c.len(), 11);
        assert_eq!(c[1], (0.1, 10.0));
        assert_eq!(c[0], (0.01, 1.0));
        assert_eq!(*c.last().unwrap(), (1.0, 100.0));
    }
}
