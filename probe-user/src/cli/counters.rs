//! `tailprobe counters`: perf counters of a process over a window.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::Args;

use super::node_common::{self as nc, NodeArgs};
use crate::{node::counters, procfs::ProcFs};

/// Count context switches, CPU migrations, page faults and task clock of
/// every thread of a process (threads it starts are counted too), and where
/// the hardware exposes them instructions, cycles, IPC, branches,
/// branch-misses and LLC-load-misses. Counters the node lacks are shown as
/// "not supported here", never as zero.
#[derive(Debug, Args)]
pub struct CountersArgs {
    /// The process to count.
    #[arg(long)]
    pub pid: u32,
    /// How long to count.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    pub duration: Duration,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub node: NodeArgs,
}

pub fn main(args: &CountersArgs) -> Result<i32> {
    let proc = ProcFs::new(&args.node.proc_root);
    let (pid, comm) = proc.check_target(args.pid)?;
    let tids = proc.threads(pid);
    let session = counters::Session::start(&tids).with_context(|| {
        format!("opening perf counters on pid {pid} (needs root or perf_event_paranoid <= 1)")
    })?;
    crate::signals::install().context("installing the SIGINT/SIGTERM handlers")?;
    eprintln!(
        "tailprobe: counting {} thread(s) of pid {pid} ({comm}) for {:?}",
        tids.len(),
        args.duration
    );
    let start = Instant::now();
    let mut exited = false;
    while start.elapsed() < args.duration {
        if !nc::sleep_unless_stopped(
            (args.duration - start.elapsed()).min(Duration::from_millis(100)),
        ) {
            break;
        }
        if !proc.is_alive(pid) {
            exited = true;
            break;
        }
    }
    let elapsed = start.elapsed();
    let counts = session.read();
    let ipc = counters::ipc(&counts);
    if args.json {
        nc::print_json(&serde_json::json!({
            "pid": pid,
            "comm": comm,
            "threads": tids.len(),
            "seconds": elapsed.as_secs_f64(),
            "target_exited": exited,
            "counters": counts,
            "ipc": ipc,
        }))?;
    } else {
        crate::out::println(format_args!(
            "pid {pid} ({comm}), {} thread(s), {:.2} s:",
            tids.len(),
            elapsed.as_secs_f64()
        ))?;
        for c in &counts {
            match c.value {
                Some(v) => crate::out::println(format_args!(
                    "  {:<18} {:>16}{}",
                    c.event,
                    v,
                    if c.scaled {
                        "  (scaled: multiplexed)"
                    } else {
                        ""
                    }
                ))?,
                None => crate::out::println(format_args!(
                    "  {:<18} {:>16}  {}",
                    c.event,
                    "-",
                    c.note.as_deref().unwrap_or("not supported here")
                ))?,
            }
        }
        match ipc {
            Some(i) => crate::out::println(format_args!("  {:<18} {:>16.2}", "IPC", i))?,
            None => crate::out::println(format_args!(
                "  {:<18} {:>16}  not supported here (needs instructions and cycles)",
                "IPC", "-"
            ))?,
        }
    }
    Ok(if exited {
        super::exit::TARGET_EXITED
    } else {
        super::exit::OK
    })
}
