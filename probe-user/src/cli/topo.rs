//! `tailprobe topo`: the node's topology and device locality.

use anyhow::Result;
use clap::Args;

use super::node_common::{print_json, NodeArgs};
use crate::node::inventory;

/// Show NUMA nodes, SMT siblings, LLC groups, PCI accelerators and NICs
/// with their node and local CPUs, NIC IRQs, cpufreq, isolated/nohz_full
/// CPUs, THP, NUMA balancing and irqbalance. Reads only; changes nothing.
///
/// The device-local node (where most accelerators sit) is the default
/// place to pin (`tailprobe pin --pin device-local`).
#[derive(Debug, Args)]
pub struct TopoArgs {
    /// Print JSON on stdout (schema: docs/node.md).
    #[arg(long, conflicts_with = "markdown")]
    pub json: bool,
    /// Print a Markdown "Node topology" block for reports.
    #[arg(long)]
    pub markdown: bool,
    #[command(flatten)]
    pub node: NodeArgs,
}

pub fn main(args: &TopoArgs) -> Result<i32> {
    let inv = inventory::read(&args.node.roots());
    if args.json {
        print_json(&inv)?;
    } else if args.markdown {
        crate::out::print(format_args!("{}", inventory::render_markdown(&inv)))?;
    } else {
        crate::out::print(format_args!("{}", inventory::render_text(&inv)))?;
    }
    Ok(super::exit::OK)
}
