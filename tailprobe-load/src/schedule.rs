//! The absolute, seeded arrival schedule of rate mode.
//!
//! Request `i` is due at `t0 + sum of the first i gaps`; the gaps come from a
//! seeded generator, so the same `--rate`, `--arrival` and `--seed` give the
//! same schedule in every run and configuration. The dispatcher sleeps until
//! each absolute deadline, never for a relative interval, so errors in one
//! sleep do not accumulate.

use std::{fmt, str::FromStr};

use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, Exp, Gamma};

/// How gaps between intended send times are distributed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arrival {
    /// Every gap is exactly `1 / rate`.
    Constant,
    /// Exponential gaps with mean `1 / rate` (a Poisson process).
    Poisson,
    /// Gamma gaps with shape `k` and mean `1 / rate`: `k < 1` is burstier
    /// than Poisson, `k > 1` smoother, `k = 1` is Poisson.
    Gamma(f64),
}

/// Error in an `--arrival` value.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ArrivalError {
    #[error("unknown arrival {0:?}: expected constant, poisson or gamma:K (K > 0)")]
    Unknown(String),
    #[error("bad gamma shape {0:?}: expected a number above 0, e.g. gamma:0.5")]
    BadShape(String),
}

impl FromStr for Arrival {
    type Err = ArrivalError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        match s {
            "constant" => Ok(Arrival::Constant),
            "poisson" => Ok(Arrival::Poisson),
            _ => match s.strip_prefix("gamma:") {
                Some(k) => match k.trim().parse::<f64>() {
                    Ok(k) if k.is_finite() && k > 0.0 => Ok(Arrival::Gamma(k)),
                    _ => Err(ArrivalError::BadShape(k.to_string())),
                },
                None => Err(ArrivalError::Unknown(s.to_string())),
            },
        }
    }
}

impl fmt::Display for Arrival {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arrival::Constant => f.write_str("constant"),
            Arrival::Poisson => f.write_str("poisson"),
            Arrival::Gamma(k) => write!(f, "gamma:{k}"),
        }
    }
}

enum Gaps {
    Constant,
    Exp(Exp<f64>),
    Gamma(Gamma<f64>),
}

/// An endless iterator of intended send offsets in ns from the schedule's
/// start. The first request is due at offset 0.
pub struct Schedule {
    rng: StdRng,
    gaps: Gaps,
    mean_gap_ns: f64,
    next_ns: f64,
    index: u64,
}

impl Schedule {
    /// `rate` in requests per second, above zero and finite.
    pub fn new(rate: f64, arrival: Arrival, seed: u64) -> Self {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            1.0
        };
        let mean_gap_ns = 1e9 / rate;
        let gaps = match arrival {
            Arrival::Constant => Gaps::Constant,
            Arrival::Poisson => Exp::new(1.0 / mean_gap_ns).map_or(Gaps::Constant, Gaps::Exp),
            // Mean of Gamma(k, theta) is k * theta.
            Arrival::Gamma(k) => Gamma::new(k, mean_gap_ns / k).map_or(Gaps::Constant, Gaps::Gamma),
        };
        Schedule {
            rng: StdRng::seed_from_u64(seed),
            gaps,
            mean_gap_ns,
            next_ns: 0.0,
            index: 0,
        }
    }

    /// Mean gap between requests, ns.
    pub fn mean_gap_ns(&self) -> f64 {
        self.mean_gap_ns
    }
}

impl Iterator for Schedule {
    /// `(request index, intended offset in ns)`.
    type Item = (u64, u64);
    fn next(&mut self) -> Option<(u64, u64)> {
        let item = (self.index, self.next_ns.round() as u64);
        let gap = match &self.gaps {
            // Multiply rather than accumulate, so constant schedules do not
            // drift by rounding over millions of requests.
            Gaps::Constant => {
                self.next_ns = (self.index + 1) as f64 * self.mean_gap_ns;
                0.0
            }
            Gaps::Exp(d) => d.sample(&mut self.rng),
            Gaps::Gamma(d) => d.sample(&mut self.rng),
        };
        self.next_ns += gap;
        self.index += 1;
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_arrivals() {
        assert_eq!("constant".parse(), Ok(Arrival::Constant));
        assert_eq!("poisson".parse(), Ok(Arrival::Poisson));
        assert_eq!("gamma:0.5".parse(), Ok(Arrival::Gamma(0.5)));
        assert!(matches!(
            "gamma:0".parse::<Arrival>(),
            Err(ArrivalError::BadShape(_))
        ));
        assert!(matches!(
            "gamma:x".parse::<Arrival>(),
            Err(ArrivalError::BadShape(_))
        ));
        assert!(matches!(
            "burst".parse::<Arrival>(),
            Err(ArrivalError::Unknown(_))
        ));
        assert_eq!(Arrival::Gamma(2.0).to_string(), "gamma:2");
    }

    #[test]
    fn constant_is_exact() {
        let s: Vec<_> = Schedule::new(1000.0, Arrival::Constant, 1)
            .take(4)
            .collect();
        assert_eq!(
            s,
            vec![(0, 0), (1, 1_000_000), (2, 2_000_000), (3, 3_000_000)]
        );
        let last = Schedule::new(3.0, Arrival::Constant, 1)
            .nth(3_000_000)
            .unwrap();
        assert_eq!(last.1, 1_000_000_000_000_000);
    }

    fn mean_and_cv(arrival: Arrival, seed: u64) -> (f64, f64) {
        let offs: Vec<u64> = Schedule::new(1000.0, arrival, seed)
            .take(200_001)
            .map(|(_, t)| t)
            .collect();
        let gaps: Vec<f64> = offs.windows(2).map(|w| (w[1] - w[0]) as f64).collect();
        let n = gaps.len() as f64;
        let mean = gaps.iter().sum::<f64>() / n;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt() / mean)
    }

    #[test]
    fn poisson_and_gamma_have_the_right_mean_and_spread() {
        // 200k gaps: the sample mean is within 1% with overwhelming odds.
        let (mean, cv) = mean_and_cv(Arrival::Poisson, 7);
        assert!((mean - 1e6).abs() < 1e4, "poisson mean {mean}");
        assert!((cv - 1.0).abs() < 0.03, "poisson cv {cv}");
        // Gamma(k): coefficient of variation 1/sqrt(k).
        let (mean, cv) = mean_and_cv(Arrival::Gamma(0.25), 7);
        assert!((mean - 1e6).abs() < 2e4, "gamma mean {mean}");
        assert!((cv - 2.0).abs() < 0.1, "gamma cv {cv}");
        let (_, cv) = mean_and_cv(Arrival::Gamma(4.0), 7);
        assert!((cv - 0.5).abs() < 0.02, "gamma cv {cv}");
    }

    #[test]
    fn seeded_schedules_replay_exactly() {
        let a: Vec<_> = Schedule::new(500.0, Arrival::Poisson, 42)
            .take(1000)
            .collect();
        let b: Vec<_> = Schedule::new(500.0, Arrival::Poisson, 42)
            .take(1000)
            .collect();
        let c: Vec<_> = Schedule::new(500.0, Arrival::Poisson, 43)
            .take(1000)
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.windows(2).all(|w| w[1].1 >= w[0].1));
    }
}
