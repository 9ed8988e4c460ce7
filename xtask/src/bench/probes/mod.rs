//! The probe benchmark: what our eBPF programs cost, measured on this
//! machine in one run.
//!
//! 1. Per-event cost of our `sched_switch` and `sched_wakeup` programs beside
//!    libbpf-tools' `runqlat`, both attached during the same runs of the
//!    same loads, from the kernel's BPF run-time statistics (`run_cnt`,
//!    `run_time_ns`). Ours come from
//!    `tailprobe record --json` (it turns the statistics on for itself with
//!    `BPF_ENABLE_STATS`); runqlat's are read from its program fds'
//!    `/proc/PID/fdinfo` while `kernel.bpf_stats_enabled` is on, and that
//!    sysctl is put back on every way out (error, Ctrl-C, SIGTERM; a value
//!    left behind by a killed run is restored at the next start).
//! 2. The exporter (scheduler programs in their per-target mode) beside
//!    runqlat in the same runs, and its CPU share.
//! 3. Slowdown of a CPU-bound multi-threaded workload (stress-ng matrixprod
//!    bogo-ops/s) with every probe attached vs none, A/B alternated.
//! 4. Events per second sustained under heavy scheduler load, and whether
//!    anything was lost.
//!
//! Every command runs under a time limit; Ctrl-C stops the section cleanly.
//!
//! Modules: `runner` (child processes, the sysctl, signals, tools),
//! `runqlat` (the reference tool's counters), `measure` (the runs and what
//! is read back from them), `exporter` (the exporter beside runqlat,
//! and its own cost at a measured switch rate), `report` and
//! `exporter_report` (the Markdown); the spread statistics
//! are the bench's shared ones (`super::stats`).

mod exporter;
mod exporter_report;
mod measure;
mod report;
mod runner;
mod runqlat;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::Value;

use super::stats::{mean, min_max, stdev};
use crate::cmd;
use exporter::*;
use exporter_report::*;
use measure::*;
use report::*;
pub(super) use runner::ensure_tools;
use runner::*;
use runqlat::*;

pub fn run(quick: bool) -> Result<String> {
    if !is_root() {
        bail!(
            "the probes benchmark needs root: it loads eBPF programs (tailprobe, runqlat) and \
             switches kernel.bpf_stats_enabled; run `cargo xtask bench --only probes` as root"
        );
    }
    install_signal_handlers();
    restore_stale_stats_sysctl()?;
    ensure_tools()?;
    crate::setup::run(false)?;
    cmd::cargo(&["build", "--release", "-p", "probe-user"])?;
    let bin = cmd::workspace_root().join("target/release/tailprobe");
    let result = section(&bin, quick);
    scratch_cleanup();
    result
}
