//! The final snapshot: let the target's last events land, read the kernel's
//! accounting and every map, detach, and assemble the report.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Result;

use super::{
    assemble,
    attach::Attached,
    follow::{merge_counters, Live},
    monotonic_ns, numa,
    resolve::{Rescan, Resolved},
    target, RecordOptions, TargetSpec,
};
use crate::{
    kernel::loader::{Probes, ProgStats},
    procfs::{self, ProcFs},
    report::{CpuIdleReport, EndReason, IdleStateUse, RecordReport, Target, WakeEdge},
};

/// How the run went, beyond what the loop gathered.
pub(super) struct Ended {
    pub end_reason: EndReason,
    pub start_ns: u64,
    pub main_pid: u32,
    /// Pids inside the targets' PID namespaces, read at the start.
    pub ns_pids: BTreeMap<u32, u32>,
    pub notes: Vec<String>,
}

/// Take the final snapshot and build the report; the probes are detached
/// (dropped) once every map is read.
pub(super) fn finish(
    opts: &RecordOptions,
    proc: &ProcFs,
    r: Resolved,
    mut a: Attached,
    mut live: Live,
    mut ended: Ended,
) -> Result<RecordReport> {
    if matches!(
        ended.end_reason,
        EndReason::TargetExited | EndReason::CommandExited
    ) {
        // The exiting threads' last switch-out comes just after /proc shows
        // the process gone: give it a moment to reach the maps.
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in live.book.processes() {
        if let Some(n) = target::members::ns_pid(proc.root(), pid) {
            ended.ns_pids.insert(pid, n);
        }
    }
    // Kernel accounting first, then our maps, then detach (drop).
    let probes = &mut a.probes;
    live.book.finish(proc, &|t| probes.thread_runq_total(t));
    let end_ns = monotonic_ns();
    let evs = probes.drain_events();
    if let Some(tl) = &opts.timeline {
        crate::timeline::session::feed(tl, probes, &evs)?;
        crate::timeline::session::feed_end(tl, probes);
    }
    for ev in evs {
        live.stream.take(&ev, &mut live.book, proc);
    }
    if let Some(w) = end_ns.checked_div(a.window_ns) {
        live.series
            .drain(&probes.read_windows()?, (w + 1) * a.window_ns);
    }
    let mut counters = probes.read_threads()?;
    for (tid, c) in std::mem::take(&mut live.harvested) {
        merge_counters(&mut counters, tid, c);
    }
    let prog_stats = probes.program_stats();
    let wake_edges = read_wake_edges(probes)?;
    let cpu_idle = read_cpu_idle(probes, &prog_stats)?;
    let target = target_of(opts, proc, &r, &live, &mut ended);
    let inputs = assemble::Inputs {
        kernel_release: procfs::sysctl(proc.root(), "kernel/osrelease")
            .unwrap_or_else(|_| "unknown".into()),
        target,
        start_ns: ended.start_ns,
        end_ns,
        end_reason: ended.end_reason,
        counters,
        losses: probes.read_losses()?,
        irqs: probes.read_irqs()?,
        irq_names: irq_names(),
        softirqs: probes.read_softirqs()?,
        softirq_delay: probes.read_softirq_delay()?,
        cpu_stats: probes.read_cpu_stats()?,
        preemptors: fresh_comms(proc, probes.read_preemptors()?),
        migrate_pages: probes.read_migrate_pages()?,
        migrate_reason_names: probes.migrate_reasons.clone(),
        numa_start: a.numa_start,
        numa_end: numa::Sample::take(&live.book.processes()),
        numa_samples: live.numa_samples,
        windows: live.series.windows,
        window_ns: a.window_ns,
        outliers: live.stream.outliers,
        outliers_not_kept: live.stream.not_kept,
        outlier_thresholds: a.outlier_thresholds,
        prog_stats: a.self_stats.then_some(prog_stats),
        thread_slots: probes.slot_use()?,
        unavailable: probes.unavailable.clone(),
        left_out: probes.left_out.clone(),
        attach_ms: a.attach_ms,
        book: live.book,
        offsets: a.offsets,
        topology_known: a.topology_known,
        notes: std::mem::take(&mut ended.notes),
    };
    drop(a.probes);
    if ended.end_reason == EndReason::TargetExited && !opts.builtin {
        ended
            .notes
            .push("the target exited during the run: this is what was seen until then".into());
    }
    let mut report = assemble::build(inputs);
    report.notes.extend(ended.notes);
    report.cpu_idle = cpu_idle;
    report.wake_edges = wake_edges;
    Ok(report)
}

/// Who was recorded: the report's `target`.
fn target_of(
    opts: &RecordOptions,
    proc: &ProcFs,
    r: &Resolved,
    live: &Live,
    ended: &mut Ended,
) -> Target {
    let main_pid = ended.main_pid;
    Target {
        kind: if opts.builtin {
            "builtin"
        } else {
            opts.target.kind()
        },
        spec: opts.target.describe(),
        pid: main_pid,
        comm: r.comm.clone(),
        cmdline: proc.cmdline(main_pid).unwrap_or_default(),
        tid: r.tid,
        processes: live.book.processes(),
        builtin: opts.builtin,
        command_exit_code: live.command_exit_code,
        cgroup: match &r.rescan {
            Rescan::Cgroup(d) => Some(d.display().to_string()),
            _ => None,
        },
        runtime: match &opts.target {
            TargetSpec::Group(g) => g.runtime,
            _ => None,
        },
        ns_pid: ended.ns_pids.get(&main_pid).copied(),
        ns_pids: std::mem::take(&mut ended.ns_pids),
    }
}

/// Who woke whom, when its program is attached.
fn read_wake_edges(probes: &Probes) -> Result<Vec<WakeEdge>> {
    if !probes.attached.contains(&"sched_wakeup_edges") {
        return Ok(Vec::new());
    }
    Ok(probes
        .read_wake_edges()?
        .into_iter()
        .map(|((waker_tid, wakee_tid), count)| WakeEdge {
            waker_tid,
            wakee_tid,
            count,
        })
        .collect())
}

/// Idle-state use and its program's cost, when that program is attached.
fn read_cpu_idle(probes: &Probes, prog_stats: &[ProgStats]) -> Result<Option<CpuIdleReport>> {
    if !probes.attached.contains(&"cpu_idle") {
        return Ok(None);
    }
    let cost = prog_stats.iter().find(|p| p.name == "cpu_idle");
    Ok(Some(CpuIdleReport {
        states: probes
            .read_cpu_idle()?
            .into_iter()
            .map(|(state, exits, residency_ns)| IdleStateUse {
                state,
                exits,
                residency_ns,
            })
            .collect(),
        program_runs: cost.map_or(0, |c| c.run_count),
        program_run_time_ns: cost.map_or(0, |c| c.run_time_ns),
    }))
}

/// IRQ number -> description from /proc/interrupts.
pub(crate) fn irq_names() -> BTreeMap<u32, String> {
    let Ok(ints) = crate::node::irq::read_interrupts(&crate::node::Roots::default()) else {
        return BTreeMap::new();
    };
    ints.rows
        .into_iter()
        .filter_map(|r| Some((r.name.parse().ok()?, r.desc)))
        .collect()
}

/// A preemptor's comm is captured when it first preempts; a thread renamed
/// later (worker pools name their threads after start) shows its old name.
/// Take the current one from /proc where the task still exists.
fn fresh_comms(
    proc: &ProcFs,
    mut p: BTreeMap<u32, probe_common::Preemptor>,
) -> BTreeMap<u32, probe_common::Preemptor> {
    for (pid, v) in p.iter_mut() {
        if *pid == 0 {
            continue;
        }
        if let Some(c) = proc.comm(*pid) {
            let c = c.as_bytes();
            let mut buf = [0u8; 16];
            let n = c.len().min(15);
            buf[..n].copy_from_slice(&c[..n]);
            v.comm = buf;
        }
    }
    p
}
