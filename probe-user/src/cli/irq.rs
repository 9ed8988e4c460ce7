//! `tailprobe irq`: IRQ placement and counts, and moving IRQs off CPUs.

use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};

use super::node_common::{self as nc, NodeArgs};
use crate::{
    cpulist,
    node::{affinity, irq, pin, Roots},
    procfs::ProcFs,
};

/// IRQ placement: where each IRQ may and does land, and per-CPU and per-IRQ
/// counts over a run from /proc/interrupts deltas.
#[derive(Debug, Args)]
pub struct IrqArgs {
    #[command(subcommand)]
    pub action: IrqAction,
    #[command(flatten)]
    pub node: NodeArgs,
}

#[derive(Debug, Subcommand)]
pub enum IrqAction {
    /// Allowed and effective CPUs of every numbered IRQ (or one).
    Show {
        /// Only this IRQ.
        #[arg(long)]
        irq: Option<u32>,
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Count interrupts per CPU and per IRQ over --duration; name those on
    /// the server's CPUs; optionally move movable IRQs off CPUs for the run.
    Watch {
        /// How long to count.
        #[arg(long, default_value = "5s", value_parser = super::parse_duration)]
        duration: Duration,
        /// The server whose CPUs matter (its threads' allowed CPUs).
        #[arg(long, conflicts_with = "cpus")]
        pid: Option<u32>,
        /// The server's CPUs.
        #[arg(long)]
        cpus: Option<nc::CpuArg>,
        /// Move every movable IRQ off these CPUs for the run (journaled,
        /// restored at the end); managed IRQs are reported as unmovable.
        #[arg(long, value_name = "CPUS")]
        irq_move_off: Option<nc::CpuArg>,
        /// Rows of the per-IRQ table.
        #[arg(long, default_value_t = 15)]
        top: usize,
        /// Print JSON on stdout.
        #[arg(long)]
        json: bool,
    },
}

pub fn main(args: &IrqArgs) -> Result<i32> {
    let roots = args.node.roots();
    match &args.action {
        IrqAction::Show { irq: one, json } => show(&roots, *one, *json),
        IrqAction::Watch {
            duration,
            pid,
            cpus,
            irq_move_off,
            top,
            json,
        } => {
            let online = affinity::online_cpus(&roots.sys).context("reading the online CPUs")?;
            let server = server_cpus(&roots, *pid, cpus.as_ref(), &online)?;
            let mut journal = None;
            let mut moved = None;
            if let Some(nc::CpuArg(avoid)) = irq_move_off {
                affinity::check_online(avoid, &online)?;
                if avoid.len() >= online.len() {
                    anyhow::bail!(
                        "--irq-move-off {} covers every online CPU ({}): IRQs need somewhere to go",
                        cpulist::Display(avoid),
                        cpulist::Display(&online)
                    );
                }
                let mut j = args.node.begin_journal()?;
                let rep = irq::move_off(&roots, &mut j, avoid, &online)?;
                for (n, b, a) in &rep.moved {
                    eprintln!("tailprobe: IRQ {n}: {b} -> {a}");
                }
                for (n, why) in &rep.unmovable {
                    eprintln!("tailprobe: IRQ {n}: unmovable ({why})");
                }
                moved = Some(rep);
                journal = Some(j);
            }
            crate::signals::install().context("installing the SIGINT/SIGTERM handlers")?;
            let a = irq::read_interrupts(&roots).context("reading /proc/interrupts")?;
            nc::sleep_unless_stopped(*duration);
            let b = irq::read_interrupts(&roots).context("reading /proc/interrupts")?;
            let restore_code = match journal {
                Some(j) => nc::report_restore(&j.restore()?),
                None => super::exit::OK,
            };
            let d = irq::delta(&a, &b);
            print_watch(*duration, *top, *json, &server, &d, moved)?;
            Ok(restore_code)
        }
    }
}

/// `tailprobe irq show`: each IRQ's allowed and effective CPUs and count.
fn show(roots: &Roots, one: Option<u32>, json: bool) -> Result<i32> {
    let nums = match one {
        Some(n) => {
            irq::check_exists(roots, n)?;
            vec![n]
        }
        None => irq::irq_numbers(roots),
    };
    let ints = irq::read_interrupts(roots).ok();
    let rows: Vec<serde_json::Value> = nums
        .iter()
        .map(|&n| {
            let p = irq::place(roots, n);
            let row = ints
                .as_ref()
                .and_then(|i| i.rows.iter().find(|r| r.number() == Some(n)));
            serde_json::json!({
                "irq": n,
                "affinity": p.affinity,
                "effective": p.effective,
                "managed": irq::debugfs_managed(roots, n),
                "count": row.map(|r| r.counts.iter().sum::<u64>()),
                "desc": row.map(|r| r.desc.clone()),
            })
        })
        .collect();
    if json {
        nc::print_json(&rows)?;
    } else {
        crate::out::println(format_args!(
            "{:>5}  {:<12} {:<12} {:>12}  desc",
            "irq", "allowed", "effective", "count"
        ))?;
        for r in &rows {
            let s = |k: &str| r[k].as_str().unwrap_or("?").to_string();
            crate::out::println(format_args!(
                "{:>5}  {:<12} {:<12} {:>12}  {}",
                r["irq"].as_u64().unwrap_or_default(),
                s("affinity"),
                s("effective"),
                r["count"].as_u64().map_or("-".into(), |c| c.to_string()),
                r["desc"].as_str().unwrap_or("")
            ))?;
        }
    }
    Ok(super::exit::OK)
}

/// The server's CPUs: where the threads of `pid` may run, or `cpus`.
fn server_cpus(
    roots: &Roots,
    pid: Option<u32>,
    cpus: Option<&nc::CpuArg>,
    online: &[u32],
) -> Result<Vec<u32>> {
    Ok(match (pid, cpus) {
        (Some(p), _) => {
            let proc = ProcFs::new(&roots.proc);
            proc.check_target(p)?;
            let mut v: Vec<u32> = proc
                .threads(p)
                .into_iter()
                .filter_map(|t| pin::allowed_list(&proc, p, t))
                .flat_map(|s| cpulist::parse(&s).unwrap_or_default())
                .collect();
            v.sort_unstable();
            v.dedup();
            v
        }
        (None, Some(nc::CpuArg(c))) => {
            affinity::check_online(c, online)?;
            c.clone()
        }
        (None, None) => Vec::new(),
    })
}

/// Print what `tailprobe irq watch` saw.
fn print_watch(
    duration: Duration,
    top: usize,
    json: bool,
    server: &[u32],
    d: &[irq::IrqDelta],
    moved: Option<irq::MoveReport>,
) -> Result<()> {
    let totals = irq::per_cpu_totals(d);
    let on_server: Vec<&irq::IrqDelta> = d
        .iter()
        .filter(|r| r.per_cpu.iter().any(|(c, _)| server.contains(c)))
        .collect();
    if json {
        nc::print_json(&serde_json::json!({
            "seconds": duration.as_secs_f64(),
            "server_cpus": cpulist::Display(server).to_string(),
            "per_cpu": totals,
            "per_irq": d,
            "on_server_cpus": on_server.iter().map(|r| &r.name).collect::<Vec<_>>(),
            "moved": moved,
        }))?;
    } else {
        crate::out::println(format_args!("interrupts over {:?} per CPU:", duration))?;
        for (c, n) in &totals {
            crate::out::println(format_args!(
                "  CPU{c}: {n}{}",
                if server.contains(c) {
                    "  (server CPU)"
                } else {
                    ""
                }
            ))?;
        }
        crate::out::println(format_args!("top IRQs:"))?;
        for r in d.iter().take(top) {
            let per: Vec<String> = r
                .per_cpu
                .iter()
                .map(|(c, n)| format!("CPU{c}:{n}"))
                .collect();
            crate::out::println(format_args!(
                "  {:>6} {:>10}  {}  {}",
                r.name,
                r.total,
                per.join(" "),
                r.desc
            ))?;
        }
        if !server.is_empty() {
            crate::out::println(format_args!(
                "{} IRQ source(s) landed on the server's CPUs {}",
                on_server.len(),
                cpulist::Display(server)
            ))?;
        }
    }
    Ok(())
}
