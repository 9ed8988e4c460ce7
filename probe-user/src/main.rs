//! The `tailprobe` binary: parse arguments and dispatch.

use clap::Parser;
use tailprobe::{
    cli::{exit, Cli, Command},
    kernel::startup,
};

fn main() {
    // `record` runs at SCHED_FIFO 1 from here until its programs are
    // attached (kernel/startup.rs); decided from the raw arguments so that
    // not even argument parsing waits for a CPU on a saturated machine.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    startup::boost_at_start(startup::plan(&args));
    tailprobe::record::mark_process_start();
    let cli = Cli::parse_from(args);
    let result = match &cli.command {
        Command::Record(a) => tailprobe::cli::record::main(a),
        Command::Diagnose(a) => tailprobe::cli::diagnose::main(a),
        Command::ExecGated(a) => tailprobe::cli::exec_gated::main(a),
        Command::Workload(a) => tailprobe::cli::workload::main(a),
        Command::Load(a) => tailprobe::cli::load::main(a),
        Command::Serve(a) => tailprobe::cli::serve::main(a),
        Command::Topo(a) => tailprobe::cli::topo::main(a),
        Command::Governor(a) => tailprobe::cli::governor::main(a),
        Command::Pin(a) => tailprobe::cli::pin::main(a),
        Command::Noise(a) => tailprobe::cli::noise::main(a),
        Command::Irq(a) => tailprobe::cli::irq::main(a),
        Command::Counters(a) => tailprobe::cli::counters::main(a),
        Command::Numa(a) => tailprobe::cli::numa::main(a),
        Command::Restore(a) => tailprobe::cli::restore::main(a),
        Command::Experiment(a) => tailprobe::cli::experiment::main(a),
        Command::Exporter(a) => tailprobe::cli::exporter::main(a),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("tailprobe: error: {e:#}");
            std::process::exit(exit::ERROR);
        }
    }
}
