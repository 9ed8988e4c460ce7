//! The pure parts of `tailprobe experiment` (the runner stays in
//! probe-user):
//!
//! - `plan`: the plan (TOML or flags) and its validation.
//! - `matrix`: configurations, which this node can run (and why not), the
//!   alternating cell order.
//! - `results`: the `results.json` model the documents are rendered from.
//! - `analysis`: statistics, rank correlation, tail attribution, capacity.

pub mod analysis;
pub mod matrix;
pub mod plan;
pub mod results;
