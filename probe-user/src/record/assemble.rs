//! From raw map contents and thread book-keeping to a [`RecordReport`].
//! Pure: no kernel access.

use std::collections::BTreeMap;

use probe_common::{
    CpuStats, DurStat, MigratePages, Preemptor, ThreadStats, NR_SOFTIRQS, SOFTIRQ_NAMES,
};

use super::{numa::Sample, watch::ThreadBook};
use crate::{
    kernel::{
        btf_offsets::TaskOffsets,
        loader::{ProgStats, ThreadCounters},
    },
    report::{
        kernel_delta, CpuReport, EndReason, IrqReport, IrqTime, KernelAccounting, Loss,
        MigrateReason, Migrations, NumaReport, NumaSample, NumaTaskEvents, Outlier,
        OutlierThresholds, Overhead, PreemptorReport, ProcessReport, ProgramCost, RecordReport,
        SoftirqDelay, SoftirqReport, Target, ThreadReport, WindowReport,
    },
    stats::{empty_hist, merge, WaitSummary},
};

pub struct Inputs {
    /// `kernel.osrelease`, "unknown" when unreadable.
    pub kernel_release: String,
    pub target: Target,
    pub start_ns: u64,
    pub end_ns: u64,
    pub end_reason: EndReason,
    pub counters: BTreeMap<u32, ThreadCounters>,
    pub losses: Vec<(&'static str, Vec<u64>)>,
    pub irqs: BTreeMap<u32, DurStat>,
    pub irq_names: BTreeMap<u32, String>,
    /// [vector][cpu]
    pub softirqs: Vec<Vec<DurStat>>,
    pub softirq_delay: Vec<Vec<DurStat>>,
    pub cpu_stats: Vec<CpuStats>,
    pub preemptors: BTreeMap<u32, Preemptor>,
    pub migrate_pages: Vec<MigratePages>,
    pub migrate_reason_names: BTreeMap<i64, String>,
    pub numa_start: Sample,
    pub numa_end: Sample,
    /// (CLOCK_MONOTONIC ns, KiB per node) sampled during the run.
    pub numa_samples: Vec<(u64, BTreeMap<u32, u64>)>,
    pub windows: Vec<WindowReport>,
    pub window_ns: u64,
    pub outliers: Vec<Outlier>,
    pub outliers_not_kept: u64,
    pub outlier_thresholds: (u64, u64),
    pub prog_stats: Option<Vec<ProgStats>>,
    pub thread_slots: crate::report::model::ThreadSlotUse,
    pub unavailable: Vec<String>,
    pub left_out: Vec<crate::kernel::plan::LeftOut>,
    pub attach_ms: crate::report::AttachTime,
    pub book: ThreadBook,
    pub offsets: TaskOffsets,
    pub topology_known: bool,
    pub notes: Vec<String>,
}

fn comm_str(c: &[u8; 16]) -> String {
    let end = c.iter().position(|b| *b == 0).unwrap_or(c.len());
    String::from_utf8_lossy(&c[..end]).into_owned()
}

/// Non-empty buckets of a histogram as (lower, upper, count).
fn hist_rows(h: &[u64]) -> Vec<(u64, u64, u64)> {
    h.iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .map(|(i, c)| {
            (
                probe_common::bucket_lower_bound(i),
                probe_common::bucket_upper_bound(i),
                *c,
            )
        })
        .collect()
}

/// The report's groupings of a thread's (or the process's) counters.
fn migrations(s: &ThreadStats) -> Migrations {
    Migrations {
        total: s.migrations,
        cross_llc: s.migrations_cross_llc,
        cross_numa: s.migrations_cross_numa,
    }
}

fn hardirq(s: &ThreadStats) -> IrqTime {
    IrqTime {
        count: s.hardirq_count,
        total_ns: s.hardirq_ns,
    }
}

fn softirq(s: &ThreadStats) -> IrqTime {
    IrqTime {
        count: s.softirq_count,
        total_ns: s.softirq_ns,
    }
}

fn numa_events(s: &ThreadStats) -> NumaTaskEvents {
    NumaTaskEvents {
        moves: s.numa_moves,
        swaps: s.numa_swaps,
        sticks: s.numa_sticks,
    }
}

/// The report from everything a run gathered.
pub fn build(inp: Inputs) -> RecordReport {
    let t = threads(&inp);
    let cpus = cpus(&inp);
    let target_cpus: Vec<usize> = cpus.iter().map(|c| c.cpu as usize).collect();
    let irqs = irqs(&inp);
    let (softirqs, softirq_delay) = softirqs(&inp, &target_cpus);
    let preemptors = preemptors(&inp);
    let numa = numa_report(&inp, numa_events(&t.total));
    let process = process_report(&inp, &t);
    let losses: Vec<Loss> = inp
        .losses
        .into_iter()
        .map(|(name, per_cpu)| Loss {
            name,
            total: per_cpu.iter().sum(),
            per_cpu,
        })
        .collect();
    // Rebuilt events (`switch_in_untraced_rebuilt`) are counted, not lost.
    let lossy = losses
        .iter()
        .any(|l| l.total > 0 && probe_common::loss::is_loss(l.name));
    let duration_ns = inp.end_ns.saturating_sub(inp.start_ns);
    let overhead = overhead(inp.prog_stats.as_deref(), duration_ns);
    RecordReport {
        tool: "tailprobe",
        version: env!("CARGO_PKG_VERSION"),
        kernel_release: inp.kernel_release,
        target: inp.target,
        start_monotonic_ns: inp.start_ns,
        end_monotonic_ns: inp.end_ns,
        duration_ns,
        end_reason: inp.end_reason,
        process,
        threads: t.threads,
        preemptors,
        irqs,
        softirqs,
        softirq_delay,
        cpus,
        numa,
        window_ns: inp.window_ns,
        windows: inp.windows,
        outlier_thresholds_ns: OutlierThresholds {
            runq_wait_ns: inp.outlier_thresholds.0,
            irq_ns: inp.outlier_thresholds.1,
        },
        outliers: inp.outliers,
        outliers_not_kept: inp.outliers_not_kept,
        overhead,
        thread_slots: inp.thread_slots,
        losses,
        lossy,
        task_offsets: inp.offsets,
        topology_known: inp.topology_known,
        unavailable: inp.unavailable,
        left_out: inp.left_out,
        attach_ms: inp.attach_ms,
        notes: inp.notes,
        wake_edges: Vec::new(),
        cpu_idle: None,
    }
}

/// The threads and what adding them up gives the process.
struct Threads {
    /// Most run-queue wait first.
    threads: Vec<ThreadReport>,
    hist: Vec<u64>,
    total: ThreadStats,
    /// The kernel's accounting summed over the threads it covers.
    kernel_sum: Option<KernelAccounting>,
    /// Our run-queue total as a share of the kernel's, over its window.
    runq_agreement_pct: Option<f64>,
}

fn threads(inp: &Inputs) -> Threads {
    let mut threads = Vec::new();
    let mut proc_hist = empty_hist();
    // The process: every thread's counters added up.
    let mut total = ThreadStats::ZERO;
    let mut kernel_sum: Option<KernelAccounting> = None;
    let mut ours_for_kernel = 0u64;
    for (tid, c) in &inp.counters {
        let s = &c.stats;
        merge(&mut proc_hist, &c.hist);
        total.add(s);
        let info = inp.book.get(*tid);
        let kernel = info.and_then(|i| Some(kernel_delta(i.before?, i.after?)));
        if let Some(k) = &kernel {
            // Ours over the kernel's window: our total read next to each
            // of its two snapshots (else from attach to the end).
            ours_for_kernel += match info.map(|i| (i.ours_before, i.ours_after)) {
                Some((Some(b), Some(a))) => a.saturating_sub(b),
                _ => s.runq_total_ns,
            };
            let sum = kernel_sum.get_or_insert(KernelAccounting {
                runq_wait_ns: 0,
                oncpu_ns: 0,
                voluntary_switches: 0,
                involuntary_switches: 0,
            });
            sum.runq_wait_ns += k.runq_wait_ns;
            sum.oncpu_ns += k.oncpu_ns;
            sum.voluntary_switches += k.voluntary_switches;
            sum.involuntary_switches += k.involuntary_switches;
        }
        threads.push(thread_report(*tid, c, info, kernel));
    }
    threads.sort_by(|a, b| {
        b.runq_wait
            .total_ns
            .cmp(&a.runq_wait.total_ns)
            .then(a.tid.cmp(&b.tid))
    });
    let runq_agreement_pct = kernel_sum
        .as_ref()
        .filter(|k| k.runq_wait_ns > 0)
        .map(|k| ours_for_kernel as f64 * 100.0 / k.runq_wait_ns as f64);
    Threads {
        threads,
        hist: proc_hist,
        total,
        kernel_sum,
        runq_agreement_pct,
    }
}

fn thread_report(
    tid: u32,
    c: &ThreadCounters,
    info: Option<&super::watch::ThreadInfo>,
    kernel: Option<KernelAccounting>,
) -> ThreadReport {
    let s = &c.stats;
    ThreadReport {
        tid,
        tgid: if s.tgid != 0 {
            s.tgid
        } else {
            info.map(|i| i.tgid).unwrap_or(0)
        },
        comm: info.map(|i| i.comm.clone()).unwrap_or_default(),
        alive_at_end: info.is_some_and(|i| i.alive_at_end),
        created_during_run: info.is_none_or(|i| i.created_during_run),
        runq_wait: WaitSummary::new(s.runq_count, s.runq_total_ns, s.runq_max_ns, &c.hist),
        oncpu_ns: s.oncpu_ns,
        voluntary_switches: s.voluntary_switches,
        involuntary_switches: s.involuntary_switches,
        wakeups: s.wakeups,
        migrations: migrations(s),
        hardirq: hardirq(s),
        softirq: softirq(s),
        page_faults: s.page_faults,
        numa_balancing: numa_events(s),
        kernel,
    }
}

/// The process's line: the threads added up.
fn process_report(inp: &Inputs, t: &Threads) -> ProcessReport {
    let total = &t.total;
    ProcessReport {
        threads_seen: inp.counters.len().max(inp.book.len()),
        runq_wait: WaitSummary::new(
            total.runq_count,
            total.runq_total_ns,
            total.runq_max_ns,
            &t.hist,
        ),
        runq_histogram: hist_rows(&t.hist),
        oncpu_ns: total.oncpu_ns,
        voluntary_switches: total.voluntary_switches,
        involuntary_switches: total.involuntary_switches,
        wakeups: total.wakeups,
        migrations: migrations(total),
        hardirq: hardirq(total),
        softirq: softirq(total),
        page_faults: total.page_faults,
        numa_balancing: numa_events(total),
        kernel: t.kernel_sum.clone(),
        runq_agreement_pct: t.runq_agreement_pct,
        runq_agreement_note: t
            .kernel_sum
            .as_ref()
            .zip(t.runq_agreement_pct)
            .and_then(|(k, pct)| tailprobe_report::report::agreement::note(pct, k)),
    }
}

/// Per CPU: the CPUs the target touched.
fn cpus(inp: &Inputs) -> Vec<CpuReport> {
    inp.cpu_stats
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            c.target_oncpu_ns + c.target_runq_ns + c.target_hardirq_ns + c.target_softirq_ns > 0
        })
        .map(|(i, c)| CpuReport {
            cpu: i as u32,
            target_oncpu_ns: c.target_oncpu_ns,
            target_runq_ns: c.target_runq_ns,
            target_hardirq_ns: c.target_hardirq_ns,
            target_softirq_ns: c.target_softirq_ns,
        })
        .collect()
}

/// Hard IRQs that ran on the target's threads, most time first.
fn irqs(inp: &Inputs) -> Vec<IrqReport> {
    let mut irqs: Vec<IrqReport> = inp
        .irqs
        .iter()
        .map(|(irq, d)| IrqReport {
            irq: *irq,
            name: inp.irq_names.get(irq).cloned().unwrap_or_default(),
            count: d.count,
            total_ns: d.total_ns,
            max_ns: d.max_ns,
        })
        .collect();
    irqs.sort_by(|a, b| b.total_ns.cmp(&a.total_ns).then(a.irq.cmp(&b.irq)));
    irqs
}

/// Softirqs on the target's threads (most time first), and the
/// raise-to-run delay of each vector on the CPUs the target used.
fn softirqs(inp: &Inputs, target_cpus: &[usize]) -> (Vec<SoftirqReport>, Vec<SoftirqDelay>) {
    let mut softirqs = Vec::new();
    let mut softirq_delay = Vec::new();
    for (v, name) in SOFTIRQ_NAMES
        .iter()
        .copied()
        .enumerate()
        .take(NR_SOFTIRQS as usize)
    {
        let mut s = DurStat::default();
        for d in inp.softirqs.get(v).into_iter().flatten() {
            s.add(d);
        }
        if s.count > 0 {
            softirqs.push(SoftirqReport {
                vector: v as u32,
                name,
                count: s.count,
                total_ns: s.total_ns,
                max_ns: s.max_ns,
            });
        }
        let mut d = DurStat::default();
        if let Some(per_cpu) = inp.softirq_delay.get(v) {
            for cpu in target_cpus {
                if let Some(x) = per_cpu.get(*cpu) {
                    d.add(x);
                }
            }
        }
        if d.count > 0 {
            softirq_delay.push(SoftirqDelay {
                vector: v as u32,
                name,
                count: d.count,
                mean_ns: d.total_ns / d.count,
                max_ns: d.max_ns,
            });
        }
    }
    softirqs.sort_by_key(|s| std::cmp::Reverse(s.total_ns));
    (softirqs, softirq_delay)
}

/// Who preempted the target, by the wait that followed: the top 20.
fn preemptors(inp: &Inputs) -> Vec<PreemptorReport> {
    let mut preemptors: Vec<PreemptorReport> = inp
        .preemptors
        .iter()
        .filter(|(_, p)| p.count > 0)
        .map(|(pid, p)| PreemptorReport {
            pid: *pid,
            tgid: p.tgid,
            comm: if *pid == 0 {
                "(idle)".into()
            } else {
                comm_str(&p.comm)
            },
            count: p.count,
            target_wait_ns: p.target_wait_ns,
        })
        .collect();
    preemptors.sort_by(|a, b| {
        b.target_wait_ns
            .cmp(&a.target_wait_ns)
            .then(a.pid.cmp(&b.pid))
    });
    preemptors.truncate(20);
    preemptors
}

fn numa_report(inp: &Inputs, task_events: NumaTaskEvents) -> NumaReport {
    let vm = inp.numa_start.delta(&inp.numa_end);
    let mut notes = Vec::new();
    let nodes = inp.numa_start.nodes;
    if nodes <= 1 {
        notes.push(
            "one NUMA node: remote memory and cross-node migrations cannot happen on this machine"
                .into(),
        );
    }
    let balancing = inp.numa_start.balancing;
    let (remote, share) = match balancing {
        Some(b) if b != 0 => {
            let all = vm.get("numa_hint_faults").copied();
            let local = vm.get("numa_hint_faults_local").copied();
            match (all, local) {
                (Some(a), Some(l)) => {
                    let r = a.saturating_sub(l);
                    (Some(r), (a > 0).then(|| r as f64 / a as f64))
                }
                _ => {
                    notes.push("/proc/vmstat has no NUMA hint-fault counters here".into());
                    (None, None)
                }
            }
        }
        Some(_) => {
            notes.push(
                "NUMA balancing is off (kernel.numa_balancing=0): the kernel takes no hint faults, \
                 so there is no remote-access signal"
                    .into(),
            );
            (None, None)
        }
        None => {
            notes.push(
                "NUMA balancing is not built into this kernel: no remote-access signal".into(),
            );
            (None, None)
        }
    };
    notes.push(
        "hardware memory-access sampling is not used: remote access is estimated from hint faults \
         and page placement"
            .into(),
    );
    let migrate_pages = inp
        .migrate_pages
        .iter()
        .enumerate()
        .filter(|(_, m)| m.events > 0)
        .map(|(i, m)| MigrateReason {
            reason: i as u32,
            name: inp
                .migrate_reason_names
                .get(&(i as i64))
                .cloned()
                .unwrap_or_else(|| format!("reason {i}")),
            events: m.events,
            pages_succeeded: m.succeeded,
            pages_failed: m.failed,
            target_events: m.target_events,
            target_pages_succeeded: m.target_succeeded,
        })
        .collect();
    NumaReport {
        nodes,
        balancing,
        task_events,
        migrate_pages,
        vmstat_delta: vm,
        remote_hint_faults: remote,
        remote_hint_fault_share: share,
        kib_per_node_start: inp.numa_start.kib_per_node.clone(),
        kib_per_node_end: inp.numa_end.kib_per_node.clone(),
        kib_per_node_samples: inp
            .numa_samples
            .iter()
            .map(|(ts_ns, kib)| NumaSample {
                ts_ns: *ts_ns,
                kib_per_node: kib.clone(),
            })
            .collect(),
        notes,
    }
}

fn overhead(stats: Option<&[ProgStats]>, duration_ns: u64) -> Overhead {
    let Some(stats) = stats else {
        return Overhead {
            measured: false,
            programs: Vec::new(),
            total_events: 0,
            total_run_time_ns: 0,
            cpu_share_pct: None,
            events_per_second: None,
        };
    };
    let programs: Vec<ProgramCost> = stats
        .iter()
        .map(|p| ProgramCost {
            name: p.name,
            events: p.run_count,
            run_time_ns: p.run_time_ns,
            ns_per_event: (p.run_count > 0).then(|| p.run_time_ns as f64 / p.run_count as f64),
        })
        .collect();
    let total_events = programs.iter().map(|p| p.events).sum();
    let total_run_time_ns = programs.iter().map(|p| p.run_time_ns).sum::<u64>();
    let secs = duration_ns as f64 / 1e9;
    Overhead {
        measured: true,
        programs,
        total_events,
        total_run_time_ns,
        cpu_share_pct: (duration_ns > 0)
            .then(|| total_run_time_ns as f64 * 100.0 / duration_ns as f64),
        events_per_second: (secs > 0.0).then(|| total_events as f64 / secs),
    }
}
