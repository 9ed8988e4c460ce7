//! Detector 7a: NUMA placement and balancing churn.
//!
//! Rule (only with 2+ NUMA nodes): the home node is the one given with
//! `--local-node`, else the accelerators' node (sysfs `numa_node` of the
//! GPUs), else the node where the target ran most. It fires when at least
//! [`MIN_REMOTE_SHARE`] of the target's resident memory (numa_maps at the
//! end) or of its on-CPU time is on other nodes, when NUMA balancing moved,
//! swapped or failed to move its threads at least [`MIN_CHURN_PER_S`] times
//! a second, or when balancing migrated at least [`MIN_PAGES_PER_S`] of its
//! pages a second (faults of its threads, `numa_misplaced`: its memory is
//! still being moved under it). The time this costs is not
//! measured (that needs hardware memory-access sampling): the finding
//! carries no lost time and ranks after the measured ones.

use std::collections::BTreeMap;

use super::finding::{Confidence, Finding, Measure};
use crate::{
    node::{inventory, Roots},
    report::NumaTaskEvents,
};

pub const MIN_REMOTE_SHARE: f64 = 0.10;
pub const MIN_CHURN_PER_S: f64 = 0.5;
/// 256 pages of 4 KiB a second: 1 MiB/s of the target's memory moved.
pub const MIN_PAGES_PER_S: f64 = 256.0;

pub const RULE: &str = "2+ nodes: >= 10% of the target's memory or on-CPU time off its home node \
     (--local-node, else the GPUs' node, else where it ran most), or NUMA balancing moving its \
     threads >= 0.5 times/s or its pages >= 256/s";

/// Where the home node came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HomeSource {
    /// `--local-node N`.
    Given,
    /// The accelerators' node from sysfs.
    Accelerators,
}

pub struct Input<'a> {
    /// Node -> its CPUs.
    pub nodes: &'a [(u32, Vec<u32>)],
    /// The device-local node (given, or the accelerators'), when known.
    pub device_node: Option<(u32, HomeSource)>,
    pub kib_per_node: &'a BTreeMap<u32, u64>,
    /// CPU -> the target's on-CPU time there.
    pub cpu_oncpu: &'a [(u32, u64)],
    pub task_events: NumaTaskEvents,
    /// Pages of the target migrated by NUMA balancing (`mm_migrate_pages`,
    /// reason `numa_misplaced`, in its threads' context).
    pub pages_migrated: u64,
    pub duration_ns: u64,
}

/// Node -> CPUs, from sysfs under `roots`; the accelerators' node.
pub fn read_topology(roots: &Roots) -> (Vec<(u32, Vec<u32>)>, Option<u32>) {
    let nodes = inventory::numa_nodes(roots)
        .into_iter()
        .map(|n| (n.id, crate::cpulist::parse(&n.cpus).unwrap_or_default()))
        .collect();
    let device = inventory::device_local_node(&inventory::accelerators(roots));
    (nodes, device)
}

/// `Err(reason)` when the detector cannot apply here.
/// What the rule compares: the home node, the shares of memory and on-CPU
/// time off it (None when there is none to share), balancing moves and
/// migrated pages per second.
struct Figures {
    home: u32,
    home_why: &'static str,
    mem: Option<f64>,
    cpu: Option<f64>,
    churn: f64,
    pages: f64,
}

fn figures(inp: &Input) -> Result<Figures, String> {
    let cpu_per_node = cpu_per_node(inp);
    let (home, home_why) = home(inp, &cpu_per_node)?;
    let share_off = |m: &BTreeMap<u32, u64>| {
        let total: u64 = m.values().sum();
        (total > 0).then(|| {
            m.iter()
                .filter(|(n, _)| **n != home)
                .map(|(_, v)| *v)
                .sum::<u64>() as f64
                / total as f64
        })
    };
    let ev = inp.task_events;
    let secs = inp.duration_ns.max(1) as f64 / 1e9;
    Ok(Figures {
        home,
        home_why,
        mem: share_off(inp.kib_per_node),
        cpu: share_off(&cpu_per_node),
        churn: (ev.moves + ev.swaps + ev.sticks) as f64 / secs,
        pages: inp.pages_migrated as f64 / secs,
    })
}

/// The rule's numbers, whether it fires or not (any one of them meeting
/// its bound fires it); none on one node or without a home node.
pub fn measured(inp: &Input) -> Vec<Measure> {
    if inp.nodes.len() < 2 {
        return Vec::new();
    }
    let Ok(f) = figures(inp) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let floor = 100.0 * MIN_REMOTE_SHARE;
    if let Some(m) = f.mem {
        out.push(Measure::at_least(
            "memory_off_home_pct",
            100.0 * m,
            floor,
            "%",
        ));
    }
    if let Some(c) = f.cpu {
        out.push(Measure::at_least(
            "oncpu_off_home_pct",
            100.0 * c,
            floor,
            "%",
        ));
    }
    out.push(Measure::at_least(
        "balancing_moves_per_s",
        f.churn,
        MIN_CHURN_PER_S,
        "/s",
    ));
    out.push(Measure::at_least(
        "pages_migrated_per_s",
        f.pages,
        MIN_PAGES_PER_S,
        "/s",
    ));
    out
}

pub fn detect(inp: &Input) -> Result<Option<Finding>, String> {
    if inp.nodes.len() < 2 {
        return Err(format!(
            "{} NUMA node(s): nothing can be remote",
            inp.nodes.len()
        ));
    }
    let Figures {
        home,
        home_why,
        mem,
        cpu,
        churn,
        pages,
    } = figures(inp)?;
    let mem_hit = mem.is_some_and(|s| s >= MIN_REMOTE_SHARE);
    let cpu_hit = cpu.is_some_and(|s| s >= MIN_REMOTE_SHARE);
    let churn_hit = churn >= MIN_CHURN_PER_S;
    let pages_hit = pages >= MIN_PAGES_PER_S;
    if !(mem_hit || cpu_hit || churn_hit || pages_hit) {
        return Ok(None);
    }
    let mut parts = Vec::new();
    if mem_hit {
        parts.push("memory");
    }
    if cpu_hit {
        parts.push("CPU time");
    }
    if churn_hit {
        parts.push("balancing churn");
    }
    if pages_hit {
        parts.push("pages being migrated");
    }
    let margin = [mem, cpu]
        .into_iter()
        .flatten()
        .map(|s| s / MIN_REMOTE_SHARE)
        .chain([churn / MIN_CHURN_PER_S, pages / MIN_PAGES_PER_S])
        .fold(0.0, f64::max);
    let mut f = Finding {
        detector: "numa",
        what: format!(
            "the target is off its home NUMA node {home} ({}): {}",
            home_why,
            parts.join(", ")
        ),
        confidence: Confidence::from_margin(margin, 2.0, 5.0),
        impact_ns: 0,
        evidence: Vec::new(),
        advice: format!(
            "bind the server to node {home}'s CPUs and memory at launch (numactl --cpunodebind \
             --membind, or systemd AllowedCPUs= / NUMAPolicy=bind); pages already placed stay \
             where they are, so restart it bound; with binding in place, NUMA balancing can be \
             turned off (kernel.numa_balancing=0)"
        ),
    };
    evidence(&mut f, inp, home, mem, cpu);
    Ok(Some(f))
}

/// The target's on-CPU time per node.
fn cpu_per_node(inp: &Input) -> BTreeMap<u32, u64> {
    let node_of = |cpu: u32| {
        inp.nodes
            .iter()
            .find(|(_, cpus)| cpus.contains(&cpu))
            .map(|(n, _)| *n)
    };
    let mut cpu_per_node: BTreeMap<u32, u64> = BTreeMap::new();
    for (cpu, ns) in inp.cpu_oncpu {
        if let Some(n) = node_of(*cpu) {
            *cpu_per_node.entry(n).or_default() += ns;
        }
    }
    cpu_per_node
}

/// The node the target should be on, and why that one.
fn home(inp: &Input, cpu_per_node: &BTreeMap<u32, u64>) -> Result<(u32, &'static str), String> {
    Ok(match inp.device_node {
        Some((n, HomeSource::Given)) => (n, "the device-local node given with --local-node"),
        Some((n, HomeSource::Accelerators)) => (n, "the accelerators' node"),
        None => match cpu_per_node.iter().max_by_key(|(_, ns)| **ns) {
            Some((n, _)) => (
                *n,
                "no accelerator with a known node: where the target ran most",
            ),
            None => return Err("the target did not run during the recording".into()),
        },
    })
}

/// The shares off the home node and the balancing figures behind a
/// finding.
fn evidence(f: &mut Finding, inp: &Input, home: u32, mem: Option<f64>, cpu: Option<f64>) {
    let ev = inp.task_events;
    let secs = inp.duration_ns.max(1) as f64 / 1e9;
    let churn = (ev.moves + ev.swaps + ev.sticks) as f64 / secs;
    let pages = inp.pages_migrated as f64 / secs;
    if let Some(s) = mem {
        f.evidence(
            "remote_memory_pct",
            100.0 * s,
            format!(
                "{:.0}% of its resident memory is off node {home} ({})",
                100.0 * s,
                per_node(inp.kib_per_node, "KiB")
            ),
        );
        for (node, kib) in inp.kib_per_node {
            f.evidence(
                "node_memory_kib",
                *kib as f64,
                format!("node {node}: {kib} KiB of its resident memory (numa_maps, at the end)"),
            );
        }
    }
    if let Some(s) = cpu {
        f.evidence(
            "remote_cpu_pct",
            100.0 * s,
            format!(
                "{:.0}% of its on-CPU time ran on other nodes' CPUs",
                100.0 * s
            ),
        );
    }
    f.evidence(
        "balancing_events_per_s",
        churn,
        format!(
            "NUMA balancing: {} moves, {} swaps, {} failed moves of its threads ({churn:.2}/s)",
            ev.moves, ev.swaps, ev.sticks
        ),
    );
    f.evidence(
        "balancing_pages_migrated_per_s",
        pages,
        format!(
            "NUMA balancing migrated {} of its pages ({pages:.0}/s, mm_migrate_pages \
             numa_misplaced in its threads)",
            inp.pages_migrated
        ),
    );
    f.evidence(
        "lost_time_measured",
        0.0,
        "the time lost to remote access is not measured (needs hardware memory-access \
         sampling): this finding is ranked after the measured ones"
            .into(),
    );
}

fn per_node(m: &BTreeMap<u32, u64>, unit: &str) -> String {
    m.iter()
        .map(|(n, v)| format!("node {n}: {v} {unit}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes() -> Vec<(u32, Vec<u32>)> {
        vec![(0, vec![0, 1]), (1, vec![2, 3])]
    }

    fn input<'a>(
        nodes: &'a [(u32, Vec<u32>)],
        device: Option<(u32, HomeSource)>,
        mem: &'a BTreeMap<u32, u64>,
        cpu: &'a [(u32, u64)],
        moves: u64,
    ) -> Input<'a> {
        Input {
            nodes,
            device_node: device,
            kib_per_node: mem,
            cpu_oncpu: cpu,
            task_events: NumaTaskEvents {
                moves,
                swaps: 0,
                sticks: 0,
            },
            pages_migrated: 0,
            duration_ns: 10_000_000_000,
        }
    }

    #[test]
    fn memory_remote_from_the_gpu_node() {
        let n = nodes();
        let mem = BTreeMap::from([(0, 800), (1, 200)]);
        let cpu = [(2, 1000), (3, 1000)];
        let f = detect(&input(
            &n,
            Some((1, HomeSource::Accelerators)),
            &mem,
            &cpu,
            0,
        ))
        .expect("applies")
        .expect("fires");
        assert!(f.what.contains("home NUMA node 1"), "{}", f.what);
        let ev = |k: &str| {
            f.evidence
                .iter()
                .filter(|e| e.key == k)
                .map(|e| e.value)
                .collect::<Vec<_>>()
        };
        assert_eq!(ev("remote_memory_pct"), [80.0]);
        assert_eq!(ev("remote_cpu_pct"), [0.0]);
        // One entry per node, in node order.
        assert_eq!(ev("node_memory_kib"), [800.0, 200.0]);
        assert_eq!(f.impact_ns, 0);
    }

    #[test]
    fn a_given_local_node_overrides_the_accelerators_node() {
        let n = nodes();
        // Runs on node 0 with its memory on node 1; the GPUs say node 1.
        let mem = BTreeMap::from([(0, 100), (1, 900)]);
        let cpu = [(0, 1000), (1, 1000)];
        let by_gpu = detect(&input(
            &n,
            Some((1, HomeSource::Accelerators)),
            &mem,
            &cpu,
            0,
        ))
        .expect("applies")
        .expect("fires: all CPU time off node 1");
        assert!(
            by_gpu.what.contains("the accelerators' node"),
            "{}",
            by_gpu.what
        );
        let f = detect(&input(&n, Some((0, HomeSource::Given)), &mem, &cpu, 0))
            .expect("applies")
            .expect("fires: 90% of memory off node 0");
        assert!(
            f.what.contains("home NUMA node 0") && f.what.contains("--local-node"),
            "{}",
            f.what
        );
        assert!(
            f.what.contains("memory") && !f.what.contains("CPU time"),
            "{}",
            f.what
        );
    }

    #[test]
    fn pages_migrated_by_balancing_count_as_churn() {
        let n = nodes();
        let mem = BTreeMap::from([(0, 1000)]);
        let cpu = [(0, 5000)];
        let mut i = input(&n, Some((0, HomeSource::Given)), &mem, &cpu, 0);
        // 255/s over 10 s: under the bar.
        i.pages_migrated = 2550;
        assert!(detect(&i).expect("applies").is_none());
        i.pages_migrated = 4100;
        let f = detect(&i).expect("applies").expect("fires");
        assert!(f.what.contains("pages being migrated"), "{}", f.what);
        let e = f
            .evidence
            .iter()
            .find(|e| e.key == "balancing_pages_migrated_per_s")
            .expect("evidence");
        assert!((e.value - 410.0).abs() < 1e-9, "{}", e.value);
    }

    #[test]
    fn home_defaults_to_where_it_runs_and_churn_counts() {
        let n = nodes();
        let mem = BTreeMap::from([(0, 1000)]);
        let cpu = [(0, 5000), (1, 4000)];
        // All local, no churn.
        assert!(detect(&input(&n, None, &mem, &cpu, 0))
            .expect("applies")
            .is_none());
        // 20 moves in 10 s.
        let f = detect(&input(&n, None, &mem, &cpu, 20))
            .expect("applies")
            .expect("fires");
        assert!(f.what.contains("balancing churn"), "{}", f.what);
    }

    #[test]
    fn one_node_is_not_applicable() {
        let n = vec![(0, vec![0, 1])];
        let mem = BTreeMap::from([(0, 1000)]);
        let e = detect(&input(&n, None, &mem, &[(0, 1)], 0)).expect_err("n/a");
        assert!(e.contains("1 NUMA node"), "{e}");
    }

    #[test]
    fn reads_nodes_and_the_gpu_node_from_a_fixture_tree() {
        let dir = std::env::temp_dir().join(format!("tp-numa-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let w = |rel: &str, text: &str| {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        w("sys/devices/system/node/node0/cpulist", "0-1\n");
        w("sys/devices/system/node/node1/cpulist", "2-3\n");
        let gpu = "sys/bus/pci/devices/0000:81:00.0";
        w(&format!("{gpu}/vendor"), "0x10de\n");
        w(&format!("{gpu}/device"), "0x2330\n");
        w(&format!("{gpu}/class"), "0x030200\n");
        w(&format!("{gpu}/numa_node"), "1\n");
        let roots = Roots::new(dir.join("sys"), dir.join("proc"));
        let (n, device) = read_topology(&roots);
        assert_eq!(n, nodes());
        assert_eq!(device, Some(1));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
