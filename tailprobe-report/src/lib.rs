//! What tailprobe reports, and the documents rendered from it. Pure: no
//! eBPF, no kernel access, so it builds and tests on stable Rust
//! (`cargo test -p tailprobe-report`). probe-user re-exports every module
//! under its old path (`tailprobe::report`, `report_docs`, `stats`,
//! `experiment::{plan, matrix, results, analysis}`).
//!
//! - `report`: a recording's report model (JSON) and its human rendering.
//! - `stats`: run-queue histograms and their summaries.
//! - `experiment`: an experiment's plan, its configuration matrix, the
//!   `results.json` model and the analysis over it (statistics, rank
//!   correlation, tail attribution, capacity).
//! - `report_docs`: the Markdown documents, plots and systemd drop-in
//!   rendered from an experiment's results.
//! - `kernel`: the plain types of the kernel side that a report carries.

pub mod experiment;
pub mod kernel;
pub mod report;
pub mod report_docs;
pub mod stats;

// The crates the moved modules name by their probe-user paths.
pub use tailprobe_load as load;
pub use tailprobe_node as node;
pub use tailprobe_system::{cpulist, procfs};
