//! `tailprobe exec-gated`: internal. The child side of `record -- CMD`: wait
//! until the probes are attached, then exec the command in place.

use anyhow::Result;
use clap::Args;

/// Internal: wait on an inherited pipe, then exec CMD (used by `record -- CMD`).
#[derive(Debug, Args)]
pub struct ExecGatedArgs {
    /// Inherited pipe to wait on.
    #[arg(long)]
    pub fd: i32,
    /// The command.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

pub fn main(args: &ExecGatedArgs) -> Result<i32> {
    Err(crate::record::target::exec_gated(args.fd, &args.command))
}
