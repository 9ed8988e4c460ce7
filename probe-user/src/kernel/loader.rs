//! Loading the embedded programs with this kernel's offsets and the target's
//! configuration, attaching them, and reading their maps back.

use std::collections::BTreeMap;

use anyhow::{anyhow, Context as _, Result};
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap},
    programs::BtfTracePoint,
    Btf, Ebpf, EbpfLoader,
};
use probe_common::{loss, CpuTopo, RunqHist, ThreadStats, MAX_CPUS};

use super::{btf_offsets::TaskOffsets, EBPF_OBJECT};

/// The BTF tracepoints we attach, as (program name in the object, tracepoint).
pub const PROGRAMS: [(&str, &str); 4] = [
    ("sched_switch", "sched_switch"),
    ("sched_wakeup", "sched_wakeup"),
    ("sched_wakeup_new", "sched_wakeup_new"),
    ("sched_migrate_task", "sched_migrate_task"),
];

/// What the programs are told before loading.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Thread group id to follow (every thread of it, present and future).
    pub tgid: u32,
    pub offsets: TaskOffsets,
    /// Entries of the per-thread maps.
    pub max_threads: u32,
    /// CPU -> LLC/node; `None` leaves migrations unclassified.
    pub topology: Option<Vec<(u32, CpuTopo)>>,
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
}

/// One thread's counters with the per-CPU copies summed.
#[derive(Debug, Clone)]
pub struct ThreadCounters {
    pub stats: ThreadStats,
    pub hist: Option<RunqHist>,
}

impl Probes {
    pub fn load_and_attach(cfg: &LoadConfig) -> Result<Self> {
        raise_memlock_limit();
        let btf =
            Btf::from_sys_fs().context("reading the kernel's BTF from /sys/kernel/btf/vmlinux")?;
        let topo_valid: u32 = u32::from(cfg.topology.is_some());
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .override_global("TARGET_TGID", &cfg.tgid, true)
            .override_global("TOPO_VALID", &topo_valid, true)
            .override_global("TASK_PID_OFF", &cfg.offsets.pid, true)
            .override_global("TASK_TGID_OFF", &cfg.offsets.tgid, true)
            .override_global("TASK_CPU_OFF", &cfg.offsets.cpu, true)
            .override_global("TASK_STATE_OFF", &cfg.offsets.state, true)
            .map_max_entries("STATS", cfg.max_threads)
            .map_max_entries("RUNQ_SINCE", cfg.max_threads)
            .map_max_entries("RUNQ_HIST", cfg.max_threads)
            .load(EBPF_OBJECT)
            .context("loading tailprobe's eBPF object into the kernel")?;
        if let Some(topo) = &cfg.topology {
            let mut map: Array<&mut MapData, CpuTopo> = Array::try_from(
                ebpf.map_mut("CPU_TOPO")
                    .ok_or_else(|| anyhow!("map CPU_TOPO missing from the object"))?,
            )?;
            for (cpu, t) in topo {
                if *cpu < MAX_CPUS {
                    map.set(*cpu, t, 0)
                        .with_context(|| format!("filling CPU_TOPO for CPU {cpu}"))?;
                }
            }
        }
        for (prog, tp) in PROGRAMS {
            let p: &mut BtfTracePoint = ebpf
                .program_mut(prog)
                .ok_or_else(|| anyhow!("program {prog} missing from the eBPF object"))?
                .try_into()?;
            p.load(tp, &btf)
                .with_context(|| format!("verifying the {prog} program (BTF tracepoint {tp})"))?;
            p.attach()
                .with_context(|| format!("attaching to BTF tracepoint {tp}"))?;
        }
        Ok(Probes { ebpf })
    }

    /// Every thread the programs have seen, with per-CPU values summed.
    pub fn read_threads(&self) -> Result<BTreeMap<u32, ThreadCounters>> {
        let stats: PerCpuHashMap<&MapData, u32, ThreadStats> = PerCpuHashMap::try_from(
            self.ebpf
                .map("STATS")
                .ok_or_else(|| anyhow!("map STATS missing"))?,
        )?;
        let hists: HashMap<&MapData, u32, RunqHist> = HashMap::try_from(
            self.ebpf
                .map("RUNQ_HIST")
                .ok_or_else(|| anyhow!("map RUNQ_HIST missing"))?,
        )?;
        let mut out = BTreeMap::new();
        for item in stats.iter() {
            let (tid, per_cpu) = item.context("reading the STATS map")?;
            let mut sum = ThreadStats::ZERO;
            for s in per_cpu.iter() {
                add_stats(&mut sum, s);
            }
            out.insert(
                tid,
                ThreadCounters {
                    stats: sum,
                    hist: None,
                },
            );
        }
        for item in hists.iter() {
            let (tid, h) = item.context("reading the RUNQ_HIST map")?;
            out.entry(tid)
                .or_insert(ThreadCounters {
                    stats: ThreadStats::ZERO,
                    hist: None,
                })
                .hist = Some(h);
        }
        Ok(out)
    }

    /// Loss counters: (name, per-CPU values).
    pub fn read_losses(&self) -> Result<Vec<(&'static str, Vec<u64>)>> {
        let map: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(
            self.ebpf
                .map("LOSSES")
                .ok_or_else(|| anyhow!("map LOSSES missing"))?,
        )?;
        let mut out = Vec::new();
        for (i, name) in loss::NAMES.iter().enumerate() {
            let vals = map
                .get(&(i as u32), 0)
                .with_context(|| format!("reading loss counter {name}"))?;
            out.push((*name, vals.iter().copied().collect()));
        }
        Ok(out)
    }
}

fn add_stats(sum: &mut ThreadStats, s: &ThreadStats) {
    sum.runq_count += s.runq_count;
    sum.runq_total_ns += s.runq_total_ns;
    sum.runq_max_ns = sum.runq_max_ns.max(s.runq_max_ns);
    sum.oncpu_ns += s.oncpu_ns;
    sum.voluntary_switches += s.voluntary_switches;
    sum.involuntary_switches += s.involuntary_switches;
    sum.wakeups += s.wakeups;
    sum.migrations += s.migrations;
    sum.migrations_cross_llc += s.migrations_cross_llc;
    sum.migrations_cross_numa += s.migrations_cross_numa;
    if s.tgid != 0 {
        sum.tgid = s.tgid;
    }
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
