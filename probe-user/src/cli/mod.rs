//! Command-line interface: one file per subcommand; `main.rs` dispatches.

pub mod counters;
pub mod diagnose;
pub mod exec_gated;
pub mod experiment;
pub mod exporter;
pub mod governor;
pub mod irq;
pub mod load;
pub mod node_common;
pub mod noise;
pub mod numa;
pub mod pin;
pub mod record;
pub mod restore;
pub mod serve;
pub mod target_args;
pub mod topo;
pub mod version;
pub mod workload;

use clap::{Parser, Subcommand};

/// Exit codes, documented in `tailprobe --help` and the README.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Error: the message on stderr says what and what to do.
    pub const ERROR: i32 = 1;
    /// Bad command line (clap's own code).
    pub const USAGE: i32 = 2;
    /// The target exited during the run; the report shows what was seen.
    pub const TARGET_EXITED: i32 = 3;
}

/// tailprobe: explains the tail latency of an inference server with eBPF.
///
/// Exit codes: 0 success, 1 error, 2 bad usage, 3 the target exited during
/// the run (the report of what was seen is still printed).
#[derive(Debug, Parser)]
#[command(name = "tailprobe", version = version::TEXT, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Record(record::RecordArgs),
    Diagnose(diagnose::DiagnoseArgs),
    #[command(hide = true)]
    ExecGated(exec_gated::ExecGatedArgs),
    Workload(workload::WorkloadArgs),
    Load(load::LoadArgs),
    Serve(serve::ServeArgs),
    Topo(topo::TopoArgs),
    Governor(governor::GovernorArgs),
    Pin(pin::PinArgs),
    Noise(noise::NoiseArgs),
    Irq(irq::IrqArgs),
    Counters(counters::CountersArgs),
    Numa(numa::NumaArgs),
    Restore(restore::RestoreArgs),
    Experiment(Box<experiment::ExperimentArgs>),
    Exporter(exporter::ExporterArgs),
}

/// The longest duration any argument accepts: 7 days. Longer values are
/// refused by clap before anything starts (a deadline that far out could
/// overflow the monotonic clock's arithmetic).
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Parse "10s", "500ms", "2m", "1h 30m" (humantime syntax), above zero and
/// at most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e} (examples: 10s, 500ms, 2m)"))?;
    if d.is_zero() {
        return Err("duration must be above zero".into());
    }
    if d > MAX_DURATION {
        return Err(format!(
            "{s:?} is longer than the maximum of 7 days (7d); give a shorter duration"
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap().as_secs(), 10);
        assert_eq!(parse_duration("250ms").unwrap().as_millis(), 250);
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert_eq!(parse_duration("7d").unwrap(), MAX_DURATION);
        let e = parse_duration("7d 1s").unwrap_err();
        assert!(e.contains("maximum of 7 days"), "{e}");
        // humantime's own overflow is an error too, not a panic.
        assert!(parse_duration("300000000000y").is_err());
        assert!(parse_duration("18446744073709551615s").is_err());
    }
}
