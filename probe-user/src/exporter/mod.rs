//! `tailprobe exporter`: an always-on Prometheus exporter. The programs
//! are `record`'s, with windows, outliers and event traces off, and the
//! scheduler programs in their per-target mode: waits, switches, on-CPU
//! time and wakeups are kept per CPU and per target index in the kernel.
//! The rarer events keep per-thread slots; each scrape folds both per
//! target. The only records the kernel sends are thread exits, so an
//! exited thread's slot is harvested into its target's totals and freed.
//!
//! - `targets`: selectors re-evaluated every rescan, bounded names.
//! - `index`:   target names -> the kernel's target indices (pure).
//! - `fold`:    per-thread slots and per-target totals -> per-target
//!   counters (pure).
//! - `render`:  Prometheus text / OpenMetrics exposition (pure).
//! - `http`:    the `/metrics` server, polled from this loop.
//! - `own`:     the exporter's own cost; the targets' memory per node.
//! - `caps`:    the capabilities it needs (no root uid required).

pub mod fold;
pub mod http;
pub mod index;
pub mod own;
pub mod render;
pub mod targets;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::privileges::caps::BpfStats;
use anyhow::{Context as _, Result};
use probe_common::{event, CpuTopo};

use crate::{
    kernel::{
        btf_offsets,
        loader::{Filter, LoadConfig, Probes},
        plan::PlanInputs,
    },
    node::Roots,
    privileges,
    procfs::{self, ProcFs},
    record, signals, sysfs,
};

use self::{
    fold::Ledger,
    index::Indices,
    render::{Format, ProgramView, Snapshot, TargetView},
    targets::{Book, Resolver, Selector},
};

/// What `tailprobe exporter` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub selectors: Vec<Selector>,
    pub cgroup_children: bool,
    pub listen: String,
    pub max_targets: usize,
    pub rescan: Duration,
    pub duration: Option<Duration>,
    pub irq: bool,
    pub self_stats: bool,
    pub buckets_per_octave: u32,
    pub memory_every: Duration,
    pub max_threads: u32,
    /// A target name with no process for this long is dropped.
    pub forget_after: Duration,
}

/// How long after a thread's exit record its slot is harvested (its last
/// switch-out must be in).
const HARVEST_AFTER: Duration = Duration::from_millis(300);
/// How often slots of threads that are gone without an exit record (a
/// full ring) are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// How often the programs' CPU share is sampled.
const CPU_SHARE_EVERY: Duration = Duration::from_secs(10);
/// How long a removed process's name is remembered for its late exits.
const REMEMBER_GONE: Duration = Duration::from_secs(60);
/// The loop's tick (scrapes wait at most this long).
const TICK: Duration = Duration::from_millis(50);

struct State {
    probes: Probes,
    book: Book,
    ledger: Ledger,
    /// Target name -> the kernel's per-target index.
    indices: Indices,
    /// Recently removed processes: tgid -> (name, when).
    gone: BTreeMap<u32, (String, Instant)>,
    memory: BTreeMap<String, own::Memory>,
    share: own::CpuShare,
    /// The exporter's own losses, by reason.
    own_losses: BTreeMap<String, u64>,
    topology: Option<Vec<(u32, CpuTopo)>>,
    buckets_per_octave: u32,
    forget_after: Duration,
    start_time_seconds: f64,
    /// `/proc`, for the exporter's own CPU time and memory.
    proc: ProcFs,
}

impl State {
    fn names(&self) -> BTreeMap<u32, String> {
        let mut n: BTreeMap<u32, String> = self
            .gone
            .iter()
            .map(|(t, (name, _))| (*t, name.clone()))
            .collect();
        n.extend(self.book.names.iter().map(|(t, s)| (*t, s.clone())));
        n
    }

    fn lose(&mut self, reason: &str) {
        *self.own_losses.entry(reason.to_string()).or_default() += 1;
    }

    fn snapshot(&mut self) -> Snapshot {
        let names = self.names();
        let live = match self.probes.read_threads() {
            Ok(l) => l,
            Err(_) => {
                self.lose("map_read_failed");
                BTreeMap::new()
            }
        };
        let mut aggs = self.ledger.fold(&live, &names);
        let mut read_failed = false;
        for (name, i) in self.indices.iter() {
            match self.probes.read_target_sched(i) {
                Ok(t) => aggs.entry(name.to_string()).or_default().add_sched(&t),
                Err(_) => read_failed = true,
            }
        }
        if read_failed {
            self.lose("map_read_failed");
        }
        let procs = self.book.processes();
        let mut targets = BTreeMap::new();
        for (name, kind) in &self.book.kinds {
            let mem = self.memory.get(name).cloned().unwrap_or_default();
            let mut agg = aggs.get(name).cloned().unwrap_or_default();
            // Threads of its processes now, from /proc (the kernel keeps
            // no per-thread state for most of them in per-target mode).
            agg.threads = procs.get(name.as_str()).map_or(0, |v| {
                v.iter().map(|t| self.proc.threads(*t).len() as u64).sum()
            });
            targets.insert(
                name.clone(),
                TargetView {
                    kind,
                    agg,
                    processes: procs.get(name.as_str()).map_or(0, |v| v.len() as u64),
                    memory_per_node: mem.per_node,
                    remote_ratio: mem.remote_ratio,
                },
            );
        }
        let programs: Vec<ProgramView> = self
            .probes
            .program_stats()
            .into_iter()
            .map(|p| ProgramView {
                name: p.name,
                runs: p.run_count,
                run_ns: p.run_time_ns,
            })
            .collect();
        let mut losses: BTreeMap<String, u64> = BTreeMap::new();
        let mut rebuilt_switch_ins = 0;
        match self.probes.read_losses() {
            Ok(l) => {
                for (name, per_cpu) in l {
                    let n = per_cpu.iter().sum();
                    if probe_common::loss::is_loss(name) {
                        losses.insert(name.to_string(), n);
                    } else {
                        rebuilt_switch_ins += n;
                    }
                }
            }
            Err(_) => self.lose("map_read_failed"),
        }
        let unowned = self.ledger.unowned_slots;
        losses.insert("thread_without_target".into(), unowned);
        for r in ["map_read_failed", "follow_failed"] {
            losses.insert(r.into(), self.own_losses.get(r).copied().unwrap_or(0));
        }
        Snapshot {
            targets,
            topology_known: self.topology.is_some(),
            programs,
            probe_cpu_ratio: self.share.ratio,
            losses,
            rebuilt_switch_ins,
            exporter_cpu_seconds: own::self_cpu_seconds(&self.proc),
            exporter_rss_bytes: own::self_rss_bytes(&self.proc),
            start_time_seconds: self.start_time_seconds,
            buckets_per_octave: self.buckets_per_octave,
        }
    }

    fn rescan(&mut self, resolver: &mut Resolver) {
        let found = resolver.scan();
        let proc = resolver.proc.clone();
        let old = self.book.names.clone();
        let ch = self.book.apply(&found, &|p| proc.is_alive(p));
        for t in &ch.removed {
            if let Some(n) = old.get(t) {
                self.gone.insert(*t, (n.clone(), Instant::now()));
            }
            let tids = proc.threads(*t);
            if self.probes.unfollow_as(*t, &tids).is_err() {
                self.lose("follow_failed");
            }
        }
        for t in &ch.added {
            self.gone.remove(t);
            // Every name has an index: there are max_targets + 1 of them
            // ("other" included) and the book names no more.
            let index = self.book.names.get(t).and_then(|n| self.indices.assign(n));
            let ok = index.is_some_and(|i| self.probes.follow_as(*t, i).is_ok());
            if !ok {
                self.lose("follow_failed");
            }
        }
        self.gone.retain(|_, (_, at)| at.elapsed() < REMEMBER_GONE);
        for name in self.book.forget_idle(self.forget_after) {
            self.ledger.retired.remove(&name);
            self.memory.remove(&name);
            if let Some(i) = self.indices.release(&name) {
                if self.probes.clear_target_sched(i).is_err() {
                    self.lose("map_read_failed");
                }
            }
        }
    }

    fn harvest(&mut self, tid: u32) {
        match self.probes.harvest_thread(tid) {
            Ok(Some(c)) => {
                let names = self.names();
                self.ledger.retire(tid, &c, &names);
            }
            Ok(None) => {}
            Err(_) => self.lose("map_read_failed"),
        }
    }

    /// Harvest slots of threads that no longer exist (their exit record
    /// was lost or came before we followed the process).
    fn sweep(&mut self, proc: &crate::procfs::ProcFs, pending: &[(u32, Instant)]) {
        let Ok(live) = self.probes.read_threads() else {
            self.lose("map_read_failed");
            return;
        };
        for (tid, c) in live {
            let dir = proc.root().join(format!("{}/task/{tid}", c.stats.tgid));
            if !dir.exists() && !pending.iter().any(|(t, _)| *t == tid) {
                self.harvest(tid);
            }
        }
    }

    /// The programs' CPU share since the last call.
    fn sample_share(&mut self) {
        let run_ns: u64 = self
            .probes
            .program_stats()
            .iter()
            .map(|p| p.run_time_ns)
            .sum();
        self.share.sample(run_ns, Duration::ZERO);
    }

    fn sample_memory(&mut self, proc: &crate::procfs::ProcFs) {
        let Some(topo) = &self.topology else {
            return;
        };
        let mut out = BTreeMap::new();
        for (name, tgids) in self.book.processes() {
            out.insert(name.to_string(), own::memory(proc, topo, &tgids));
        }
        self.memory = out;
    }
}

/// Run until `duration` or SIGINT/SIGTERM. `on_ready` gets the bound
/// address once the probes are attached.
pub fn run(opts: &Options, on_ready: &dyn Fn(std::net::SocketAddr)) -> Result<()> {
    record::mark_process_start();
    privileges::require_bpf("tailprobe exporter")?;
    privileges::require_btf()?;
    let self_stats = self_stats(opts);
    // Bind first: a taken port is reported before anything is loaded.
    let server = http::Server::bind(&opts.listen)?;
    let mut resolver = Resolver::new(opts.selectors.clone(), opts.cgroup_children);
    let btf = std::fs::read(privileges::VMLINUX_BTF)
        .with_context(|| format!("reading {}", privileges::VMLINUX_BTF))?;
    let offsets = btf_offsets::resolve(&btf).context("resolving task_struct offsets from BTF")?;
    let roots = Roots::default();
    let topology = sysfs::topology::cpu_topology(&roots.sys);
    let cfg = load_config(opts, &roots, offsets, topology.clone(), self_stats);
    let parsed = crate::kernel::startup::parse_kernel_btf(&btf)?;
    drop(btf);
    let probes = Probes::load_and_attach(&cfg, &parsed)?;
    drop(parsed);
    let start_time_seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let mut st = State {
        probes,
        book: Book::new(opts.max_targets),
        ledger: Ledger::default(),
        indices: Indices::new(target_indices(opts)),
        gone: BTreeMap::new(),
        memory: BTreeMap::new(),
        share: own::CpuShare::default(),
        own_losses: BTreeMap::new(),
        topology,
        buckets_per_octave: opts.buckets_per_octave,
        forget_after: opts.forget_after,
        start_time_seconds,
        proc: resolver.proc.clone(),
    };
    st.rescan(&mut resolver);
    for (sel, why) in &resolver.notes {
        eprintln!("tailprobe exporter: {sel}: nothing to follow yet ({why})");
    }
    for l in &st.probes.left_out {
        eprintln!("tailprobe exporter: {} left out: {}", l.program, l.reason);
    }
    for u in &st.probes.unavailable {
        eprintln!("tailprobe exporter: not available here: {u}");
    }
    on_ready(server.addr);
    let proc = resolver.proc.clone();
    st.sample_memory(&proc);
    st.sample_share();
    let started = Instant::now();
    let mut last_rescan = Instant::now();
    let mut last_sweep = Instant::now();
    let mut last_memory = Instant::now();
    let mut last_share = Instant::now();
    let mut pending: Vec<(u32, Instant)> = Vec::new();
    loop {
        if signals::stop_requested() || opts.duration.is_some_and(|d| started.elapsed() >= d) {
            return Ok(());
        }
        server.poll(&mut |f: Format| render::render(&st.snapshot(), f));
        for ev in st.probes.drain_events() {
            if ev.kind == event::THREAD_EXIT {
                pending.push((ev.tid, Instant::now()));
            }
        }
        let (ripe, wait): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .partition(|(_, at)| at.elapsed() >= HARVEST_AFTER);
        pending = wait;
        for (tid, _) in ripe {
            st.harvest(tid);
        }
        if last_rescan.elapsed() >= opts.rescan {
            st.rescan(&mut resolver);
            last_rescan = Instant::now();
        }
        if last_sweep.elapsed() >= SWEEP_EVERY {
            st.sweep(&proc, &pending);
            last_sweep = Instant::now();
        }
        if last_memory.elapsed() >= opts.memory_every {
            st.sample_memory(&proc);
            last_memory = Instant::now();
        }
        if last_share.elapsed() >= CPU_SHARE_EVERY {
            st.sample_share();
            last_share = Instant::now();
        }
        std::thread::sleep(TICK);
    }
}

/// BPF run-time statistics: turned on here when we may, left to the
/// node's sysctl when already on; a line on stderr when neither.
fn self_stats(opts: &Options) -> bool {
    match (opts.self_stats, privileges::bpf_stats()) {
        (false, _) => false,
        (true, BpfStats::Enable) => true,
        (true, BpfStats::AlreadyOn) => false,
        (true, BpfStats::Unavailable) => {
            eprintln!(
                "tailprobe exporter: no CAP_SYS_ADMIN and kernel.bpf_stats_enabled=0: the \
                 programs' cost metrics stay at zero (set the sysctl on the node, docs/fleet.md)"
            );
            false
        }
    }
}

/// The loader's configuration: every selected process in one set, kernel
/// aggregation only.
fn load_config(
    opts: &Options,
    roots: &Roots,
    offsets: btf_offsets::TaskOffsets,
    topology: Option<Vec<(u32, probe_common::CpuTopo)>>,
    self_stats: bool,
) -> LoadConfig {
    let numa_nodes =
        crate::node::fsx::numbered_entries(&roots.sys.join("devices/system/node"), "node")
            .len()
            .max(1);
    let numa_balancing = procfs::sysctl_parsed(&roots.proc, "kernel/numa_balancing");
    LoadConfig {
        filter: Filter::Set {
            tgids: Vec::new(),
            follow_children: false,
        },
        tid: None,
        offsets,
        // Not exported: no preemptor is charged.
        preemptors: false,
        max_threads: opts.max_threads,
        max_processes: 8192,
        topology,
        // In-kernel aggregation only: no windows, no outlier stream, no
        // per-event trace. The ring carries thread exits.
        window_ns: 0,
        outlier_runq_ns: 0,
        outlier_irq_ns: 0,
        ringbuf_bytes: 1 << 18,
        self_stats,
        trace_events: false,
        sched_trace: None,
        plan: PlanInputs {
            irq: opts.irq,
            numa_nodes,
            numa_balancing,
        },
        // Scheduler totals per target, not per thread: the always-on cost.
        per_target: Some(target_indices(opts)),
    }
}

/// Target indices the kernel keeps: every name and "other".
fn target_indices(opts: &Options) -> u32 {
    u32::try_from(opts.max_targets)
        .unwrap_or(u32::MAX)
        .saturating_add(1)
}
