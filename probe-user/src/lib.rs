//! tailprobe: explains the tail latency of an inference server with eBPF.
//!
//! Layout, one concern per module:
//! - `kernel`: the embedded eBPF object, BTF offsets, loading and attaching.
//! - `procfs`, `sysfs`, `cpulist`: readers of `/proc` and `/sys`, each taking
//!   a root path so tests can point them at fixture trees, and CPU lists
//!   (re-exported from the `tailprobe-system` crate).
//! - `stats`: pure statistics (crate `tailprobe-report`).
//! - `record`: a recording session (attach, wait, collect).
//! - `report`: the report model (JSON) and its human rendering (crate
//!   `tailprobe-report`).
//! - `workload`: the built-in CPU workload used when no target is given.
//! - `load`: the load generator (`tailprobe load`; crate `tailprobe-load`).
//! - `serve`: the built-in OpenAI-compatible inference server (crate
//!   `tailprobe-serve`).
//! - `node`: node control, every change journaled (crate `tailprobe-node`);
//!   `signals`: the Ctrl-C/SIGTERM stop flag (`tailprobe-system`).
//! - `experiment`: the configuration matrix, its runner and the analysis.
//! - `report_docs`: the Markdown documents, plots and systemd drop-in
//!   rendered from an experiment's results (crate `tailprobe-report`).
//! - `exporter`: `tailprobe exporter`, the always-on Prometheus exporter.
//! - `cli`: argument parsing and one file per subcommand.

pub mod cli;
pub mod diagnose;
pub mod experiment;
pub mod exporter;
pub mod kernel;
pub mod out;
pub mod privileges;
pub mod record;
pub mod timeline;
pub mod workload;

// Moved into their own crates (issue 11); the old paths stay so callers
// compile unchanged.
pub use tailprobe_load as load;
pub use tailprobe_node as node;
pub use tailprobe_report::{report, report_docs, stats};
pub use tailprobe_serve as serve;
pub use tailprobe_system::{cpulist, procfs, signals, sysfs};
