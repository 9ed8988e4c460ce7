//! Loading the embedded programs with this kernel's offsets and the target's
//! configuration, attaching them, and reading their maps back.

use std::{collections::BTreeMap, os::fd::OwnedFd, path::Path};

use anyhow::{anyhow, Context as _, Result};
use aya::{
    maps::{Array, MapData, RingBuf},
    programs::{BtfTracePoint, TracePoint},
    Btf, Ebpf,
};
use probe_common::{filter, CpuTopo, ThreadSlot, ThreadStats, MAX_CPUS};

use super::{
    btf_offsets::TaskOffsets,
    plan::{self, LeftOut, PlanInputs},
    tracefs, EBPF_OBJECT,
};

/// BTF tracepoints every recording needs: (program, tracepoint).
pub const REQUIRED: [(&str, &str); 6] = [
    ("sched_switch", "sched_switch"),
    ("sched_wakeup", "sched_wakeup"),
    ("sched_wakeup_new", "sched_wakeup_new"),
    ("sched_migrate_task", "sched_migrate_task"),
    ("sched_process_fork", "sched_process_fork"),
    ("sched_process_exit", "sched_process_exit"),
];

/// BTF tracepoints attached when the kernel has them: (program, tracepoint,
/// what is lost without it).
pub const OPTIONAL: [(&str, &str, &str); 9] = [
    ("irq_handler_entry", "irq_handler_entry", "hard IRQ time"),
    ("irq_handler_exit", "irq_handler_exit", "hard IRQ time"),
    ("softirq_entry", "softirq_entry", "softirq time"),
    ("softirq_exit", "softirq_exit", "softirq time"),
    (
        "softirq_raise",
        "softirq_raise",
        "softirq raise-to-entry delay",
    ),
    ("page_fault_user", "page_fault_user", "user page faults"),
    (
        "sched_move_numa",
        "sched_move_numa",
        "NUMA balancing task moves",
    ),
    (
        "sched_swap_numa",
        "sched_swap_numa",
        "NUMA balancing task swaps",
    ),
    (
        "sched_stick_numa",
        "sched_stick_numa",
        "NUMA balancing failed moves",
    ),
];

/// Which processes the programs follow.
#[derive(Debug, Clone)]
pub enum Filter {
    /// One process (the fast path: a compare, no map lookup). With
    /// `follow_children`, the kernel switches to set mode at the first
    /// child process it follows.
    Single { tgid: u32, follow_children: bool },
    /// A set of processes, growing with forks when `follow_children`.
    Set {
        tgids: Vec<u32>,
        follow_children: bool,
    },
}

mod per_target;
mod read;
mod sched_trace;
pub use sched_trace::SchedTraceConfig;
mod threads;

/// What the programs are told before loading.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub filter: Filter,
    /// Follow only this thread.
    pub tid: Option<u32>,
    pub offsets: TaskOffsets,
    /// Charge waits to their preemptors (`read_preemptors`); the exporter,
    /// which does not report them, saves the work.
    pub preemptors: bool,
    /// Entries of the per-thread maps.
    pub max_threads: u32,
    /// Entries of the followed-process set.
    pub max_processes: u32,
    /// CPU -> LLC/node; `None` leaves migrations unclassified.
    pub topology: Option<Vec<(u32, CpuTopo)>>,
    pub window_ns: u64,
    /// 0 disables the outlier stream for that kind.
    pub outlier_runq_ns: u64,
    pub outlier_irq_ns: u64,
    /// Ring buffer size in bytes (a power of two, at least a page).
    pub ringbuf_bytes: u32,
    /// Turn on BPF run-time statistics for the programs' cost.
    pub self_stats: bool,
    /// Stream every page fault and migration of the target too.
    pub trace_events: bool,
    /// The scheduler trace stream for `--perfetto` (None: off).
    pub sched_trace: Option<SchedTraceConfig>,
    /// What decides which optional programs are left out.
    pub plan: PlanInputs,
    /// The per-target mode of the scheduler programs, with this many
    /// target indices (the exporter); None: per thread (record).
    pub per_target: Option<u32>,
}

/// Map size for a target with `threads` threads now: room for many more to be
/// created during the run (servers spawn worker pools), never tiny.
pub fn map_entries_for(threads: usize) -> u32 {
    let want = threads.saturating_mul(8).saturating_add(256);
    u32::try_from(want).unwrap_or(u32::MAX).clamp(1024, 1 << 20)
}

/// Loaded and attached programs. Dropping this detaches everything.
pub struct Probes {
    ebpf: Ebpf,
    events: Option<RingBuf<MapData>>,
    sched_trace: Option<RingBuf<MapData>>,
    _stats_fd: Option<OwnedFd>,
    /// Programs attached, in attach order.
    pub attached: Vec<&'static str>,
    /// Optional hooks this kernel lacks, with what is lost.
    pub unavailable: Vec<String>,
    /// Optional programs this run did not load, and why.
    pub left_out: Vec<LeftOut>,
    /// CLOCK_MONOTONIC when the first program was attached, and when the
    /// last one was.
    pub first_attached_ns: u64,
    pub all_attached_ns: u64,
    /// CLOCK_MONOTONIC when the object was loaded (maps made), before the
    /// first program was verified.
    pub loaded_ns: u64,
    /// Whether aya's loader parsed the kernel's BTF itself (the fallback of
    /// `startup::new_loader`).
    pub loader_parsed_btf: bool,
    /// `mm_migrate_pages` reason names on this kernel, read from tracefs
    /// while it was there (attach time).
    pub migrate_reasons: BTreeMap<i64, String>,
}

/// One thread's counters and run-queue wait histogram.
#[derive(Debug, Clone)]
pub struct ThreadCounters {
    pub stats: ThreadStats,
    pub hist: Vec<u64>,
}

impl From<&ThreadSlot> for ThreadCounters {
    fn from(s: &ThreadSlot) -> Self {
        let mut hist = s.hist.to_vec();
        for i in s.pending() {
            if let Some(b) = hist.get_mut(usize::from(*i)) {
                *b += 1;
            }
        }
        ThreadCounters {
            stats: s.stats,
            hist,
        }
    }
}

/// Run-time statistics of one program (BPF_ENABLE_STATS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgStats {
    pub name: &'static str,
    pub run_count: u64,
    pub run_time_ns: u64,
}

/// Offsets of `mm_migrate_pages` fields and its reason names, from tracefs.
#[derive(Debug, Clone, Default)]
pub struct MigrateFormat {
    pub succeeded: u32,
    pub failed: u32,
    pub reason: u32,
    pub reasons: BTreeMap<i64, String>,
}

fn map<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a aya::maps::Map> {
    ebpf.map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))
}

impl Probes {
    /// Load and attach with `btf`, the kernel's BTF parsed once by the
    /// caller: it gives the attach points' type ids and is handed to aya's
    /// loader, which does not parse its own (`startup::new_loader`).
    pub fn load_and_attach(cfg: &LoadConfig, btf: &Btf) -> Result<Self> {
        let (ebpf, tracefs, migrate, loader_parsed_btf) = load(cfg, btf)?;
        let loaded_ns = crate::record::monotonic_ns();
        let mut probes = attach(cfg, ebpf, btf, tracefs, migrate)?;
        probes.loaded_ns = loaded_ns;
        probes.loader_parsed_btf = loader_parsed_btf;
        Ok(probes)
    }
}

type Tracefs = Option<(std::path::PathBuf, bool)>;

/// Open the object with the run's settings, create and fill its maps.
fn load(cfg: &LoadConfig, btf: &Btf) -> Result<(Ebpf, Tracefs, Option<MigrateFormat>, bool)> {
    raise_memlock_limit();
    let (mode, tgid, follow) = match &cfg.filter {
        Filter::Single {
            tgid,
            follow_children,
        } => (filter::SINGLE_TGID, *tgid, u32::from(*follow_children)),
        Filter::Set {
            follow_children, ..
        } => (filter::TGID_SET, 0, u32::from(*follow_children)),
    };
    let topo_valid = u32::from(cfg.topology.is_some());
    let tid = cfg.tid.unwrap_or(0);
    // mm_migrate_pages is a classic tracepoint: its layout comes from tracefs.
    let tracefs = tracefs::ensure_mounted().ok();
    let migrate = tracefs.as_ref().and_then(|(p, _)| migrate_format(p));
    let mo = migrate.clone().unwrap_or_default();
    let (st_on, st_prio, st_bytes) = sched_trace::globals(cfg.sched_trace.as_ref());
    let pid_max = threads::read_pid_max(crate::procfs::ProcFs::default().root())?;
    let (tid_entries, tgid_words) = threads::map_sizes(pid_max);
    let hotpath_off = threads::hotpath_off_from_env()?;
    let (stamp_entries, target_words, targets) = match cfg.per_target {
        Some(n) => {
            per_target::check_targets(n)?;
            let (s, w) = per_target::map_sizes(pid_max);
            (s, w, n)
        }
        None => (1, 1, 1),
    };
    let (mut loader, loader_parsed_btf) = super::startup::new_loader(btf);
    let mut ebpf = loader
        .override_global("FILTER_MODE", &mode, true)
        .override_global("TARGET_TGID", &tgid, true)
        .override_global("TARGET_TID", &tid, true)
        .override_global("FOLLOW_CHILDREN", &follow, true)
        .override_global("TOPO_VALID", &topo_valid, true)
        .override_global("WINDOW_NS", &cfg.window_ns, true)
        .override_global("OUTLIER_RUNQ_NS", &cfg.outlier_runq_ns, true)
        .override_global("OUTLIER_IRQ_NS", &cfg.outlier_irq_ns, true)
        .override_global("TRACE_EVENTS", &u32::from(cfg.trace_events), true)
        .override_global("TASK_PID_OFF", &cfg.offsets.pid, true)
        .override_global("TASK_TGID_OFF", &cfg.offsets.tgid, true)
        .override_global("TASK_CPU_OFF", &cfg.offsets.cpu, true)
        .override_global("TASK_STATE_OFF", &cfg.offsets.state, true)
        .override_global("TASK_COMM_OFF", &cfg.offsets.comm, true)
        .override_global("TASK_SUM_EXEC_OFF", &cfg.offsets.sum_exec_runtime, true)
        .override_global(
            "TASK_PREV_SUM_EXEC_OFF",
            &cfg.offsets.prev_sum_exec_runtime,
            true,
        )
        .override_global("MIGRATE_OFF_SUCCEEDED", &mo.succeeded, true)
        .override_global("MIGRATE_OFF_FAILED", &mo.failed, true)
        .override_global("MIGRATE_OFF_REASON", &mo.reason, true)
        .map_max_entries("SLOTS", cfg.max_threads)
        .map_max_entries("TGIDS", cfg.max_processes)
        .map_max_entries("EVENTS", cfg.ringbuf_bytes)
        .override_global("SCHED_TRACE_ON", &st_on, true)
        .override_global("TASK_PRIO_OFF", &st_prio, true)
        .map_max_entries("SCHED_TRACE", st_bytes)
        .map_max_entries("TID_SLOT", tid_entries)
        .map_max_entries("TGID_BITS", tgid_words)
        .map_max_entries("THREADS", cfg.max_threads)
        .map_max_entries("FREE_SLOTS", cfg.max_threads)
        .override_global("THREADS_CAP", &cfg.max_threads, true)
        .override_global("HOTPATH_OFF", &hotpath_off, true)
        .override_global("PREEMPTORS_ON", &u32::from(cfg.preemptors), true)
        .override_global("PER_TARGET", &u32::from(cfg.per_target.is_some()), true)
        .map_max_entries("WAIT_STAMPS", stamp_entries)
        .map_max_entries("TGID_TARGET", target_words)
        .map_max_entries("TARGET_SCHED", targets)
        .load(EBPF_OBJECT)
        .context("loading tailprobe's eBPF object into the kernel")?;
    if let Some(topo) = &cfg.topology {
        let mut m: Array<&mut MapData, CpuTopo> = Array::try_from(
            ebpf.map_mut("CPU_TOPO")
                .ok_or_else(|| anyhow!("map CPU_TOPO missing"))?,
        )?;
        for (cpu, t) in topo {
            if *cpu < MAX_CPUS {
                m.set(*cpu, t, 0)
                    .with_context(|| format!("filling CPU_TOPO for CPU {cpu}"))?;
            }
        }
    }
    // The set holds every followed process in both modes: single mode
    // may turn into set mode at run time (a followed fork).
    let initial: Vec<u32> = match &cfg.filter {
        Filter::Set { tgids, .. } => tgids.clone(),
        Filter::Single { tgid, .. } => vec![*tgid],
    };
    for t in &initial {
        threads::follow_tgid(&mut ebpf, *t, 1)?;
    }
    Ok((ebpf, tracefs, migrate, loader_parsed_btf))
}

/// Attach the programs the run needs, required ones first.
fn attach(
    cfg: &LoadConfig,
    mut ebpf: Ebpf,
    btf: &Btf,
    tracefs: Tracefs,
    migrate: Option<MigrateFormat>,
) -> Result<Probes> {
    // Statistics first, so the very first runs are counted.
    let stats_fd = if cfg.self_stats {
        Some(aya::sys::enable_stats(aya::sys::Stats::RunTime).context(
            "turning on BPF run-time statistics (BPF_ENABLE_STATS); use --no-self-stats to skip",
        )?)
    } else {
        None
    };
    let mut attached = Vec::new();
    let mut first_attached_ns = 0;
    for (prog, tp) in REQUIRED {
        attach_btf(&mut ebpf, btf, prog, tp)?;
        if attached.is_empty() {
            first_attached_ns = crate::record::monotonic_ns();
        }
        attached.push(prog);
    }
    let left_out = plan::left_out(&cfg.plan);
    let mut unavailable = Vec::new();
    for (prog, tp, what) in OPTIONAL {
        if left_out.iter().any(|l| l.program == prog) {
            continue;
        }
        match attach_btf(&mut ebpf, btf, prog, tp) {
            Ok(()) => attached.push(prog),
            Err(e) => unavailable.push(format!(
                "{what}: tracepoint {tp} not available here ({e:#})"
            )),
        }
    }
    match (&migrate, tracefs.as_ref()) {
        (Some(_), Some(_)) => {
            let r: Result<()> = (|| {
                let p: &mut TracePoint = ebpf
                    .program_mut("mm_migrate_pages")
                    .ok_or_else(|| anyhow!("program mm_migrate_pages missing"))?
                    .try_into()?;
                p.load()?;
                p.attach("migrate", "mm_migrate_pages")?;
                Ok(())
            })();
            match r {
                Ok(()) => attached.push("mm_migrate_pages"),
                Err(e) => unavailable.push(format!(
                    "page migrations: migrate:mm_migrate_pages not attachable ({e:#})"
                )),
            }
        }
        _ => unavailable.push(
            "page migrations: migrate:mm_migrate_pages has no readable format file (tracefs)"
                .into(),
        ),
    }
    let events = ebpf
        .take_map("EVENTS")
        .map(RingBuf::try_from)
        .transpose()
        .context("opening the EVENTS ring buffer")?;
    let sched_trace = sched_trace::take_ring(&mut ebpf, cfg.sched_trace.is_some())?;
    // tracefs was needed for the format file and the classic tracepoint's
    // id, both read by now: a mount of ours goes at once, so a SIGKILL later
    // in the run cannot leave it behind (docs/security.md).
    if let Some((p, true)) = &tracefs {
        tracefs::unmount(p);
    }
    let migrate_reasons = migrate.map(|f| f.reasons).unwrap_or_default();
    Ok(Probes {
        ebpf,
        events,
        sched_trace,
        _stats_fd: stats_fd,
        attached,
        unavailable,
        left_out,
        first_attached_ns,
        all_attached_ns: crate::record::monotonic_ns(),
        loaded_ns: 0,
        loader_parsed_btf: false,
        migrate_reasons,
    })
}

fn attach_btf(ebpf: &mut Ebpf, btf: &Btf, prog: &str, tp: &str) -> Result<()> {
    let p: &mut BtfTracePoint = ebpf
        .program_mut(prog)
        .ok_or_else(|| anyhow!("program {prog} missing from the eBPF object"))?
        .try_into()?;
    p.load(tp, btf)
        .with_context(|| format!("verifying the {prog} program (BTF tracepoint {tp})"))?;
    p.attach()
        .with_context(|| format!("attaching to BTF tracepoint {tp}"))?;
    Ok(())
}

fn migrate_format(tracefs: &Path) -> Option<MigrateFormat> {
    let s = std::fs::read_to_string(tracefs.join("events/migrate/mm_migrate_pages/format")).ok()?;
    let f = tracefs::parse_format(&s);
    Some(MigrateFormat {
        succeeded: f.field("succeeded")?.offset,
        failed: f.field("failed")?.offset,
        reason: f.field("reason")?.offset,
        reasons: f.symbols("reason"),
    })
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; raise it where we
/// may (newer kernels use memory cgroups and ignore it).
fn raise_memlock_limit() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid pointer to an initialised rlimit; failure is harmless.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
}

#[cfg(test)]
mod counters_tests {
    use super::*;
    use probe_common::bucket_index;

    /// Waits still pending in a slot (not yet in its histogram) are counted
    /// by the reader: the histogram read equals one with every wait added.
    #[test]
    fn pending_waits_are_added_to_the_histogram() {
        let mut slot = ThreadSlot::ZERO;
        slot.hist[bucket_index(5_000)] = 2;
        let b = |v: u64| u16::try_from(bucket_index(v)).unwrap();
        slot.pend_n = 3;
        slot.pend[0] = b(5_000);
        slot.pend[1] = b(70_000);
        slot.pend[2] = b(u64::from(u32::MAX));
        // Beyond pend_n: stale, not counted.
        slot.pend[3] = 9;
        let c = ThreadCounters::from(&slot);
        assert_eq!(c.hist[bucket_index(5_000)], 3);
        assert_eq!(c.hist[bucket_index(70_000)], 1);
        assert_eq!(c.hist[bucket_index(u64::from(u32::MAX))], 1);
        assert_eq!(c.hist[9], 0);
        assert_eq!(c.hist.iter().sum::<u64>(), 5);
        // A torn read with a count beyond the array counts what is there.
        slot.pend_n = 99;
        assert_eq!(
            ThreadCounters::from(&slot).hist.iter().sum::<u64>(),
            2 + probe_common::PEND_WAITS as u64
        );
    }
}
