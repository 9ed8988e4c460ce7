//! From raw map contents and thread book-keeping to a [`RecordReport`].
//! Pure: no kernel access.

use std::collections::BTreeMap;

use crate::{
    kernel::{btf_offsets::TaskOffsets, loader::ThreadCounters},
    report::{
        kernel_delta, EndReason, KernelAccounting, Loss, Migrations, ProcessReport, RecordReport,
        Target, ThreadReport,
    },
    stats::{empty_hist, merge, WaitSummary},
};

use super::watch::ThreadBook;

pub struct Inputs {
    pub target: Target,
    pub start_ns: u64,
    pub end_ns: u64,
    pub end_reason: EndReason,
    pub counters: BTreeMap<u32, ThreadCounters>,
    pub losses: Vec<(&'static str, Vec<u64>)>,
    pub book: ThreadBook,
    pub offsets: TaskOffsets,
    pub topology_known: bool,
    pub notes: Vec<String>,
}

pub fn build(inp: Inputs) -> RecordReport {
    let mut threads = Vec::new();
    let mut proc_hist = empty_hist();
    let (mut count, mut total, mut max) = (0u64, 0u64, 0u64);
    let mut oncpu = 0;
    let (mut vol, mut invol, mut wakeups) = (0, 0, 0);
    let mut mig = Migrations::default();
    let mut kernel_sum: Option<KernelAccounting> = None;
    let mut ours_for_kernel = 0u64;
    for (tid, c) in &inp.counters {
        let s = &c.stats;
        let hist: Vec<u64> = match &c.hist {
            Some(h) => h.buckets.to_vec(),
            None => empty_hist(),
        };
        merge(&mut proc_hist, &hist);
        count += s.runq_count;
        total += s.runq_total_ns;
        max = max.max(s.runq_max_ns);
        oncpu += s.oncpu_ns;
        vol += s.voluntary_switches;
        invol += s.involuntary_switches;
        wakeups += s.wakeups;
        let m = Migrations {
            total: s.migrations,
            cross_llc: s.migrations_cross_llc,
            cross_numa: s.migrations_cross_numa,
        };
        mig.total += m.total;
        mig.cross_llc += m.cross_llc;
        mig.cross_numa += m.cross_numa;
        let info = inp.book.get(*tid);
        let kernel = info.and_then(|i| Some(kernel_delta(i.before?, i.after?)));
        if let Some(k) = &kernel {
            ours_for_kernel += s.runq_total_ns;
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
        threads.push(ThreadReport {
            tid: *tid,
            comm: info.map(|i| i.comm.clone()).unwrap_or_default(),
            alive_at_end: info.is_some_and(|i| i.alive_at_end),
            created_during_run: info.is_none_or(|i| i.created_during_run),
            runq_wait: WaitSummary::new(s.runq_count, s.runq_total_ns, s.runq_max_ns, &hist),
            oncpu_ns: s.oncpu_ns,
            voluntary_switches: s.voluntary_switches,
            involuntary_switches: s.involuntary_switches,
            wakeups: s.wakeups,
            migrations: m,
            kernel,
        });
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
    let losses: Vec<Loss> = inp
        .losses
        .into_iter()
        .map(|(name, per_cpu)| Loss {
            name,
            total: per_cpu.iter().sum(),
            per_cpu,
        })
        .collect();
    let lossy = losses.iter().any(|l| l.total > 0);
    RecordReport {
        tool: "tailprobe",
        version: env!("CARGO_PKG_VERSION"),
        kernel_release: kernel_release(),
        target: inp.target,
        start_monotonic_ns: inp.start_ns,
        end_monotonic_ns: inp.end_ns,
        duration_ns: inp.end_ns.saturating_sub(inp.start_ns),
        end_reason: inp.end_reason,
        process: ProcessReport {
            threads_seen: inp.counters.len().max(inp.book.len()),
            runq_wait: WaitSummary::new(count, total, max, &proc_hist),
            oncpu_ns: oncpu,
            voluntary_switches: vol,
            involuntary_switches: invol,
            wakeups,
            migrations: mig,
            kernel: kernel_sum,
            runq_agreement_pct,
        },
        threads,
        losses,
        lossy,
        task_offsets: inp.offsets,
        topology_known: inp.topology_known,
        notes: inp.notes,
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
