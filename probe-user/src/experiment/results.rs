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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityResult {
    pub slo_percentile: f64,
    pub slo_ms: f64,
    pub fleet_load_rps: Option<f64>,
    pub headroom: f64,
    pub rows: Vec<CapacityRow>,
    pub notes: Vec<String>,
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
}
