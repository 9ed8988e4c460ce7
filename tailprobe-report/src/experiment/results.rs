//! `results.json`: the plan, the node, every cell (run, not applicable,
//! failed or skipped, with the reason) and every derived figure. The
//! documents are rendered from this alone, so they can be re-rendered
//! (`tailprobe experiment --render results.json`) without re-running.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    analysis::{
        attribution::TailSplit,
        capacity::CapacityRow,
        correlate::SignalCorrelation,
        stats::{Delta, Estimate},
    },
    matrix::{Config, NodeFacts, Placed},
    plan::Plan,
};

pub const VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CellStatus {
    Ran,
    /// The node cannot run it (no cpufreq, one NUMA node): `reason` says why.
    NotApplicable,
    Failed,
    /// Not run: the time bound or Ctrl-C came first.
    Skipped,
}

impl CellStatus {
    pub fn words(self) -> &'static str {
        match self {
            CellStatus::Ran => "ran",
            CellStatus::NotApplicable => "not applicable on this node",
            CellStatus::Failed => "failed",
            CellStatus::Skipped => "skipped",
        }
    }
}

/// Latency of one cell (ms): end - intended, measured requests only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub avg: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    /// Requests at or above p95 / p99 (how much the percentile rests on).
    pub p95_samples: u64,
    pub p99_samples: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Counter {
    pub event: String,
    pub value: Option<u64>,
    pub note: Option<String>,
}

/// Everything measured in one cell.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CellMetrics {
    pub offered_rps: f64,
    pub throughput_rps: f64,
    pub ok: u64,
    pub errors: u64,
    pub timeouts: u64,
    /// end - intended (corrected for coordinated omission).
    pub latency_ms: Latency,
    /// end - send, p95.
    pub uncorrected_p95_ms: f64,
    pub ttft_p95_ms: Option<f64>,
    /// Server threads, whole recording.
    pub runq_wait_ms: f64,
    pub runq_p99_us: f64,
    pub runq_max_ms: f64,
    pub involuntary_switches: u64,
    pub migrations: u64,
    pub migrations_cross_llc: u64,
    pub migrations_cross_numa: u64,
    /// Hard IRQ + softirq time that ran on the server's threads.
    pub irq_stolen_ms: f64,
    pub page_faults: u64,
    /// NUMA balancing moves + swaps of the server's threads.
    pub numa_task_moves: u64,
    pub numa_kib_per_node: BTreeMap<u32, u64>,
    /// Share of the server's memory on nodes that hold none of its CPUs.
    pub remote_share: Option<f64>,
    pub counters: Vec<Counter>,
    pub ipc: Option<f64>,
    /// Interrupts on the server's CPUs during the load (all sources).
    pub interrupts_on_server_cpus: u64,
    pub interrupts_total: u64,
    pub probe_cpu_pct: Option<f64>,
    pub lossy: bool,
    pub events_not_kept: u64,
    /// (fraction, ms) points of the latency CDF.
    pub cdf: Vec<(f64, f64)>,
    /// (run-queue wait ms on the serving thread, server time ms), sampled.
    pub scatter: Vec<(f64, f64)>,
    pub tail: Option<TailSplit>,
    /// Answers that came back cut short or empty (not successes, not in the
    /// latency figures).
    #[serde(default)]
    pub incomplete: u64,
    /// Output tokens per complete answer and tokens per second; None when
    /// the answers carry no token count (plain HTTP) or none completed.
    #[serde(default)]
    pub tokens: Option<TokenStats>,
    /// The server's lost CPU time by who took it, and whether anything
    /// outside the experiment disturbed the cell.
    #[serde(default)]
    pub interference: Option<Interference>,
    /// The slow-vs-typical gap of this cell in milliseconds.
    #[serde(default)]
    pub gap: Option<GapAttribution>,
    /// The latency (ms) of every measured request, for the request-level
    /// bootstrap; not written to results.json (the CDF is).
    #[serde(skip)]
    pub samples_ms: Vec<f64>,
}

/// Output tokens of the complete answers of one cell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenStats {
    /// `max_tokens` asked for.
    pub requested: u32,
    /// Answers the figures rest on.
    pub answers: u64,
    pub per_request_avg: f64,
    pub per_request_min: u64,
    pub per_request_p50: f64,
    pub per_request_max: u64,
    /// Output tokens of complete answers per second of measured load.
    pub tokens_per_s: f64,
}

/// Who took CPU time from the server's threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TakerKind {
    /// Another thread of the server itself.
    Own,
    /// The neighbour the plan started in this cell.
    Neighbour,
    /// The load generator and recorder (tailprobe itself).
    LoadGenerator,
    /// Kernel threads (kworker, ksoftirqd, migration, rcu...).
    Kernel,
    /// Anything else: not part of the experiment.
    Other,
}

impl TakerKind {
    pub fn words(self) -> &'static str {
        match self {
            TakerKind::Own => "the server's own threads",
            TakerKind::Neighbour => "the planned neighbour",
            TakerKind::LoadGenerator => "the load generator (tailprobe)",
            TakerKind::Kernel => "kernel threads",
            TakerKind::Other => "other processes",
        }
    }
}

/// One task that preempted the server's threads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Taker {
    pub kind: TakerKind,
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    /// Times it preempted a server thread.
    pub count: u64,
    /// Run-queue wait of the preempted server threads until they ran again.
    pub ms: f64,
}

/// Lost CPU time of the server's threads in one cell, by who took it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interference {
    /// The server threads' whole run-queue wait, ms.
    pub runq_wait_ms: f64,
    /// Wait that followed a preemption, per kind of preemptor (ms); kinds
    /// with nothing are left out.
    pub by_kind: Vec<(TakerKind, f64)>,
    /// Wait after a wake-up (no task preempted the server): the CPU was
    /// busy, the probes do not see with what.
    pub after_wakeup_ms: f64,
    /// The preemptors the probes kept (the 20 with the longest wait).
    pub takers: Vec<Taker>,
    /// Foreign time above this marks the cell disturbed (ms), and how it
    /// was set ("5% of the run-queue wait, at least 10 ms").
    pub threshold_ms: f64,
    pub threshold_rule: String,
    pub disturbed: Option<Disturbance>,
}

/// What disturbed a cell: the foreign tasks above the threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disturbance {
    /// Foreign tasks, longest first.
    pub by: Vec<Taker>,
    /// Their wait, ms.
    pub total_ms: f64,
    /// "disturbed by 4242 stress-ng (312 ms), 77 rustc (40 ms)".
    pub text: String,
}

/// Why a cell is kept out of the conclusions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exclusion {
    pub reason: String,
    /// The `order` of the cell that re-ran it, if the budget allowed one.
    pub rerun_by: Option<usize>,
}

/// What putting the node back after a cell did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreReport {
    /// Every journaled change was put back.
    pub complete: bool,
    /// What could not be put back, each with the reason.
    pub failures: Vec<String>,
}

/// Components of the slow-vs-typical gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GapComponent {
    RunqWait,
    IrqTime,
    ServerQueue,
    PageFaults,
    Migrations,
    Service,
}

impl GapComponent {
    pub fn words(self) -> &'static str {
        match self {
            GapComponent::RunqWait => "run-queue wait",
            GapComponent::IrqTime => "IRQ time",
            GapComponent::ServerQueue => "server queueing",
            GapComponent::PageFaults => "page faults",
            GapComponent::Migrations => "migrations",
            GapComponent::Service => "service",
        }
    }
}

/// One component's part of the gap.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GapPart {
    pub component: GapComponent,
    /// Mean per slow request, and per typical request (ms; for page faults
    /// and migrations: counts per request, with `ms` None).
    pub slow: f64,
    pub typical: f64,
    /// Milliseconds of the gap it explains (None for counts: the probes
    /// do not time a fault or a migration).
    pub gap_ms: Option<f64>,
    /// gap_ms / gap, in %.
    pub share_pct: Option<f64>,
    /// Named in the documents: the share is at least `min_share_pct`.
    pub named: bool,
}

/// How the gap between slow requests (above pXX) and typical ones (at or
/// below p50) splits, in ms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GapAttribution {
    /// "exact (serving thread)" or "time window (process-wide)".
    pub method: String,
    pub exact: bool,
    /// The percentile that makes a request slow.
    pub percentile: f64,
    pub threshold_ms: f64,
    pub slow_requests: usize,
    pub typical_requests: usize,
    pub slow_ms: f64,
    pub typical_ms: f64,
    pub gap_ms: f64,
    pub parts: Vec<GapPart>,
    /// A component below this share of the gap is not named (%).
    pub min_share_pct: f64,
}

/// Three outcomes kept apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The interval excludes "no change".
    Significant,
    /// Enough data, and the interval includes "no change".
    WithinNoise,
    /// Too few repeats or requests to tell.
    TooLittleData,
}

/// Which way a configuration moved a metric against the baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Higher,
    Lower,
    Same,
}

/// An estimate with its interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub estimate: f64,
    pub lo: f64,
    pub hi: f64,
    /// 0.95.
    pub level: f64,
}

/// A configuration against the baseline on one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Effect {
    /// `p50_ms`, `p95_ms`, `p99_ms`, `throughput_rps`.
    pub metric: String,
    pub baseline: f64,
    pub value: f64,
    /// value / baseline with its interval.
    pub ratio: Interval,
    pub method: String,
    pub outcome: Outcome,
    pub direction: Direction,
    /// Repeats and requests behind each side.
    pub repeats: (usize, usize),
    pub requests: (u64, u64),
    /// What would settle it (TooLittleData / WithinNoise), e.g. "3 or more
    /// repeats per configuration".
    pub settle: Option<String>,
}

/// Per-configuration percentiles pooled over repeats, with intervals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub method: String,
    pub repeats: usize,
    pub requests: u64,
    pub p50_ms: Option<Interval>,
    pub p95_ms: Option<Interval>,
    pub p99_ms: Option<Interval>,
}

/// One run of one configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    pub order: usize,
    pub repeat: u32,
    pub config: Config,
    pub label: String,
    pub status: CellStatus,
    pub reason: Option<String>,
    pub placement: Option<Placed>,
    pub noise_cpus: Option<Vec<u32>>,
    pub notes: Vec<String>,
    pub metrics: Option<CellMetrics>,
    /// Raw snapshots (numastat -p style, perf stat style, /proc/interrupts
    /// deltas), relative to the results directory.
    pub raw: Vec<String>,
    pub seconds: f64,
    /// Kept out of the conclusions (disturbed, ...), with the reason.
    #[serde(default)]
    pub excluded: Option<Exclusion>,
    /// This cell re-runs the cell with this `order`.
    #[serde(default)]
    pub rerun_of: Option<usize>,
    /// None: nothing was journaled or the results predate the field.
    #[serde(default)]
    pub restore: Option<RestoreReport>,
}

impl CellResult {
    /// Ran, measured and not excluded: what the conclusions rest on.
    pub fn counts(&self) -> bool {
        self.status == CellStatus::Ran && self.metrics.is_some() && self.excluded.is_none()
    }
}

/// One configuration over its repeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigSummary {
    pub config: Config,
    pub label: String,
    pub status: CellStatus,
    pub reason: Option<String>,
    pub repeats: usize,
    pub p50_ms: Option<Estimate>,
    pub p95_ms: Option<Estimate>,
    pub p99_ms: Option<Estimate>,
    pub avg_ms: Option<Estimate>,
    pub throughput_rps: Option<Estimate>,
    pub runq_wait_ms: Option<Estimate>,
    pub involuntary_switches: Option<Estimate>,
    pub migrations: Option<Estimate>,
    pub irq_stolen_ms: Option<Estimate>,
    pub page_faults: Option<Estimate>,
    pub remote_share: Option<Estimate>,
    /// Against the baseline configuration (governor as found, unpinned, no
    /// noise), with a 95% Welch interval over repeats.
    pub delta_p95: Option<Delta>,
    pub delta_p99: Option<Delta>,
    pub delta_throughput: Option<Delta>,
    pub delta_runq: Option<Delta>,
    /// Percentiles pooled over the repeats that count, with intervals.
    #[serde(default)]
    pub percentiles: Option<Percentiles>,
    /// Against the baseline, one per metric (empty for the baseline).
    #[serde(default)]
    pub effects: Vec<Effect>,
    /// Cells of this configuration kept out of the conclusions.
    #[serde(default)]
    pub excluded: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRow {
    pub id: u32,
    pub cpus: String,
    pub mem_total_kib: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub hostname: String,
    pub kernel: String,
    pub cpus_online: String,
    pub nodes: Vec<NodeRow>,
    /// "acpi-cpufreq, governor schedutil" or the reason there is none.
    pub cpufreq: String,
    pub accelerators: usize,
    pub device_local: String,
    pub nics: Vec<String>,
    pub numa_balancing: Option<u32>,
    pub thp: Option<String>,
    pub irqbalance: bool,
    pub isolated: String,
    pub topology_markdown: String,
    pub facts: NodeFacts,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetInfo {
    /// `built-in server`, `running server` or `server command`.
    pub kind: String,
    pub description: String,
    /// The exact per-request method needs the server's own request log.
    pub exact_attribution: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Closed-loop throughput of the baseline configuration.
    pub closed_loop_rps: Option<f64>,
    /// The rate every cell is offered.
    pub offered_rps: f64,
    pub how: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorrelationResult {
    pub method: String,
    pub cells: usize,
    pub pooled: Vec<SignalCorrelation>,
    pub baseline: Vec<SignalCorrelation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributionResult {
    pub method: String,
    pub per_config: Vec<(String, TailSplit)>,
    /// The slow-vs-typical gap in ms per configuration.
    #[serde(default)]
    pub gaps: Vec<(String, GapAttribution)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityResult {
    pub slo_percentile: f64,
    pub slo_ms: f64,
    pub fleet_load_rps: Option<f64>,
    pub headroom: f64,
    pub rows: Vec<CapacityRow>,
    pub notes: Vec<String>,
    /// The search stops when the bracket is this narrow (%, +-).
    #[serde(default)]
    pub resolution_pct: Option<f64>,
    /// How the search went ("coarse ramp, then bisection").
    #[serde(default)]
    pub method: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DropIn {
    pub path: String,
    pub config: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub version: u32,
    pub tool_version: String,
    pub started_unix: u64,
    pub elapsed_s: f64,
    pub interrupted: bool,
    pub plan: Plan,
    pub node: NodeInfo,
    pub target: TargetInfo,
    pub calibration: Option<Calibration>,
    pub cells: Vec<CellResult>,
    pub configs: Vec<ConfigSummary>,
    pub correlation: Option<CorrelationResult>,
    pub attribution: Option<AttributionResult>,
    pub capacity: Option<CapacityResult>,
    pub dropin: Option<DropIn>,
    /// Plots (SVG), relative to the results directory.
    pub plots: Vec<String>,
    pub notes: Vec<String>,
    /// Some cell could not put the node back completely.
    #[serde(default)]
    pub restore_failed: bool,
}

impl Results {
    pub fn baseline(&self) -> Option<&ConfigSummary> {
        self.configs
            .iter()
            .find(|c| c.config.is_baseline() && c.status == CellStatus::Ran)
    }

    pub fn ran(&self) -> impl Iterator<Item = &ConfigSummary> {
        self.configs.iter().filter(|c| c.status == CellStatus::Ran)
    }

    /// Cells kept out of the conclusions.
    pub fn excluded(&self) -> impl Iterator<Item = &CellResult> {
        self.cells.iter().filter(|c| c.excluded.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_written_before_the_new_fields_still_load() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/report_docs/testdata/recorded.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let r: Results = serde_json::from_str(&text).unwrap();
        assert!(!r.cells.is_empty());
        assert!(r
            .cells
            .iter()
            .all(|c| c.excluded.is_none() && c.restore.is_none()));
        assert!(r.configs.iter().all(|c| c.effects.is_empty()));
        assert!(!r.restore_failed);
        // And a round trip keeps the new fields.
        let mut r2 = r.clone();
        r2.cells[0].excluded = Some(Exclusion {
            reason: "disturbed by 42 stress (300 ms)".into(),
            rerun_by: Some(9),
        });
        let back: Results = serde_json::from_str(&serde_json::to_string(&r2).unwrap()).unwrap();
        assert_eq!(back.cells[0].excluded, r2.cells[0].excluded);
    }
}
