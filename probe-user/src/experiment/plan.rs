//! The experiment plan: which configurations, how long, how often, and the
//! capacity question. Read from TOML (`--plan plan.toml`) or built from
//! flags; validated against the node before anything runs. Pure apart from
//! reading the file.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Where the server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pinning {
    /// Wherever the scheduler puts it.
    Unpinned,
    /// On the device-local node's CPUs (node 0 when the node has no
    /// accelerator), memory bound there.
    Local,
    /// On another node's CPUs, memory bound there.
    Remote,
}

impl Pinning {
    pub fn name(self) -> &'static str {
        match self {
            Pinning::Unpinned => "unpinned",
            Pinning::Local => "pinned local",
            Pinning::Remote => "pinned remote",
        }
    }
}

/// Where the noisy neighbour runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoiseAxis {
    None,
    /// On the server's node (other CPUs of that node when it has any,
    /// otherwise the server's own CPUs).
    SameNode,
    /// On another node.
    OtherNode,
}

impl NoiseAxis {
    pub fn name(self) -> &'static str {
        match self {
            NoiseAxis::None => "no noise",
            NoiseAxis::SameNode => "noise same node",
            NoiseAxis::OtherNode => "noise other node",
        }
    }
}

/// What to do when a cell fails (the target died, the load got nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// Mark the cell failed and go on with the next one.
    Continue,
    /// Mark it failed and stop the experiment (what finished is written).
    Stop,
}

/// Service-level objective used by the capacity sweep.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloPlan {
    /// Which percentile of the end-to-end latency (from the intended send
    /// time) must hold: 50, 90, 95 or 99.
    pub percentile: f64,
    /// The bound, in milliseconds.
    pub e2e_ms: f64,
}

/// The built-in server's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerPlan {
    /// Worker threads [default: the online CPUs].
    pub workers: Option<usize>,
    pub hidden: usize,
    pub layers: usize,
}

impl Default for ServerPlan {
    fn default() -> Self {
        ServerPlan {
            workers: None,
            hidden: 512,
            layers: 4,
        }
    }
}

/// A whole experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Plan {
    pub name: String,
    /// Governors to compare; `current` leaves the node's setting alone.
    pub governors: Vec<String>,
    pub pinning: Vec<Pinning>,
    pub noise: Vec<NoiseAxis>,
    /// Times every configuration is run; the order alternates.
    pub repeats: u32,
    /// Seconds of load before the measured part of each cell.
    pub warmup_s: f64,
    /// Seconds of measured load per cell.
    pub measure_s: f64,
    /// Offered rate (requests/s); absent: `load_fraction` of the capacity
    /// measured by a short closed-loop calibration.
    pub rate: Option<f64>,
    pub load_fraction: f64,
    /// `poisson`, `constant` or `gamma:K`.
    pub arrival: String,
    pub seed: u64,
    pub prompt_tokens: u32,
    pub max_tokens: u32,
    pub server: ServerPlan,
    /// Noise kind: `cpu`, `membw` or `mixed`.
    pub noise_kind: String,
    /// Noise threads [default: one per noise CPU].
    pub noise_threads: Option<usize>,
    /// CPU list for "pinned local" instead of the local node's CPUs.
    pub local_cpus: Option<String>,
    /// CPU list for "pinned remote" instead of another node's CPUs.
    pub remote_cpus: Option<String>,
    /// Capacity sweep: offered rates as fractions of the calibrated
    /// capacity (empty: no sweep).
    pub sweep: Vec<f64>,
    /// Seconds per sweep step.
    pub sweep_s: f64,
    pub slo: Option<SloPlan>,
    /// Peak load of the whole fleet, requests/s (for N vs N+1).
    pub fleet_load_rps: Option<f64>,
    /// Share of a replica's capacity you plan to use (0.8: 20% headroom).
    pub headroom: f64,
    /// Hard bound on the whole run, seconds: cells that would end later are
    /// recorded as skipped.
    pub max_total_s: f64,
    pub on_failure: OnFailure,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            name: "default".into(),
            governors: vec!["current".into(), "performance".into(), "powersave".into()],
            pinning: vec![Pinning::Unpinned, Pinning::Local, Pinning::Remote],
            noise: vec![NoiseAxis::None, NoiseAxis::SameNode, NoiseAxis::OtherNode],
            repeats: 3,
            warmup_s: 1.0,
            measure_s: 4.0,
            rate: None,
            load_fraction: 0.5,
            arrival: "poisson".into(),
            seed: 7,
            prompt_tokens: 16,
            max_tokens: 16,
            server: ServerPlan::default(),
            noise_kind: "cpu".into(),
            noise_threads: None,
            local_cpus: None,
            remote_cpus: None,
            sweep: vec![0.4, 0.6, 0.8, 1.0],
            sweep_s: 2.5,
            slo: Some(SloPlan {
                percentile: 95.0,
                e2e_ms: 50.0,
            }),
            fleet_load_rps: Some(1000.0),
            headroom: 0.8,
            max_total_s: 240.0,
            on_failure: OnFailure::Continue,
        }
    }
}

/// Governors the Linux cpufreq core knows; anything else is a typo.
pub const KNOWN_GOVERNORS: [&str; 6] = [
    "performance",
    "powersave",
    "schedutil",
    "ondemand",
    "conservative",
    "userspace",
];

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("reading the plan {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("plan {path}: {message}")]
    Parse { path: String, message: String },
    #[error("plan: {0}")]
    Invalid(String),
}

impl Plan {
    /// Parse TOML text (unknown keys are refused, so typos are caught).
    pub fn from_toml(text: &str, path: &str) -> Result<Plan, PlanError> {
        let plan: Plan = toml::from_str(text).map_err(|e| PlanError::Parse {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        plan.validate()?;
        Ok(plan)
    }

    pub fn load(path: &Path) -> Result<Plan, PlanError> {
        let text = std::fs::read_to_string(path).map_err(|source| PlanError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Plan::from_toml(&text, &path.display().to_string())
    }

    /// Checks that need no node: names, ranges, durations.
    pub fn validate(&self) -> Result<(), PlanError> {
        let bad = |m: String| Err(PlanError::Invalid(m));
        if self.governors.is_empty() || self.pinning.is_empty() || self.noise.is_empty() {
            return bad("governors, pinning and noise each need at least one entry".into());
        }
        for g in &self.governors {
            if g != "current" && !KNOWN_GOVERNORS.contains(&g.as_str()) {
                return bad(format!(
                    "unknown governor {g:?}: use current or one of {}",
                    KNOWN_GOVERNORS.join(", ")
                ));
            }
        }
        if !(1..=100).contains(&self.repeats) {
            return bad(format!("repeats {} must be 1..=100", self.repeats));
        }
        if !(self.measure_s > 0.0 && self.measure_s <= 3600.0) {
            return bad(format!("measure_s {} must be in (0, 3600]", self.measure_s));
        }
        if !(0.0..=600.0).contains(&self.warmup_s) {
            return bad(format!("warmup_s {} must be in [0, 600]", self.warmup_s));
        }
        if let Some(r) = self.rate {
            if !(r > 0.0 && r <= 1e6) {
                return bad(format!("rate {r} must be in (0, 1e6] requests/s"));
            }
        }
        if !(self.load_fraction > 0.0 && self.load_fraction <= 2.0) {
            return bad(format!(
                "load_fraction {} must be in (0, 2]",
                self.load_fraction
            ));
        }
        if self.sweep.iter().any(|f| !(*f > 0.0 && *f <= 4.0)) {
            return bad("sweep fractions must be in (0, 4]".into());
        }
        if !self.sweep.is_empty() && self.sweep_s <= 0.0 {
            return bad("sweep_s must be above zero".into());
        }
        if let Some(s) = self.slo {
            if ![50.0, 90.0, 95.0, 99.0].contains(&s.percentile) || s.e2e_ms <= 0.0 {
                return bad("slo: percentile one of 50, 90, 95, 99 and e2e_ms above zero".into());
            }
        }
        if let Some(f) = self.fleet_load_rps {
            if f <= 0.0 {
                return bad("fleet_load_rps must be above zero".into());
            }
        }
        if !(self.headroom > 0.0 && self.headroom <= 1.0) {
            return bad(format!("headroom {} must be in (0, 1]", self.headroom));
        }
        if !["cpu", "membw", "mixed"].contains(&self.noise_kind.as_str()) {
            return bad(format!(
                "noise_kind {:?}: use cpu, membw or mixed",
                self.noise_kind
            ));
        }
        if self.arrival != "poisson"
            && self.arrival != "constant"
            && !self.arrival.starts_with("gamma:")
        {
            return bad(format!(
                "arrival {:?}: use poisson, constant or gamma:K",
                self.arrival
            ));
        }
        if self.max_total_s <= 0.0 {
            return bad("max_total_s must be above zero".into());
        }
        for (k, v) in [
            ("local_cpus", &self.local_cpus),
            ("remote_cpus", &self.remote_cpus),
        ] {
            if let Some(l) = v {
                crate::cpulist::parse(l)
                    .map_err(|e| PlanError::Invalid(format!("{k} {l:?}: {e}")))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_plans_parse() {
        for p in ["default.toml", "thorough.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../plans")
                .join(p);
            let plan = Plan::load(&path).unwrap_or_else(|e| panic!("{p}: {e}"));
            assert!(plan.repeats >= 2, "{p}: repeats");
        }
    }

    #[test]
    fn bad_plans_are_refused_with_the_reason() {
        let e = Plan::from_toml("governors = [\"turbo\"]", "x.toml").unwrap_err();
        assert!(e.to_string().contains("unknown governor \"turbo\""), "{e}");
        let e = Plan::from_toml("repeat = 3", "x.toml").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let e = Plan::from_toml("pinning = [\"sideways\"]", "x.toml").unwrap_err();
        assert!(e.to_string().contains("sideways"), "{e}");
        let e = Plan::from_toml("local_cpus = \"0-x\"", "x.toml").unwrap_err();
        assert!(e.to_string().contains("local_cpus"), "{e}");
        let e = Plan::from_toml("headroom = 1.5", "x.toml").unwrap_err();
        assert!(e.to_string().contains("headroom"), "{e}");
    }

    #[test]
    fn a_small_plan_takes_defaults_for_the_rest() {
        let p = Plan::from_toml(
            "repeats = 2\npinning = [\"unpinned\", \"local\"]\n[slo]\npercentile = 99.0\ne2e_ms = 20.0\n",
            "x.toml",
        )
        .unwrap();
        assert_eq!(p.repeats, 2);
        assert_eq!(p.pinning, vec![Pinning::Unpinned, Pinning::Local]);
        assert_eq!(p.slo.unwrap().percentile, 99.0);
        assert_eq!(p.noise.len(), 3);
    }
}
