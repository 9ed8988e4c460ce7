//! `tailprobe experiment`: a matrix of node configurations (governor x
//! pinning x noise x repeats) run against an inference server, with the
//! kernel's view of every cell, and the analysis that says what explains
//! the tail and what it costs in replicas.
//!
//! - `plan`: the plan (TOML or flags) and its validation.
//! - `matrix`: configurations, which this node can run (and why not), the
//!   alternating cell order. Pure.
//! - `runner`: the cells on the real node (journaled changes, server
//!   launch, probes, load, noise, snapshots) and the capacity sweep.
//! - `raw`: numastat / perf stat / interrupts style snapshots. Pure.
//! - `summarise`: per-configuration estimates over repeats and deltas. Pure.
//! - `analysis`: statistics, rank correlation, tail attribution, capacity.
//!   Pure.
//! - `results`: the `results.json` model the documents are rendered from.

pub mod metrics;
pub mod raw;
pub mod runner;
pub mod schedule;
pub mod summarise;

// The pure model and analysis live in `tailprobe-report` (stable Rust).
pub use tailprobe_report::experiment::{analysis, matrix, plan, results};
