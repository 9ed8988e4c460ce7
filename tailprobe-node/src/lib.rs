//! The node tailprobe runs on: what it is made of, and the knobs it turns.
//! No eBPF here: this crate builds on stable Rust and depends only on
//! `tailprobe-system` (probe-user re-exports it as `tailprobe::node`).
//!
//! One module per concern:
//! - `inventory`: NUMA nodes, SMT siblings, LLC groups, PCI accelerators and
//!   NICs with their locality, cpufreq, isolation, THP, NUMA balancing
//!   (`tailprobe topo`).
//! - `governor`: cpufreq policies, read and set (`tailprobe governor`).
//! - `pin`: where a target may run and allocate (`tailprobe pin`).
//! - `noise`: built-in noisy neighbours and their placement (`tailprobe noise`).
//! - `irq`: `/proc/interrupts` deltas and IRQ affinity (`tailprobe irq`).
//! - `counters`: perf_event_open counters of a process (`tailprobe counters`).
//! - `numa`: pages per node, numastat and vmstat deltas (`tailprobe numa`).
//! - `fsx`: small file helpers: trimmed reads, knob writes, atomic replacement.
//! - `child`: processes we start, each in its own process group that dies
//!   with us (SIGKILL included).
//! - `journal`: every change is journaled before it is made and restored
//!   afterwards, also after a crash (`tailprobe restore`).
//!
//! Everything that reads `/sys` or `/proc` takes a [`Roots`], so tests point
//! it at fixture trees captured from real machines.

pub use tailprobe_system::affinity;
pub mod child;
pub mod counters;
pub mod fsx;
pub mod governor;
pub mod inventory;
pub mod irq;
pub mod journal;
pub mod noise;
pub mod numa;
pub mod pin;

use std::path::PathBuf;

/// Exit codes of the node commands, beside `cli::exit` (documented in
/// docs/node.md).
pub mod exit {
    /// The feature does not exist on this node (no cpufreq, no hardware
    /// counters, a single NUMA node): said plainly, nothing was changed.
    pub const NOT_AVAILABLE: i32 = 4;
    /// A journal from another boot was found: reported, not applied.
    pub const STALE_JOURNAL: i32 = 5;
    /// Some journaled knobs could not be put back; the journal is kept.
    pub const RESTORE_INCOMPLETE: i32 = 6;
}

/// Where `/sys` and `/proc` are (fixture trees in tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    pub sys: PathBuf,
    pub proc: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            sys: PathBuf::from("/sys"),
            proc: PathBuf::from("/proc"),
        }
    }
}

impl Roots {
    pub fn new(sys: impl Into<PathBuf>, proc: impl Into<PathBuf>) -> Self {
        Roots {
            sys: sys.into(),
            proc: proc.into(),
        }
    }
}

/// Something the node does not have, said plainly.
#[derive(Debug, thiserror::Error)]
#[error("not available on this node: {0}")]
pub struct NotAvailable(pub String);
