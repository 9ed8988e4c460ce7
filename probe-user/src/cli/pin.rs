//! `tailprobe pin`: launch a target pinned, or re-pin a running process.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::{ArgGroup, Args};

use super::node_common::{self as nc, NodeArgs};
use crate::{
    cpulist,
    node::pin::{self, PinError, PinSpec},
};

/// Pin a target to CPUs and bind its memory to their node.
///
/// With a command after `--`, start it pinned: CPU affinity and (when the
/// CPUs sit on one node) MPOL_BIND to that node are set before exec, so all
/// its memory is placed from the first page. With --pid (or --unit,
/// --container, --pod, --cgroup: every process in it), re-pin every thread
/// of the running process(es) (journaled; restored after --watch, else held
/// until `tailprobe restore`) and report each thread's Cpus_allowed_list
/// before and after. Memory already touched is not moved. Re-pinning
/// another user's threads needs CAP_SYS_NICE.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").args(["pid", "unit", "container", "pod", "cgroup"]).conflicts_with("cmd")))]
pub struct PinArgs {
    /// Where: node:N, cpus:LIST (e.g. cpus:0-15) or device-local (the node
    /// of most accelerators).
    #[arg(long, value_name = "SPEC", default_value = "device-local")]
    pub pin: PinSpec,
    /// The running process(es) to re-pin (all their threads).
    #[command(flatten)]
    pub target: super::target_args::TargetArgs,
    /// With a target: watch this long for a process changing its affinity
    /// back (a warning per thread), then restore the original masks.
    #[arg(long, value_parser = super::parse_duration, requires = "which")]
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
    if args.target.given() {
        return repin(args, &roots, &placement.cpus, &cpus_s, &placement);
    }
    if args.cmd.is_empty() {
        anyhow::bail!("give --pid PID (or --unit, --container, --pod, --cgroup) to re-pin running processes, or a command after `--` to start one pinned");
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

/// Re-pin every thread of the target's processes; with --watch, warn about
/// threads that change back, then restore.
fn repin(
    args: &PinArgs,
    roots: &crate::node::Roots,
    cpus: &[u32],
    cpus_s: &str,
    placement: &pin::Placement,
) -> Result<i32> {
    // Like every other command: no kernel threads, no zombies (a per-CPU
    // kernel thread refuses a new affinity anyway).
    let proc = crate::procfs::ProcFs::new(&roots.proc);
    let (pids, what) = args
        .target
        .processes(&proc)
        .context("checking the target")?;
    if pids.iter().any(|p| !owned_by_me(&proc, *p)) {
        crate::privileges::require(
            &format!("tailprobe pin ({what}: another user's process)"),
            &[crate::privileges::Cap::SysNice],
        )?;
    }
    let mut j = args.node.begin_journal()?;
    let mut threads = Vec::new();
    for &pid in &pids {
        threads.extend(
            pin::repin(roots, &mut j, pid, cpus)
                .with_context(|| format!("re-pinning pid {pid} to CPUs {cpus_s}"))?,
        );
    }
    let mut overridden: Vec<(u32, String)> = Vec::new();
    if let Some(d) = args.watch {
        let start = Instant::now();
        while start.elapsed() < d && nc::sleep_unless_stopped(Duration::from_millis(200)) {
            for &pid in &pids {
                for (tid, now) in pin::overridden(roots, pid, cpus) {
                    if !overridden.iter().any(|(t, _)| *t == tid) {
                        eprintln!(
                            "tailprobe: warning: thread {tid} of pid {pid} runs on CPUs {now}, not {cpus_s}: \
                             the process changed its affinity (or started the thread with its own)"
                        );
                        overridden.push((tid, now));
                    }
                }
            }
            if !pids.iter().any(|p| proc.is_alive(*p)) {
                eprintln!("tailprobe: {what} exited");
                break;
            }
        }
    }
    if args.json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            pid: u32,
            target: &'a str,
            processes: &'a [u32],
            placement: &'a pin::Placement,
            threads: &'a [pin::ThreadPin],
            overridden: &'a [(u32, String)],
        }
        nc::print_json(&Out {
            pid: pids[0],
            target: &what,
            processes: &pids,
            placement,
            threads: &threads,
            overridden: &overridden,
        })?;
    } else {
        crate::out::println(format_args!(
            "{what} pinned to {} (CPUs {cpus_s}); memory policy unchanged for a running process",
            placement.why
        ))?;
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
    Ok(super::exit::OK)
}

/// Whether `pid` runs as this process's effective user (then
/// sched_setaffinity needs no capability).
fn owned_by_me(proc: &crate::procfs::ProcFs, pid: u32) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    std::fs::metadata(proc.root().join(pid.to_string())).is_ok_and(|m| m.uid() == me)
}
