//! The `tailprobe` binary: parse arguments and dispatch.

use clap::Parser;
use tailprobe::cli::{exit, Cli, Command};

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Record(a) => tailprobe::cli::record::main(a),
        Command::Workload(a) => tailprobe::cli::workload::main(a),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("tailprobe: error: {e:#}");
            std::process::exit(exit::ERROR);
        }
    }
}
