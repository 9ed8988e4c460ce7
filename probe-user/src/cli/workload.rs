//! `tailprobe workload`: the built-in CPU workload, on its own.

use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;

use crate::workload::{run, WorkloadOptions};

/// Run the built-in CPU workload (matrix-vector bursts with short sleeps).
///
/// It is what `tailprobe record` profiles when no --pid is given; run it by
/// hand to have a known process to point other tools at.
#[derive(Debug, Args)]
pub struct WorkloadArgs {
    /// Worker threads [default: twice the online CPUs, so they queue].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
    /// How long to run.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    pub duration: Duration,
    /// Busy burst per step.
    #[arg(long, default_value = "4ms", value_parser = super::parse_duration)]
    pub busy: Duration,
    /// Sleep between bursts.
    #[arg(long, default_value = "1ms", value_parser = super::parse_duration)]
    pub sleep: Duration,
    /// Side of the weight matrix.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(8..=8192))]
    pub hidden: u32,
}

pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        * 2
}

impl WorkloadArgs {
    pub fn options(&self) -> WorkloadOptions {
        WorkloadOptions {
            threads: self
                .threads
                .map(usize::from)
                .unwrap_or_else(default_threads),
            duration: self.duration,
            busy: self.busy,
            sleep: self.sleep,
            hidden: self.hidden as usize,
        }
    }
}

pub fn main(args: &WorkloadArgs) -> Result<i32> {
    let steps = run(&args.options()).context("running the built-in workload")?;
    eprintln!("workload done: {steps} steps");
    Ok(super::exit::OK)
}
