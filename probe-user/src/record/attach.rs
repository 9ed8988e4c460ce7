//! Load and attach: check what the run needs, read the kernel's BTF, size
//! the maps for the target, load and attach the programs (and the optional
//! ones asked for), and time it all.

use std::path::Path;

use anyhow::{Context as _, Result};

use super::{
    monotonic_ns, numa, priority,
    resolve::{Rescan, Resolved},
    RecordOptions, TargetSpec, PROCESS_START_NS,
};
use crate::{
    kernel::{
        btf_offsets::{self, TaskOffsets},
        loader::{map_entries_for, Filter, LoadConfig, Probes, SchedTraceConfig},
        plan::PlanInputs,
        startup,
    },
    privileges,
    procfs::ProcFs,
    report::AttachTime,
    sysfs,
};

/// The attached probes and what the rest of the run needs from setting
/// them up.
pub(super) struct Attached {
    pub probes: Probes,
    pub offsets: TaskOffsets,
    pub topology_known: bool,
    /// (run-queue, IRQ) outlier thresholds in ns as loaded.
    pub outlier_thresholds: (u64, u64),
    pub window_ns: u64,
    /// When the window series starts: before the probes, so the first
    /// events land in a window.
    pub attach_begin_ns: u64,
    /// BPF run-time statistics are on (asked for and permitted).
    pub self_stats: bool,
    pub follow_children: bool,
    pub numa_start: numa::Sample,
    pub attach_ms: AttachTime,
}

/// Refuse early: BPF, `--priority` that needs CAP_SYS_NICE, and BTF.
pub(super) fn require_privileges(opts: &RecordOptions) -> Result<()> {
    privileges::require_bpf("tailprobe record")?;
    if matches!(opts.priority, Some(priority::Priority::Fifo(_)))
        || matches!(opts.priority, Some(priority::Priority::Nice(n)) if n < 0)
    {
        privileges::require("tailprobe record --priority", &[privileges::Cap::SysNice])?;
    }
    privileges::require_btf()
}

/// Raise the recorder's priority (called after the target is started, so
/// that it keeps its own).
pub(super) fn apply_priority(prio: Option<priority::Priority>) -> Result<()> {
    if let Some(p) = prio {
        priority::apply(p).with_context(|| {
            format!("setting the recorder's priority to {p} (needs CAP_SYS_NICE; drop --priority)")
        })?;
        if matches!(p, priority::Priority::Fifo(_)) {
            startup::superseded();
        }
    }
    Ok(())
}

/// BPF run-time statistics, when asked for and permitted; a note when not.
fn self_stats_allowed(opts: &RecordOptions, notes: &mut Vec<String>) -> bool {
    // BPF_ENABLE_STATS is one of the few BPF commands that still needs
    // CAP_SYS_ADMIN; without it the recording goes on, unmeasured.
    let self_stats = opts.self_stats && privileges::has(privileges::Cap::SysAdmin);
    if opts.self_stats && !self_stats {
        notes.push(
            "probe cost not measured: BPF run-time statistics (BPF_ENABLE_STATS) need \
             CAP_SYS_ADMIN, which this process lacks"
                .into(),
        );
    }
    self_stats
}

/// Load and attach everything the options ask for on the resolved target.
pub(super) fn attach(
    opts: &RecordOptions,
    proc: &ProcFs,
    r: &Resolved,
    stamps: &mut startup::Stamps,
    notes: &mut Vec<String>,
) -> Result<Attached> {
    let self_stats = self_stats_allowed(opts, notes);
    stamps.target = monotonic_ns();
    // Read once, scanned for the offsets, parsed once for the attach points
    // and aya's loader (kernel/startup.rs).
    let raw_btf = std::fs::read(privileges::VMLINUX_BTF)
        .with_context(|| format!("reading {}", privileges::VMLINUX_BTF))?;
    stamps.btf_read = monotonic_ns();
    let offsets =
        btf_offsets::resolve(&raw_btf).context("resolving task_struct offsets from BTF")?;
    let sched_trace = opts.timeline.as_ref().map(|_| SchedTraceConfig {
        ring_bytes: crate::timeline::session::SCHED_RING_BYTES,
        prio_off: btf_offsets::resolve_prio(&raw_btf).unwrap_or(0),
    });
    stamps.btf_offsets = monotonic_ns();
    let btf = startup::parse_kernel_btf(&raw_btf)?;
    drop(raw_btf);
    stamps.btf_parse = monotonic_ns();
    let follow_children = opts.follow_children || matches!(opts.target, TargetSpec::Command(_));
    let (cfg, numa_start) = load_config(
        opts,
        proc,
        r,
        follow_children,
        self_stats,
        offsets,
        sched_trace,
    );
    // Windows start before the probes do, so the first events land in one.
    let attach_begin_ns = monotonic_ns();
    stamps.config = attach_begin_ns;
    let mut probes = Probes::load_and_attach(&cfg, &btf)?;
    attach_optional(opts, &mut probes, &btf);
    drop(btf);
    stamps.loaded = probes.loaded_ns;
    stamps.attached = probes.all_attached_ns;
    // Every program is attached: the start-up priority goes.
    if let Err(e) = startup::end_boost() {
        notes.push(e);
    }
    notes.extend(startup::refusal_note());
    let attach_ms = attach_time(&probes, opts.priority, stamps);
    Ok(Attached {
        probes,
        offsets,
        topology_known: cfg.topology.is_some(),
        outlier_thresholds: (cfg.outlier_runq_ns, cfg.outlier_irq_ns),
        window_ns: cfg.window_ns,
        attach_begin_ns,
        self_stats,
        follow_children,
        numa_start,
        attach_ms,
    })
}

/// The loader's configuration for this target, and the target's NUMA state
/// now (which also decides which NUMA programs are loaded).
fn load_config(
    opts: &RecordOptions,
    proc: &ProcFs,
    r: &Resolved,
    follow_children: bool,
    self_stats: bool,
    offsets: TaskOffsets,
    sched_trace: Option<SchedTraceConfig>,
) -> (LoadConfig, numa::Sample) {
    let threads_now: usize = r.tgids.iter().map(|t| proc.threads(*t).len()).sum();
    let topology = sysfs::topology::cpu_topology(Path::new("/sys"));
    // One process, even when its children are to be followed: the kernel
    // moves to the (costlier) set filter only when a child appears.
    let multi = !matches!(r.rescan, Rescan::None) || r.tgids.len() != 1;
    let filter = if multi {
        Filter::Set {
            tgids: r.tgids.clone(),
            follow_children,
        }
    } else {
        Filter::Single {
            tgid: r.tgids[0],
            follow_children,
        }
    };
    let numa_start = numa::Sample::take(&r.tgids);
    let cfg = LoadConfig {
        filter,
        tid: r.tid,
        offsets,
        preemptors: true,
        max_threads: opts
            .max_threads
            .unwrap_or_else(|| map_entries_for(threads_now)),
        max_processes: 4096,
        topology,
        window_ns: opts.window.as_nanos() as u64,
        outlier_runq_ns: opts.outlier_runq.as_nanos() as u64,
        outlier_irq_ns: opts.outlier_irq.as_nanos() as u64,
        ringbuf_bytes: 1 << 20,
        self_stats,
        trace_events: opts.trace_events || sched_trace.is_some(),
        sched_trace,
        plan: PlanInputs {
            irq: opts.irq,
            numa_nodes: numa_start.nodes,
            numa_balancing: numa_start.balancing,
        },
        // Per thread: every number record reports.
        per_target: None,
    };
    (cfg, numa_start)
}

/// The programs asked for on top of the plan; one that cannot attach is
/// named in `unavailable` and the run goes on without it.
fn attach_optional(opts: &RecordOptions, probes: &mut Probes, btf: &aya::Btf) {
    if opts.wake_edges {
        if let Err(e) = probes.attach_wake_edges(btf) {
            probes.unavailable.push(format!(
                "who woke whom: sched_wakeup_edges not attachable ({e:#})"
            ));
        }
    }
    if opts.cpu_idle {
        if let Err(e) = probes.attach_cpu_idle(btf) {
            probes.unavailable.push(format!(
                "idle states: cpu_idle not attachable on power:cpu_idle ({e:#})"
            ));
        }
    }
}

fn attach_time(
    probes: &Probes,
    prio: Option<priority::Priority>,
    stamps: &startup::Stamps,
) -> AttachTime {
    let start = PROCESS_START_NS.get().copied().unwrap_or(0);
    let ms = |t: u64| t.saturating_sub(start) as f64 / 1e6;
    AttachTime {
        first: ms(probes.first_attached_ns),
        all: ms(probes.all_attached_ns),
        process_start_monotonic_ns: start,
        first_attached_monotonic_ns: probes.first_attached_ns,
        all_attached_monotonic_ns: probes.all_attached_ns,
        priority: prio.map_or_else(|| "default".to_string(), |p| p.to_string()),
        startup_priority: startup::describe(),
        phases: stamps.phases(),
        loader_parsed_btf: probes.loader_parsed_btf,
    }
}
