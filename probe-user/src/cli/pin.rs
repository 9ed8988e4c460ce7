//! `tailprobe pin`: launch a target pinned, or re-pin a running process.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::Args;

use super::node_common::{self as nc, NodeArgs};
use crate::{
    cpulist,
    node::pin::{self, PinError, PinSpec},
};

/// Pin a target to CPUs and bind its memory to their node.
///
/// With a command after `--`, start it pinned: CPU affinity and (when the
/// CPUs sit on one node) MPOL_BIND to that node are set before exec, so all
/// its memory is placed from the first page. With --pid, re-pin every
/// thread of a running process (journaled; restored after --watch, else held
/// until `tailprobe restore`) and report each thread's Cpus_allowed_list
/// before and after. Memory already touched is not moved.
#[derive(Debug, Args)]
pub struct PinArgs {
    /// Where: node:N, cpus:LIST (e.g. cpus:0-15) or device-local (the node
    /// of most accelerators).
    #[arg(long, value_name = "SPEC", default_value = "device-local")]
    pub pin: PinSpec,
    /// Re-pin this running process (all its threads).
    #[arg(long, conflicts_with = "cmd")]
    pub pid: Option<u32>,
    /// With --pid: watch this long for the process changing its affinity
    /// back (a warning per thread), then restore the original masks.
    #[arg(long, value_parser = super::parse_duration, requires = "pid")]
    pub watch: Option<Duration>,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub node: NodeArgs,
    /// The command to start pinned.
    #[arg(last = true)]
    pub cmd: Vec<String>,
}

pub fn main(args: &PinArgs) -> Result<i32> {
    let roots = args.node.roots();
    let placement = match pin::resolve(&roots, &args.pin) {
        Ok(p) => p,
        Err(PinError::NotAvailable(na)) => return Ok(nc::not_available(&na)),
        Err(e) => return Err(e).context("resolving the placement"),
    };
    let cpus_s = cpulist::Display(&placement.cpus).to_string();
    let mem_s = placement.mem_node.map_or_else(
        || "not bound (CPUs span nodes)".to_string(),
        |n| format!("bound to node{n}"),
    );
    if let Some(pid) = args.pid {
        // Like every other command: no kernel threads, no zombies (a per-CPU
        // kernel thread refuses a new affinity anyway).
        crate::procfs::ProcFs::new(&roots.proc)
            .check_target(pid)
            .with_context(|| format!("checking pid {pid}"))?;
        let mut j = args.node.begin_journal()?;
        let threads = pin::repin(&roots, &mut j, pid, &placement.cpus)
            .with_context(|| format!("re-pinning pid {pid} to CPUs {cpus_s}"))?;
        let mut overridden = Vec::new();
        if let Some(d) = args.watch {
            let start = Instant::now();
            while start.elapsed() < d && nc::sleep_unless_stopped(Duration::from_millis(200)) {
                for (tid, now) in pin::overridden(&roots, pid, &placement.cpus) {
                    if !overridden.iter().any(|(t, _)| *t == tid) {
                        eprintln!(
                            "tailprobe: warning: thread {tid} of pid {pid} runs on CPUs {now}, not {cpus_s}: \
                             the process changed its affinity (or started the thread with its own)"
                        );
                        overridden.push((tid, now));
                    }
                }
                if !crate::procfs::ProcFs::new(&roots.proc).is_alive(pid) {
                    eprintln!("tailprobe: pid {pid} exited");
                    break;
                }
            }
        }
        if args.json {
            #[derive(serde::Serialize)]
            struct Out<'a> {
                pid: u32,
                placement: &'a pin::Placement,
                threads: &'a [pin::ThreadPin],
                overridden: &'a [(u32, String)],
            }
            nc::print_json(&Out {
                pid,
                placement: &placement,
                threads: &threads,
                overridden: &overridden,
            })?;
        } else {
            crate::out::println(format_args!("pid {pid} pinned to {} (CPUs {cpus_s}); memory policy unchanged for a running process", placement.why))?;
            crate::out::println(format_args!(
                "{:>8}  {:<16} {:<12} {:<12}",
                "tid", "comm", "before", "after"
            ))?;
            for t in &threads {
                crate::out::println(format_args!(
                    "{:>8}  {:<16} {:<12} {:<12}{}",
                    t.tid,
                    t.comm,
                    t.before,
                    t.after,
                    t.error
                        .as_deref()
                        .map(|e| format!("  ({e})"))
                        .unwrap_or_default()
                ))?;
            }
        }
        if args.watch.is_some() {
            return Ok(nc::report_restore(&j.restore()?));
        }
        let n = j.hold()?;
        eprintln!(
            "tailprobe: {n} thread mask(s) held in {}; `tailprobe restore` puts them back",
            args.node.journal_path().display()
        );
        return Ok(super::exit::OK);
    }
    if args.cmd.is_empty() {
        anyhow::bail!("give --pid PID to re-pin a running process, or a command after `--` to start one pinned");
    }
    let mut cmd = nc::command(&args.cmd)?;
    pin::pin_command(&mut cmd, &placement).context("preparing the pinned launch")?;
    crate::signals::install().context("installing the SIGINT/SIGTERM handlers")?;
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {:?} pinned to CPUs {cpus_s}", args.cmd[0]))?;
    eprintln!(
        "tailprobe: started pid {} on {} (CPUs {cpus_s}), memory {mem_s}",
        child.id(),
        placement.why
    );
    let st = nc::wait_child(&mut child, None)?;
    Ok(st.code().unwrap_or(super::exit::ERROR))
}
