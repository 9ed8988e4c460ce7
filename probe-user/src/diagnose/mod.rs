//! `tailprobe diagnose`: record a target with the recorder, then run one
//! detector per known cause of CPU-side tail latency and rank what fired.
//!
//! - `finding`: the finding model and the ranking (pure);
//! - one module per detector (pure, each with its rule and threshold):
//!   `preemption`, `starvation`, `saturation`, `throttling` (with `cgroup_cpu`, the
//!   cgroup reader), `pauses`, `irq`, `convoy`, `numa`, `frequency`;
//! - `render`: the text report (pure);
//! - `drive`: `--url/--rate`, load driven while recording; `slow`: each
//!   finding's timed evidence lined up with the slow requests (pure);
//! - this module: the orchestration (recording, cgroup snapshots).

pub mod cgroup_cpu;
pub mod convoy;
pub mod drive;
pub mod finding;
pub mod frequency;
pub mod irq;
pub mod numa;
pub mod pauses;
pub mod preemption;
pub mod render;
pub mod saturation;
pub mod slow;
pub mod starvation;
pub mod throttling;

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Result;
use serde::Serialize;

use self::{
    cgroup_cpu::{CpuCgroup, Level, Version},
    finding::{rank, DetectorRun, DetectorStatus, Finding, Measure},
};
use crate::{
    record::{self, Callback, RecordOptions, TargetSpec},
    report::RecordReport,
};

/// What to diagnose and for how long.
#[derive(Debug, Clone)]
pub struct DiagnoseOptions {
    pub target: TargetSpec,
    pub duration: Duration,
    /// Progress on stderr (only when it is a terminal).
    pub progress: bool,
    /// Load to drive while recording (`--url/--rate`); then findings are
    /// tied to the slow requests.
    pub drive: Option<drive::Drive>,
    /// The device-local NUMA node (`--local-node`): the `numa` detector's
    /// home node, instead of the accelerators' node from sysfs.
    pub local_node: Option<u32>,
}

/// The target's CPU cgroup and its counters at both ends of the run.
#[derive(Debug, Clone)]
pub struct CgroupSnapshots {
    pub cgroup: CpuCgroup,
    pub before: Vec<Level>,
    pub after: Vec<Level>,
}

/// Facts about the node the NUMA and frequency detectors need (read from
/// sysfs by [`NodeFacts::read`], or built by tests).
#[derive(Debug, Clone)]
pub struct NodeFacts {
    /// NUMA node -> its CPUs.
    pub nodes: Vec<(u32, Vec<u32>)>,
    /// The device-local node (given with `--local-node`, or the
    /// accelerators'), when known.
    pub device_node: Option<(u32, numa::HomeSource)>,
    /// cpufreq, or why it is not there.
    pub freq: Result<crate::node::governor::CpuFreq, String>,
    /// cpuidle states of every online CPU.
    pub idle: Vec<frequency::IdleState>,
}

impl NodeFacts {
    pub fn read(roots: &crate::node::Roots) -> NodeFacts {
        let (nodes, device_node) = numa::read_topology(roots);
        let cpus: Vec<u32> = nodes.iter().flat_map(|(_, c)| c.iter().copied()).collect();
        NodeFacts {
            nodes,
            device_node: device_node.map(|n| (n, numa::HomeSource::Accelerators)),
            freq: crate::node::governor::read(roots).map_err(|e| e.0),
            idle: frequency::read_idle_states(roots, &cpus),
        }
    }

    /// Make `node` the device-local node; an error naming the nodes there
    /// are when it is not one of them.
    pub fn set_local_node(&mut self, node: u32) -> Result<()> {
        if !self.nodes.iter().any(|(n, _)| *n == node) {
            let ids: Vec<String> = self.nodes.iter().map(|(n, _)| n.to_string()).collect();
            anyhow::bail!(
                "--local-node {node}: no such NUMA node here (sysfs devices/system/node lists \
                 {}); name one of them",
                if ids.is_empty() {
                    "none".to_string()
                } else {
                    ids.join(", ")
                }
            );
        }
        self.device_node = Some((node, numa::HomeSource::Given));
        Ok(())
    }
}

/// The whole answer: ranked findings, what every detector did, and the
/// numbers they worked from.
#[derive(Debug, Clone, Serialize)]
pub struct Diagnosis {
    pub tool: &'static str,
    pub version: &'static str,
    pub target: crate::report::Target,
    pub duration_ns: u64,
    pub threads_seen: usize,
    pub target_oncpu_ns: u64,
    pub target_runq_wait_ns: u64,
    /// Ranked: the most target time lost first. Empty: no CPU-side cause
    /// found above any detector's threshold.
    pub findings: Vec<Finding>,
    pub detectors: Vec<DetectorRun>,
    /// The target's CPU cgroup (v1 or v2) and its path, where found.
    pub cgroup_version: Option<Version>,
    pub cgroup_path: Option<String>,
    /// True when the recorder lost events: the numbers may be low.
    pub lossy: bool,
    pub notes: Vec<String>,
    /// With `--url/--rate`: the load driven and how each finding lines up
    /// with the slow requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load: Option<drive::DriveSummary>,
}

/// The target's CPU cgroup and its levels when the probes attached.
type StartSnapshot = (CpuCgroup, Vec<Level>);

/// Record the target, snapshot its cgroup around the run, and diagnose.
pub fn run(opts: &DiagnoseOptions) -> Result<Diagnosis> {
    let root = Path::new("/");
    // Node facts first: a wrong --local-node is refused before recording.
    let mut facts = NodeFacts::read(&crate::node::Roots::default());
    if let Some(n) = opts.local_node {
        facts.set_local_node(n)?;
    }
    let mut ropts = RecordOptions::new(opts.target.clone());
    ropts.duration = Some(opts.duration);
    ropts.progress = opts.progress;
    ropts.quiet_command = true;
    // Diagnose needs sums, windows and preemptors, not the outlier stream.
    ropts.max_outliers = 1000;
    ropts.wake_edges = true;
    ropts.cpu_idle = true;
    if opts.drive.is_some() {
        // Timed evidence for the slow requests: every run-queue wait of
        // 100 us or more, up to 200k of them.
        ropts.outlier_runq = Duration::from_micros(100);
        ropts.max_outliers = 200_000;
    }
    let before: Arc<Mutex<Option<StartSnapshot>>> = Arc::new(Mutex::new(None));
    let slot = before.clone();
    ropts.on_attached = Some(Callback::new(move |pid| {
        let snap = cgroup_cpu::locate(Path::new("/"), pid).map(|c| {
            let levels = c.read_levels(Path::new("/"));
            (c, levels)
        });
        if let Ok(mut s) = slot.lock() {
            *s = snap;
        }
        eprintln!("tailprobe: probes attached to pid {pid}; diagnosing");
    }));
    let (report, driven) = match &opts.drive {
        None => (record::run(&ropts)?, None),
        Some(d) => {
            let (report, lr, reqs, matched) = drive::record_with_load(ropts, d)?;
            (report, Some((d, lr, reqs, matched)))
        }
    };
    let cg = before
        .lock()
        .ok()
        .and_then(|mut s| s.take())
        .map(|(cgroup, before)| {
            let after = cgroup.read_levels(root);
            CgroupSnapshots {
                cgroup,
                before,
                after,
            }
        });
    let cgroups = preemptor_cgroups(root, &report);
    let mut d = analyse(&report, cg.as_ref(), &cgroups, &facts);
    if let Some((drive, lr, reqs, matched)) = driven {
        let detectors: Vec<&'static str> = d.findings.iter().map(|f| f.detector).collect();
        let sum = drive::summarise(drive, &lr, &report, &reqs, matched, &detectors);
        for t in &sum.ties {
            if let Some(f) = d.findings.iter_mut().find(|f| f.detector == t.detector) {
                let pct = 100.0 * t.slow_overlapping as f64 / t.slow_requests.max(1) as f64;
                f.evidence("slow_requests_overlap_pct", pct, t.text.clone());
            }
        }
        d.load = Some(sum);
    }
    Ok(d)
}

/// The CPU-controller cgroup path of every process that preempted the
/// target (and of the target itself), where it can still be read.
fn preemptor_cgroups(root: &Path, report: &RecordReport) -> BTreeMap<u32, String> {
    report
        .preemptors
        .iter()
        .map(|p| p.tgid)
        .chain(std::iter::once(report.target.pid))
        .filter(|t| *t != 0)
        .filter_map(|t| Some((t, cgroup_cpu::locate(root, t)?.path)))
        .collect()
}

/// Run every detector over a recording (pure).
pub fn analyse(
    report: &RecordReport,
    cg: Option<&CgroupSnapshots>,
    cgroups: &BTreeMap<u32, String>,
    facts: &NodeFacts,
) -> Diagnosis {
    let duration = report.duration_ns;
    let mut runs = Runs::default();
    // Throttling first: preemption subtracts the throttled time.
    let (throttle, throttled_ns, na, m) = throttling_run(report, cg);
    let throttled_for_preemption = if throttle.is_some() { throttled_ns } else { 0 };
    runs.push("cfs_throttling", throttling::RULE, throttle, na, m);
    scheduling(&mut runs, report, cgroups, throttled_for_preemption);
    interrupts_and_wakers(&mut runs, report);
    node(&mut runs, report, facts);
    let Runs { mut findings, runs } = runs;
    rank(&mut findings);
    Diagnosis {
        tool: "tailprobe diagnose",
        version: env!("CARGO_PKG_VERSION"),
        target: report.target.clone(),
        duration_ns: duration,
        threads_seen: report.process.threads_seen,
        target_oncpu_ns: report.process.oncpu_ns,
        target_runq_wait_ns: report.process.runq_wait.total_ns,
        findings,
        detectors: runs,
        cgroup_version: cg.map(|c| c.cgroup.version),
        cgroup_path: cg.map(|c| c.cgroup.path.clone()),
        lossy: report.lossy,
        notes: notes(report),
        load: None,
    }
}

/// What the detectors found and how each ran, in the order they ran.
#[derive(Default)]
struct Runs {
    findings: Vec<Finding>,
    runs: Vec<DetectorRun>,
}

impl Runs {
    /// One detector's answer: a finding, a reason it could not run, or
    /// neither (quiet).
    fn push(
        &mut self,
        detector: &'static str,
        rule: &'static str,
        f: Option<Finding>,
        na: Option<String>,
        measured: Vec<Measure>,
    ) {
        let status = match (&f, &na) {
            (Some(_), _) => DetectorStatus::Fired,
            (None, Some(_)) => DetectorStatus::NotAvailable,
            (None, None) => DetectorStatus::Quiet,
        };
        self.runs.push(DetectorRun {
            detector,
            rule,
            status,
            note: na,
            measured,
        });
        self.findings.extend(f);
    }
}

/// CFS throttling of the target's cgroup: (finding, the worst cgroup's
/// throttled ns, why it could not run).
fn throttling_run(
    report: &RecordReport,
    cg: Option<&CgroupSnapshots>,
) -> (Option<Finding>, u64, Option<String>, Vec<Measure>) {
    let duration = report.duration_ns;
    match cg {
        Some(c) => {
            let d = throttling::deltas(&c.before, &c.after);
            let ns = throttling::worst(&d).map(|w| w.throttled_ns).unwrap_or(0);
            let f = throttling::detect(&d, c.cgroup.version, duration, report.process.threads_seen);
            let na = (d.is_empty()).then(|| {
                format!(
                    "no cpu.stat readable for cgroup {} (cpu controller not enabled there?)",
                    c.cgroup.path
                )
            });
            (f, ns, na, throttling::measured(&d, duration))
        }
        None => (
            None,
            0,
            Some("the target's CPU cgroup could not be found in /proc/<pid>/cgroup".into()),
            Vec::new(),
        ),
    }
}

/// Who had the CPU: preemption, starvation, a saturated thread, pauses.
fn scheduling(
    runs: &mut Runs,
    report: &RecordReport,
    cgroups: &BTreeMap<u32, String>,
    throttled_for_preemption: u64,
) {
    let duration = report.duration_ns;
    let target_cgroup = cgroups.get(&report.target.pid).map(String::as_str);
    let inp = preemption::Input {
        target_tgids: &report.target.processes,
        preemptors: &report.preemptors,
        target_wait_ns: report.process.runq_wait.total_ns,
        duration_ns: duration,
        throttled_ns: throttled_for_preemption,
        cgroups,
        target_cgroup,
    };
    let pre = preemption::detect(&inp);
    let preemption_fired = pre.is_some();
    let m = preemption::measured(&inp);
    runs.push("preemption", preemption::RULE, pre, None, m);

    let inp = starvation::Input {
        target_tgids: &report.target.processes,
        preemptors: &report.preemptors,
        wait_ns: report.process.runq_wait.total_ns,
        oncpu_ns: report.process.oncpu_ns,
        throttled_ns: throttled_for_preemption,
        duration_ns: duration,
        preemption_fired,
    };
    let starved = starvation::detect(&inp);
    let m = starvation::measured(&inp);
    runs.push("cpu_starvation", starvation::RULE, starved, None, m);

    let sat = saturation::detect(&report.threads, &report.wake_edges, duration);
    let m = saturation::measured(&report.threads, duration);
    runs.push("saturated_thread", saturation::RULE, sat, None, m);

    let (pause, na, m) = if report.window_ns == 0 || report.windows.is_empty() {
        (
            None,
            Some("no time windows were recorded".to_string()),
            Vec::new(),
        )
    } else {
        (
            pauses::detect(&report.windows, report.window_ns, duration),
            None,
            pauses::measured(&report.windows, report.window_ns),
        )
    };
    runs.push("stop_the_world", pauses::RULE, pause, na, m);
}

/// Time taken by interrupts, and lock convoys among the target's threads.
fn interrupts_and_wakers(runs: &mut Runs, report: &RecordReport) {
    let duration = report.duration_ns;
    let inp = irq::Input {
        irqs: &report.irqs,
        softirqs: &report.softirqs,
        cpus: &report.cpus,
        preemptors: &report.preemptors,
        target_oncpu_ns: report.process.oncpu_ns,
        duration_ns: duration,
    };
    runs.push(
        "irq",
        irq::RULE,
        irq::detect(&inp),
        None,
        irq::measured(&inp),
    );

    let wakers_seen = !report
        .unavailable
        .iter()
        .any(|u| u.starts_with("who woke whom"));
    let (convoy, na, m) = if wakers_seen {
        (
            convoy::detect(&report.threads, &report.wake_edges, duration),
            None,
            convoy::measured(&report.threads, &report.wake_edges, duration),
        )
    } else {
        (
            None,
            Some("the waker program could not be attached (see notes)".to_string()),
            Vec::new(),
        )
    };
    runs.push("lock_convoy", convoy::RULE, convoy, na, m);
}

/// The node: NUMA placement, CPU frequency and idle states.
fn node(runs: &mut Runs, report: &RecordReport, facts: &NodeFacts) {
    let duration = report.duration_ns;
    let cpu_oncpu: Vec<(u32, u64)> = report
        .cpus
        .iter()
        .filter(|c| c.target_oncpu_ns > 0)
        .map(|c| (c.cpu, c.target_oncpu_ns))
        .collect();
    let inp = numa::Input {
        nodes: &facts.nodes,
        device_node: facts.device_node,
        kib_per_node: &report.numa.kib_per_node_end,
        cpu_oncpu: &cpu_oncpu,
        task_events: report.numa.task_events,
        pages_migrated: report
            .numa
            .migrate_pages
            .iter()
            .filter(|m| m.name == "numa_misplaced")
            .map(|m| m.target_pages_succeeded)
            .sum(),
        duration_ns: duration,
    };
    let (f, na) = split(numa::detect(&inp));
    runs.push("numa", numa::RULE, f, na, numa::measured(&inp));

    let target_cpus: Vec<u32> = cpu_oncpu.iter().map(|(c, _)| *c).collect();
    let inp = frequency::Input {
        freq: facts.freq.as_ref().map_err(String::as_str),
        idle: &facts.idle,
        cpus: &target_cpus,
        wakeups: report.process.wakeups,
        duration_ns: duration,
        idle_use: report.cpu_idle.as_ref(),
    };
    let (f, na) = split(frequency::detect(&inp));
    runs.push(
        "frequency_idle",
        frequency::RULE,
        f,
        na,
        frequency::measured(&inp),
    );
}

/// The recording's notes, with the idle program's cost and a warning when
/// events were lost.
fn notes(report: &RecordReport) -> Vec<String> {
    let mut notes = report.notes.clone();
    if let Some(c) = &report.cpu_idle {
        let exits: u64 = c.states.iter().map(|s| s.exits).sum();
        notes.push(format!(
            "cpu_idle program (power:cpu_idle, CPUs the target ran on): {exits} idle periods \
             seen; it ran {} times for {:.2} ms ({:.0} ns a run)",
            c.program_runs,
            c.program_run_time_ns as f64 / 1e6,
            c.program_run_time_ns as f64 / c.program_runs.max(1) as f64
        ));
    }
    if report.lossy {
        notes.push(
            "the recorder lost events (see `tailprobe record --json` losses): the evidence may \
             be understated"
                .into(),
        );
    }
    notes
}

/// A detector's answer as (finding, not-available reason).
fn split(r: Result<Option<Finding>, String>) -> (Option<Finding>, Option<String>) {
    match r {
        Ok(f) => (f, None),
        Err(why) => (None, Some(why)),
    }
}
