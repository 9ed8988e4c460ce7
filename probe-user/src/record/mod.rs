//! A recording session: resolve the target, attach, follow it until the
//! duration, Ctrl-C or its exit, then collect everything and build the report.

mod assemble;
mod numa;
pub mod priority;
pub mod target;
pub mod thread_sched;
mod watch;
pub mod windows;

use std::{
    collections::BTreeMap,
    io::{IsTerminal as _, Write as _},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, OnceLock,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use probe_common::event;

use crate::{
    kernel::{
        btf_offsets,
        loader::{map_entries_for, Filter, LoadConfig, Probes, SchedTraceConfig, ThreadCounters},
        plan::PlanInputs,
        startup,
    },
    privileges,
    procfs::ProcFs,
    report::{AttachTime, EndReason, Outlier, RecordReport, Target},
    signals, sysfs,
};

pub use target::TargetSpec;
pub use watch::ThreadBook;

/// What to record and how.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    pub target: TargetSpec,
    /// The target is tailprobe's own built-in workload.
    pub builtin: bool,
    /// Follow child processes of the target(s).
    pub follow_children: bool,
    /// None: until a launched command exits (10 s for other targets).
    pub duration: Option<Duration>,
    /// Width of the time-series windows (0: none).
    pub window: Duration,
    /// Stream run-queue waits at or above this (0: none).
    pub outlier_runq: Duration,
    /// Stream IRQ/softirq runs on target threads at or above this (0: none).
    pub outlier_irq: Duration,
    /// Outliers kept in the report (more are counted).
    pub max_outliers: usize,
    /// Time the probes with BPF run-time statistics.
    pub self_stats: bool,
    /// Override of the per-thread map size.
    pub max_threads: Option<u32>,
    /// How often to check the target and drain the kernel's stream.
    pub poll: Duration,
    /// Progress on stderr (only when it is a terminal).
    pub progress: bool,
    /// Called once the probes are attached (tests and scripts sync on it).
    pub on_attached: Option<Callback>,
    /// Set by the caller to end the recording (EndReason::Stopped).
    pub stop: Option<Arc<AtomicBool>>,
    /// Stream every page fault and migration of the target as events, for
    /// exact per-request attribution (use with thresholds of 1 ns to stream
    /// every run-queue wait and IRQ too).
    pub trace_events: bool,
    /// Send a launched command's stdout to /dev/null.
    pub quiet_command: bool,
    /// Charge hard IRQ and softirq time (false: those programs are not loaded).
    pub irq: bool,
    /// Raise the recording thread's priority after the target is started.
    pub priority: Option<priority::Priority>,
    /// Also count who woke whom among the target's threads (an extra
    /// program on sched_wakeup; `report.wake_edges`).
    pub wake_edges: bool,
    /// Attach the idle-state program (`cpu_idle` on `power:cpu_idle`;
    /// `report.cpu_idle`).
    pub cpu_idle: bool,
    /// Write the scheduler stream, IRQs, page faults and migrations into
    /// this Perfetto trace (implies `trace_events`); the caller finishes it.
    pub timeline: Option<crate::timeline::SharedTimeline>,
}

impl RecordOptions {
    pub fn new(target: TargetSpec) -> Self {
        RecordOptions {
            target,
            builtin: false,
            follow_children: false,
            duration: Some(Duration::from_secs(10)),
            window: Duration::from_millis(10),
            outlier_runq: Duration::from_millis(1),
            outlier_irq: Duration::from_micros(100),
            max_outliers: 10_000,
            self_stats: true,
            max_threads: None,
            poll: Duration::from_millis(100),
            progress: false,
            on_attached: None,
            stop: None,
            trace_events: false,
            quiet_command: false,
            irq: true,
            priority: None,
            wake_edges: false,
            cpu_idle: false,
            timeline: None,
        }
    }
}

/// A callback with the main pid, shareable across threads.
#[derive(Clone)]
pub struct Callback(pub Arc<dyn Fn(u32) + Send + Sync>);

impl std::fmt::Debug for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Callback")
    }
}

impl Callback {
    pub fn new(f: impl Fn(u32) + Send + Sync + 'static) -> Self {
        Callback(Arc::new(f))
    }
}

static PROCESS_START_NS: OnceLock<u64> = OnceLock::new();

/// Stamp the process's start (first thing in `main`): `attach_ms` counts
/// from here. Without it, from the start of [`run`].
pub fn mark_process_start() {
    PROCESS_START_NS.get_or_init(monotonic_ns);
}

/// CLOCK_MONOTONIC now, in ns (lives in `tailprobe_system::clock`).
pub use tailprobe_system::clock::monotonic_ns;

/// How often the target's pages per node are sampled during a run.
const NUMA_SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Resolved target: processes to follow now, and how to find more.
struct Resolved {
    tgids: Vec<u32>,
    tid: Option<u32>,
    comm: String,
    notes: Vec<String>,
    rescan: Rescan,
}

enum Rescan {
    None,
    Comm(String),
    Cgroup(PathBuf),
}

fn resolve(proc: &ProcFs, spec: &TargetSpec, launched_pid: Option<u32>) -> Result<Resolved> {
    let mut notes = Vec::new();
    let one = |pid: u32, notes: &mut Vec<String>| -> Result<(u32, String)> {
        let (tgid, comm) = proc.check_target(pid)?;
        if tgid != pid {
            notes.push(format!(
                "pid {pid} is a thread of process {tgid}: recording the whole process"
            ));
        }
        Ok((tgid, comm))
    };
    Ok(match spec {
        TargetSpec::Pid(p) => {
            let (tgid, comm) = one(*p, &mut notes)?;
            Resolved {
                tgids: vec![tgid],
                tid: None,
                comm,
                notes,
                rescan: Rescan::None,
            }
        }
        TargetSpec::Tid(t) => {
            let (tgid, _) = proc.check_target(*t)?;
            let comm = proc.thread_comm(tgid, *t).unwrap_or_default();
            Resolved {
                tgids: vec![tgid],
                tid: Some(*t),
                comm,
                notes,
                rescan: Rescan::None,
            }
        }
        TargetSpec::Command(_) => {
            let pid = launched_pid.context("internal: command not launched")?;
            let comm = proc.stat(pid).map(|s| s.comm).unwrap_or_default();
            Resolved {
                tgids: vec![pid],
                tid: None,
                comm,
                notes,
                rescan: Rescan::None,
            }
        }
        TargetSpec::Comm(name) => {
            let tgids = target::pids_by_comm(proc, name);
            if tgids.is_empty() {
                bail!("no process is named {name:?} (comm, at most 15 characters; see `ps -e -o comm`)");
            }
            Resolved {
                tgids,
                tid: None,
                comm: name.clone(),
                notes,
                rescan: Rescan::Comm(name.clone()),
            }
        }
        TargetSpec::Cgroup(path) => in_cgroup(
            target::cgroup_dir(Path::new(target::CGROUP_ROOT), path)?,
            notes,
        ),
        TargetSpec::Group(g) => in_cgroup(g.dir.clone(), notes),
    })
}

/// Every process under a cgroup directory now, and rescan it for more.
fn in_cgroup(dir: PathBuf, mut notes: Vec<String>) -> Resolved {
    let tgids = target::pids_in_cgroup_tree(&dir);
    if tgids.is_empty() {
        notes.push(format!(
            "cgroup {} has no process yet: waiting for some",
            dir.display()
        ));
    }
    Resolved {
        tgids,
        tid: None,
        comm: dir.display().to_string(),
        notes,
        rescan: Rescan::Cgroup(dir),
    }
}

pub fn run(opts: &RecordOptions) -> Result<RecordReport> {
    mark_process_start();
    let mut stamps = startup::Stamps {
        process_start: PROCESS_START_NS.get().copied().unwrap_or(0),
        setup: monotonic_ns(),
        ..startup::Stamps::default()
    };
    privileges::require_bpf("tailprobe record")?;
    if matches!(opts.priority, Some(priority::Priority::Fifo(_)))
        || matches!(opts.priority, Some(priority::Priority::Nice(n)) if n < 0)
    {
        privileges::require("tailprobe record --priority", &[privileges::Cap::SysNice])?;
    }
    privileges::require_btf()?;
    let proc = ProcFs::default();
    let mut launched = match &opts.target {
        TargetSpec::Command(argv) => Some(target::Launched::start(argv, opts.quiet_command)?),
        _ => None,
    };
    // After the target is started, so that it keeps its own priority.
    if let Some(p) = opts.priority {
        priority::apply(p).with_context(|| {
            format!("setting the recorder's priority to {p} (needs CAP_SYS_NICE; drop --priority)")
        })?;
        if matches!(p, priority::Priority::Fifo(_)) {
            startup::superseded();
        }
    }
    let r = resolve(&proc, &opts.target, launched.as_ref().map(|l| l.pid()))?;
    let mut notes = r.notes;
    // Pids inside the targets' PID namespaces, read now and at the end (a
    // process that exits in between keeps the one read here).
    let mut ns_pids: BTreeMap<u32, u32> = r
        .tgids
        .iter()
        .filter_map(|p| Some((*p, target::members::ns_pid(proc.root(), *p)?)))
        .collect();
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
    let threads_now: usize = r.tgids.iter().map(|t| proc.threads(*t).len()).sum();
    let topology = sysfs::topology::cpu_topology(Path::new("/sys"));
    let follow_children = opts.follow_children || matches!(opts.target, TargetSpec::Command(_));
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
    let window_ns = opts.window.as_nanos() as u64;
    let numa_start = numa::Sample::take(&r.tgids);
    let cfg = LoadConfig {
        filter,
        tid: r.tid,
        offsets,
        max_threads: opts
            .max_threads
            .unwrap_or_else(|| map_entries_for(threads_now)),
        max_processes: 4096,
        topology: topology.clone(),
        window_ns,
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
    };
    // Windows start before the probes do, so the first events land in one.
    let attach_begin_ns = monotonic_ns();
    stamps.config = attach_begin_ns;
    let mut probes = Probes::load_and_attach(&cfg, &btf)?;
    if opts.wake_edges {
        if let Err(e) = probes.attach_wake_edges(&btf) {
            probes.unavailable.push(format!(
                "who woke whom: sched_wakeup_edges not attachable ({e:#})"
            ));
        }
    }
    if opts.cpu_idle {
        if let Err(e) = probes.attach_cpu_idle(&btf) {
            probes.unavailable.push(format!(
                "idle states: cpu_idle not attachable on power:cpu_idle ({e:#})"
            ));
        }
    }
    drop(btf);
    stamps.loaded = probes.loaded_ns;
    stamps.attached = probes.all_attached_ns;
    // Every program is attached: the start-up priority goes.
    if let Err(e) = startup::end_boost() {
        notes.push(e);
    }
    notes.extend(startup::refusal_note());
    let attach_ms = attach_time(&probes, opts.priority, &stamps);
    if let Some(l) = launched.as_mut() {
        l.release()?;
    }
    let start_ns = monotonic_ns();
    let started = Instant::now();
    let mut book = ThreadBook::start(&proc, &r.tgids, r.tid, &|t| probes.thread_runq_total(t));
    let main_pid = r.tgids.first().copied().unwrap_or(0);
    if let Some(cb) = &opts.on_attached {
        (cb.0)(main_pid);
    }
    let duration = match (opts.duration, &launched) {
        (Some(d), _) => d,
        (None, Some(_)) => Duration::MAX,
        (None, None) => Duration::from_secs(10),
    };
    let mut series = windows::WindowSeries::new(window_ns, attach_begin_ns);
    let mut stream = Stream {
        max: opts.max_outliers,
        ..Stream::default()
    };
    let mut harvested: BTreeMap<u32, ThreadCounters> = BTreeMap::new();
    let mut last_window_drain = Instant::now();
    let mut last_numa_sample = Instant::now();
    let mut numa_samples: Vec<(u64, BTreeMap<u32, u64>)> = Vec::new();
    let mut command_exit_code = None;
    let show_progress = opts.progress && std::io::stderr().is_terminal();
    let window_drain_every = Duration::from_nanos(
        (window_ns.saturating_mul(probe_common::WINDOW_SLOTS as u64) / 4)
            .clamp(50_000_000, 1_000_000_000),
    );
    let end_reason = loop {
        let elapsed = started.elapsed();
        if elapsed >= duration {
            break EndReason::Duration;
        }
        if signals::stop_requested() {
            break EndReason::Interrupted;
        }
        if opts.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
            break EndReason::Stopped;
        }
        if let Some(l) = launched.as_mut() {
            if let Ok(Some(st)) = l.child.try_wait() {
                command_exit_code = st.code();
                if opts.builtin {
                    break EndReason::TargetExited;
                }
                break EndReason::CommandExited;
            }
        } else if matches!(r.rescan, Rescan::None) && !follow_children && !proc.is_alive(main_pid) {
            break EndReason::TargetExited;
        }
        // Kernel stream: outliers, thread exits, followed forks.
        let evs = probes.drain_events();
        if let Some(tl) = &opts.timeline {
            crate::timeline::session::feed(tl, &mut probes, &evs)?;
        }
        for ev in evs {
            stream.take(&ev, &mut book, &proc);
        }
        // New processes for --comm / --cgroup.
        let found = match &r.rescan {
            Rescan::None => Vec::new(),
            Rescan::Comm(name) => target::pids_by_comm(&proc, name),
            Rescan::Cgroup(dir) => target::pids_in_cgroup_tree(dir),
        };
        for tgid in found {
            if !book.processes().contains(&tgid) {
                probes.follow(tgid)?;
                book.add_process(&proc, tgid);
            }
        }
        book.refresh(&proc);
        // Harvest exited threads once their last switch-out is in.
        let ripe: Vec<u32> = stream
            .exits
            .iter()
            .filter(|(_, at)| at.elapsed() > Duration::from_millis(300))
            .map(|(t, _)| *t)
            .collect();
        stream
            .exits
            .retain(|(_, at)| at.elapsed() <= Duration::from_millis(300));
        for tid in ripe {
            if let Some(c) = probes.harvest_thread(tid)? {
                merge_counters(&mut harvested, tid, c);
            }
        }
        if last_numa_sample.elapsed() >= NUMA_SAMPLE_EVERY {
            numa_samples.push((monotonic_ns(), numa::kib_per_node(&book.processes())));
            last_numa_sample = Instant::now();
        }
        if last_window_drain.elapsed() >= window_drain_every {
            // Slack: an event stamped just before a boundary may reach its
            // slot later (windows::DRAIN_SLACK_MIN_NS says why).
            series.drain(
                &probes.read_windows()?,
                monotonic_ns().saturating_sub(windows::drain_slack_ns(
                    window_ns,
                    u64::from(probe_common::WINDOW_SLOTS),
                )),
            );
            last_window_drain = Instant::now();
        }
        if show_progress {
            let total = if duration == Duration::MAX {
                "until the command exits".to_string()
            } else {
                format!("{:.1} s", duration.as_secs_f64())
            };
            eprint!(
                "\rrecording {} ({}): {:.1} s of {total}, {} threads, {} outliers   ",
                opts.target.describe(),
                r.comm,
                elapsed.as_secs_f64(),
                book.len(),
                stream.outliers.len() as u64 + stream.not_kept
            );
            let _ = std::io::stderr().flush();
        }
        std::thread::sleep(opts.poll.min(duration.saturating_sub(elapsed)));
    };
    if show_progress {
        eprint!("\r{:100}\r", "");
    }
    if matches!(
        end_reason,
        EndReason::TargetExited | EndReason::CommandExited
    ) {
        // The exiting threads' last switch-out comes just after /proc shows
        // the process gone: give it a moment to reach the maps.
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in book.processes() {
        if let Some(n) = target::members::ns_pid(proc.root(), pid) {
            ns_pids.insert(pid, n);
        }
    }
    // Kernel accounting first, then our maps, then detach (drop).
    book.finish(&proc, &|t| probes.thread_runq_total(t));
    let end_ns = monotonic_ns();
    let evs = probes.drain_events();
    if let Some(tl) = &opts.timeline {
        crate::timeline::session::feed(tl, &mut probes, &evs)?;
        crate::timeline::session::feed_end(tl, &probes);
    }
    for ev in evs {
        stream.take(&ev, &mut book, &proc);
    }
    if let Some(w) = end_ns.checked_div(window_ns) {
        series.drain(&probes.read_windows()?, (w + 1) * window_ns);
    }
    let mut counters = probes.read_threads()?;
    for (tid, c) in harvested {
        merge_counters(&mut counters, tid, c);
    }
    let prog_stats = probes.program_stats();
    let wake_edges = if probes.attached.contains(&"sched_wakeup_edges") {
        probes.read_wake_edges()?
    } else {
        BTreeMap::new()
    };
    let cpu_idle = if probes.attached.contains(&"cpu_idle") {
        let cost = prog_stats.iter().find(|p| p.name == "cpu_idle");
        Some(crate::report::CpuIdleReport {
            states: probes
                .read_cpu_idle()?
                .into_iter()
                .map(|(state, exits, residency_ns)| crate::report::IdleStateUse {
                    state,
                    exits,
                    residency_ns,
                })
                .collect(),
            program_runs: cost.map_or(0, |c| c.run_count),
            program_run_time_ns: cost.map_or(0, |c| c.run_time_ns),
        })
    } else {
        None
    };
    let inputs = assemble::Inputs {
        target: Target {
            kind: if opts.builtin {
                "builtin"
            } else {
                opts.target.kind()
            },
            spec: opts.target.describe(),
            pid: main_pid,
            comm: r.comm,
            cmdline: proc.cmdline(main_pid).unwrap_or_default(),
            tid: r.tid,
            processes: book.processes(),
            builtin: opts.builtin,
            command_exit_code,
            cgroup: match &r.rescan {
                Rescan::Cgroup(d) => Some(d.display().to_string()),
                _ => None,
            },
            runtime: match &opts.target {
                TargetSpec::Group(g) => g.runtime,
                _ => None,
            },
            ns_pid: ns_pids.get(&main_pid).copied(),
            ns_pids,
        },
        start_ns,
        end_ns,
        end_reason,
        counters,
        losses: probes.read_losses()?,
        irqs: probes.read_irqs()?,
        irq_names: irq_names(),
        softirqs: probes.read_softirqs()?,
        softirq_delay: probes.read_softirq_delay()?,
        cpu_stats: probes.read_cpu_stats()?,
        preemptors: fresh_comms(probes.read_preemptors()?),
        migrate_pages: probes.read_migrate_pages()?,
        migrate_reason_names: probes.migrate_reasons.clone(),
        numa_start,
        numa_end: numa::Sample::take(&book.processes()),
        numa_samples,
        windows: series.windows,
        window_ns,
        outliers: stream.outliers,
        outliers_not_kept: stream.not_kept,
        outlier_thresholds: (cfg.outlier_runq_ns, cfg.outlier_irq_ns),
        prog_stats: self_stats.then_some(prog_stats),
        thread_slots: probes.slot_use()?,
        unavailable: probes.unavailable.clone(),
        left_out: probes.left_out.clone(),
        attach_ms,
        book,
        offsets,
        topology_known: topology.is_some(),
        notes: std::mem::take(&mut notes),
    };
    drop(probes);
    if end_reason == EndReason::TargetExited && !opts.builtin {
        notes.push("the target exited during the run: this is what was seen until then".into());
    }
    let mut report = assemble::build(inputs);
    report.notes.extend(notes);
    report.cpu_idle = cpu_idle;
    report.wake_edges = wake_edges
        .into_iter()
        .map(|((waker_tid, wakee_tid), count)| crate::report::WakeEdge {
            waker_tid,
            wakee_tid,
            count,
        })
        .collect();
    Ok(report)
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

fn merge_counters(into: &mut BTreeMap<u32, ThreadCounters>, tid: u32, c: ThreadCounters) {
    match into.get_mut(&tid) {
        None => {
            into.insert(tid, c);
        }
        Some(e) => {
            e.stats.add(&c.stats);
            crate::stats::merge(&mut e.hist, &c.hist);
        }
    }
}

/// What the kernel streamed: outliers (kept up to `max`), and threads that
/// exited, to harvest once their last switch-out is in.
#[derive(Default)]
struct Stream {
    outliers: Vec<Outlier>,
    not_kept: u64,
    max: usize,
    exits: Vec<(u32, Instant)>,
}

impl Stream {
    fn take(&mut self, ev: &probe_common::Event, book: &mut ThreadBook, proc: &ProcFs) {
        let kind = match ev.kind {
            event::RUNQ_OUTLIER => "runq_wait",
            event::HARDIRQ_OUTLIER => "hardirq",
            event::SOFTIRQ_OUTLIER => "softirq",
            event::PAGE_FAULT => "page_fault",
            event::MIGRATION => "migration",
            event::THREAD_EXIT => {
                book.note_thread(ev.tid, ev.tgid);
                self.exits.push((ev.tid, Instant::now()));
                return;
            }
            event::PROCESS_FORK => {
                book.add_process(proc, ev.aux);
                return;
            }
            _ => return,
        };
        if self.outliers.len() >= self.max {
            self.not_kept += 1;
            return;
        }
        self.outliers.push(Outlier {
            ts_ns: ev.ts_ns,
            kind,
            tid: ev.tid,
            tgid: ev.tgid,
            cpu: ev.cpu,
            value_ns: ev.value_ns,
            preempted_by: (ev.kind == event::RUNQ_OUTLIER && ev.aux != 0).then_some(ev.aux),
            irq: matches!(ev.kind, event::HARDIRQ_OUTLIER | event::SOFTIRQ_OUTLIER)
                .then_some(ev.aux),
            from_cpu: (ev.kind == event::MIGRATION && ev.aux >> 16 != 0xffff)
                .then_some(ev.aux >> 16),
        });
    }
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
    mut p: BTreeMap<u32, probe_common::Preemptor>,
) -> BTreeMap<u32, probe_common::Preemptor> {
    for (pid, v) in p.iter_mut() {
        if *pid == 0 {
            continue;
        }
        if let Ok(c) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
            let c = c.trim_end_matches('\n').as_bytes();
            let mut buf = [0u8; 16];
            let n = c.len().min(15);
            buf[..n].copy_from_slice(&c[..n]);
            v.comm = buf;
        }
    }
    p
}
