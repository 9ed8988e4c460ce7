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
    /// Capacity search: stop bisecting when the bracket is within this
    /// share either side of its middle (0.05: +-5%).
    pub capacity_resolution: f64,
    /// Peak load of the whole fleet, requests/s (for N vs N+1; absent: no
    /// fleet figures, only per-server capacity and ratios).
    pub fleet_load_rps: Option<f64>,
    /// Share of a replica's capacity you plan to use (0.8: 20% headroom).
    pub headroom: f64,
    /// Hard bound on the whole run, seconds: cells that would end later are
    /// recorded as skipped.
    pub max_total_s: f64,
    pub on_failure: OnFailure,
    /// Adaptive repeats: keep adding rounds (alternating order) until every
    /// configuration's p95 interval is within this share either side of
    /// its estimate (0.1: +-10%), `max_repeats` or the time bound.
    pub target_interval: Option<f64>,
    pub max_repeats: u32,
    /// Foreign run-queue wait above max(interference_share x the server's
    /// run-queue wait, interference_min_ms) marks a cell disturbed.
    pub interference_share: f64,
    pub interference_min_ms: f64,
    /// Re-run a disturbed cell once when the time bound allows (it is kept
    /// out of the conclusions either way).
    pub rerun_disturbed: bool,
    /// The request every cell sends (calibration too).
    pub request: RequestPlan,
    /// Perfetto trace of each cell (`cells/<cell>/trace.pftrace`), capped
    /// at this many MB (events past the cap are left out and counted); 0:
    /// no trace.
    pub trace_mb: u64,
}

/// What the load generator asks the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RequestPlan {
    /// `completions`, `chat`, `embeddings` or `plain`; absent: from the
    /// URL's path (the built-in server: completions).
    pub api: Option<String>,
    /// Model name; absent: the first id of `GET /v1/models`.
    pub model: Option<String>,
    /// A body template file (`{{id}}`: request number) instead of the
    /// generated OpenAI body.
    pub body_file: Option<String>,
    /// The same, inline.
    pub data: Option<String>,
    /// Extra headers, "Name: value".
    pub headers: Vec<String>,
    pub stream: bool,
    /// Send `ignore_eos` / `min_tokens` so answers are max_tokens long.
    pub ignore_eos: bool,
}

impl Default for RequestPlan {
    fn default() -> Self {
        RequestPlan {
            api: None,
            model: None,
            body_file: None,
            data: None,
            headers: Vec::new(),
            stream: true,
            ignore_eos: true,
        }
    }
}

/// API names a plan may give.
pub const APIS: [&str; 4] = ["completions", "chat", "embeddings", "plain"];

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
            capacity_resolution: 0.05,
            fleet_load_rps: None,
            headroom: 0.8,
            max_total_s: 240.0,
            on_failure: OnFailure::Continue,
            target_interval: None,
            max_repeats: 10,
            interference_share: 0.05,
            interference_min_ms: 10.0,
            rerun_disturbed: true,
            request: RequestPlan::default(),
            trace_mb: 2,
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

impl RequestPlan {
    fn validate(&self) -> Result<(), PlanError> {
        let bad = |m: String| Err(PlanError::Invalid(m));
        if let Some(a) = &self.api {
            if !APIS.contains(&a.as_str()) {
                return bad(format!("request.api {a:?}: use {}", APIS.join(", ")));
            }
        }
        if self.model.as_deref().is_some_and(|m| m.trim().is_empty()) {
            return bad(
                "request.model is empty: give a name or leave it out to discover it".into(),
            );
        }
        if self.body_file.is_some() && self.data.is_some() {
            return bad("request: give body_file or data, not both".into());
        }
        for h in &self.headers {
            crate::load::target::parse_header(h)
                .map_err(|e| PlanError::Invalid(format!("request.headers {h:?}: {e}")))?;
        }
        Ok(())
    }
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

    /// Adaptive repeats, interference, capacity resolution, request and
    /// server shapes.
    fn validate_repeats_and_shapes(&self) -> Result<(), PlanError> {
        let bad = |m: String| Err(PlanError::Invalid(m));
        if !(self.repeats..=100).contains(&self.max_repeats) {
            return bad(format!(
                "max_repeats {} must be in repeats..=100 ({}..=100)",
                self.max_repeats, self.repeats
            ));
        }
        if let Some(t) = self.target_interval {
            if !(t > 0.0 && t <= 1.0) {
                return bad(format!(
                    "target_interval {t} must be in (0, 1] (0.1: +-10% of the p95)"
                ));
            }
        }
        if !(self.interference_share >= 0.0 && self.interference_share <= 1.0) {
            return bad(format!(
                "interference_share {} must be in [0, 1]",
                self.interference_share
            ));
        }
        if !(self.interference_min_ms >= 0.0 && self.interference_min_ms.is_finite()) {
            return bad(format!(
                "interference_min_ms {} must be 0 or more",
                self.interference_min_ms
            ));
        }
        if !(self.capacity_resolution >= 0.005 && self.capacity_resolution <= 0.5) {
            return bad(format!(
                "capacity_resolution {} must be in [0.005, 0.5] (0.05: +-5%)",
                self.capacity_resolution
            ));
        }
        if self.prompt_tokens == 0 || self.max_tokens == 0 {
            return bad(format!(
                "prompt_tokens ({}) and max_tokens ({}) must be at least 1",
                self.prompt_tokens, self.max_tokens
            ));
        }
        if self.server.hidden == 0 || self.server.layers == 0 || self.server.workers == Some(0) {
            return bad(format!(
                "server: hidden ({}), layers ({}) and workers ({:?}) must be at least 1",
                self.server.hidden, self.server.layers, self.server.workers
            ));
        }
        if self.server.hidden > 16_384 || self.server.layers > 256 {
            return bad(format!(
                "server: hidden {} (at most 16384) and layers {} (at most 256)",
                self.server.hidden, self.server.layers
            ));
        }
        if self.trace_mb > 1024 {
            return bad(format!(
                "trace_mb {} must be at most 1024 (0: no trace per cell)",
                self.trace_mb
            ));
        }
        if self.noise_threads == Some(0) {
            return bad(
                "noise_threads must be at least 1 (leave it out for one per noise CPU)".into(),
            );
        }
        self.request.validate()?;
        Ok(())
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
        self.validate_repeats_and_shapes()?;
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
            let known = [50.0, 90.0, 95.0, 99.0].contains(&s.percentile);
            if !(known && s.e2e_ms > 0.0 && s.e2e_ms.is_finite()) {
                return bad("slo: percentile one of 50, 90, 95, 99 and e2e_ms above zero".into());
            }
        }
        if let Some(f) = self.fleet_load_rps {
            if !(f > 0.0 && f.is_finite()) {
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
        if let Err(e) = self.arrival.parse::<crate::load::schedule::Arrival>() {
            return bad(format!(
                "arrival {:?}: {e} (use poisson, constant or gamma:K with K above 0)",
                self.arrival
            ));
        }
        if !(self.max_total_s > 0.0 && self.max_total_s.is_finite()) {
            return bad("max_total_s must be above zero".into());
        }
        if self.sweep_s.is_nan() || self.sweep_s > 600.0 {
            return bad(format!("sweep_s {} must be at most 600", self.sweep_s));
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
    fn every_value_is_checked_before_anything_runs() {
        for (text, word) in [
            ("arrival = \"gamma:-1\"", "arrival"),
            ("arrival = \"gamma:0\"", "arrival"),
            ("arrival = \"bursty\"", "arrival"),
            ("[server]\nhidden = 0", "hidden"),
            ("[server]\nlayers = 0", "layers"),
            ("[server]\nworkers = 0", "workers"),
            ("prompt_tokens = 0", "prompt_tokens"),
            ("max_tokens = 0", "max_tokens"),
            ("noise_threads = 0", "noise_threads"),
            ("measure_s = nan", "measure_s"),
            ("max_total_s = inf", "max_total_s"),
            ("fleet_load_rps = nan", "fleet_load_rps"),
            ("[slo]\npercentile = 95.0\ne2e_ms = nan", "slo"),
            ("target_interval = 0.0", "target_interval"),
            ("repeats = 5\nmax_repeats = 3", "max_repeats"),
            ("capacity_resolution = 0.9", "capacity_resolution"),
            ("interference_share = 2.0", "interference_share"),
            ("[request]\napi = \"grpc\"", "request.api"),
            ("[request]\nmodel = \"\"", "request.model"),
            ("[request]\nheaders = [\"no colon\"]", "request.headers"),
            ("[request]\nbody_file = \"a\"\ndata = \"b\"", "not both"),
        ] {
            let e = Plan::from_toml(text, "x.toml").unwrap_err().to_string();
            assert!(e.contains(word), "{text}: {e}");
        }
    }

    #[test]
    fn no_invented_fleet_load() {
        assert_eq!(Plan::default().fleet_load_rps, None);
        let p = Plan::from_toml("fleet_load_rps = 300.0", "x.toml").unwrap();
        assert_eq!(p.fleet_load_rps, Some(300.0));
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
