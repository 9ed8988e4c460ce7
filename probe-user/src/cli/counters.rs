//! `tailprobe counters`: perf counters of a process over a window.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::{ArgGroup, Args};

use super::node_common::{self as nc, NodeArgs};
use crate::{node::counters, procfs::ProcFs};

/// Count context switches, CPU migrations, page faults and task clock of
/// every thread of a process (threads it starts are counted too), and where
/// the hardware exposes them instructions, cycles, IPC, branches,
/// branch-misses and LLC-load-misses. Counters the node lacks are shown as
/// "not supported here", never as zero. The target is a process (--pid) or
/// every process of a unit, container, pod or cgroup at the start, summed.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["pid", "unit", "container", "pod", "cgroup"])))]
pub struct CountersArgs {
    #[command(flatten)]
    pub target: super::target_args::TargetArgs,
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
    let (pids, what) = args.target.processes(&proc)?;
    let pid = pids[0];
    let comm = proc.stat(pid).map(|s| s.comm).unwrap_or_default();
    let tids: Vec<u32> = pids.iter().flat_map(|p| proc.threads(*p)).collect();
    // Counting another process needs CAP_PERFMON unless the paranoia
    // sysctl allows it to any user (<= 1); refuse with the name, not EACCES.
    let paranoid =
        std::fs::read_to_string(args.node.proc_root.join("sys/kernel/perf_event_paranoid"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .unwrap_or(2);
    if paranoid > 1 {
        crate::privileges::require(
            &format!("tailprobe counters (kernel.perf_event_paranoid = {paranoid})"),
            &[crate::privileges::Cap::Perfmon],
        )?;
    }
    let mut session = counters::Session::start(&tids).with_context(|| {
        format!(
            "opening perf counters on {what} (needs CAP_PERFMON, or perf_event_paranoid <= 1 \
             for processes of the same user, CAP_SYS_PTRACE for other users')"
        )
    })?;
    crate::signals::install().context("installing the SIGINT/SIGTERM handlers")?;
    eprintln!(
        "tailprobe: counting {} thread(s) of {what} for {:?}",
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
        if !pids.iter().any(|p| proc.is_alive(*p)) {
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
            "target": what,
            "processes": pids,
            "threads": tids.len(),
            "seconds": elapsed.as_secs_f64(),
            "target_exited": exited,
            "counters": counts,
            "ipc": ipc,
        }))?;
    } else {
        crate::out::println(format_args!(
            "{what}, {} thread(s), {:.2} s:",
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
