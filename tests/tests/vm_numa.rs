//! NUMA tests that need a machine with two nodes: `cargo xtask vm-test`
//! runs them in QEMU guests with 2 vCPUs on 2 nodes (CPU 0 on node 0, CPU 1
//! on node 1). On a one-node machine each prints `SKIP` with the reason.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use tailprobe_tests::{skip_unless_root, tailprobe_bin, thread, u, Recording, Workload};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_workload");
const NUMA_TOUCH: &str = env!("CARGO_BIN_EXE_numa_touch");

/// CPU list syntax ("0-3,8") to CPU numbers.
fn cpulist(s: &str) -> Vec<usize> {
    let mut v = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => v.extend(a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap()),
            None => v.push(part.parse().unwrap()),
        }
    }
    v
}

/// (node id, its CPUs) from sysfs, nodes with CPUs only, by id.
fn nodes() -> Vec<(usize, Vec<usize>)> {
    let mut v = Vec::new();
    let Ok(rd) = std::fs::read_dir("/sys/devices/system/node") else {
        return v;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(id) = name.strip_prefix("node").and_then(|n| n.parse().ok()) else {
            continue;
        };
        let cpus = std::fs::read_to_string(e.path().join("cpulist")).unwrap_or_default();
        let cpus = cpulist(&cpus);
        if !cpus.is_empty() {
            v.push((id, cpus));
        }
    }
    v.sort();
    v
}

fn node_of(cpu: usize) -> Option<usize> {
    nodes()
        .into_iter()
        .find(|(_, cpus)| cpus.contains(&cpu))
        .map(|(id, _)| id)
}

/// Skip unless root and CPUs 0 and 1 sit on different nodes (the layout the
/// `bounce` workload and these tests use). Returns (node of CPU 0, node of
/// CPU 1).
macro_rules! two_nodes_or_skip {
    ($name:expr) => {{
        skip_unless_root!($name);
        let n = nodes();
        match (node_of(0), node_of(1)) {
            (Some(a), Some(b)) if a != b => (a, b),
            _ => {
                tailprobe_tests::skip(
                    $name,
                    &format!(
                        "needs CPUs 0 and 1 on two NUMA nodes; this machine has {} node(s) with CPUs: {:?} (run `cargo xtask vm-test`)",
                        n.len(),
                        n
                    ),
                );
                return;
            }
        }
    }};
}

fn tailprobe_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(tailprobe_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run tailprobe");
    assert!(
        out.status.success(),
        "tailprobe {args:?}: {}; stderr {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "tailprobe {args:?}: no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn vmstat() -> std::collections::BTreeMap<String, u64> {
    std::fs::read_to_string("/proc/vmstat")
        .expect("/proc/vmstat")
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// `tailprobe topo --json` lists every node with exactly sysfs's CPUs.
#[test]
fn root_vm_topo_reports_two_nodes_with_their_cpus() {
    let (n0, n1) = two_nodes_or_skip!("root_vm_topo_reports_two_nodes_with_their_cpus");
    let topo = tailprobe_json(&["topo", "--json"]);
    let reported: Vec<(usize, Vec<usize>)> = topo["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| {
            let cpus = cpulist(n["cpus"].as_str().unwrap_or(""));
            (!cpus.is_empty()).then(|| (u(&n["id"]) as usize, cpus))
        })
        .collect();
    eprintln!("topo nodes {reported:?}; sysfs {:?}", nodes());
    assert_eq!(reported, nodes(), "{topo:#}");
    assert!(reported.len() >= 2);
    assert!(reported.iter().any(|(id, c)| *id == n0 && c.contains(&0)));
    assert!(reported.iter().any(|(id, c)| *id == n1 && c.contains(&1)));
}

/// A thread moved between CPU 0 and CPU 1 (two nodes) N times: at least N
/// migrations, and every one of them across nodes.
#[test]
fn root_vm_bounce_between_nodes_counts_cross_numa_migrations() {
    two_nodes_or_skip!("root_vm_bounce_between_nodes_counts_cross_numa_migrations");
    let n = 100u64;
    let mut w = Workload::start(WORKLOAD, &["bounce", &n.to_string()]);
    let rec = Recording::start(w.pid(), &[]);
    w.go_and_wait(Duration::from_secs(60));
    let (code, report) = rec.stop();
    assert_eq!(code, 0);
    let m = &thread(&report, w.tids[0])["migrations"];
    eprintln!("bounced {n} times between nodes: {m}");
    let (total, numa) = (u(&m["total"]), u(&m["cross_numa"]));
    assert!(numa >= n, "cross-NUMA {numa} < {n}: {m}");
    assert!(numa <= total, "{m}");
    // Two CPUs, two nodes: a migration cannot stay on one node.
    assert_eq!(numa, total, "{m}");
    assert!(total <= 2 * n, "implausibly many migrations: {m}");
    assert_eq!(report["numa"]["nodes"], 2, "{:#}", report["numa"]);
}

/// Memory placed on the other node than the thread's CPU is remote in the
/// locality report; on the same node it is local.
#[test]
fn root_vm_memory_on_the_other_node_is_remote() {
    let (n0, n1) = two_nodes_or_skip!("root_vm_memory_on_the_other_node_is_remote");
    let mib = 32u64;
    for (mem_node, remote) in [(n1, true), (n0, false)] {
        let w = Workload::start(
            NUMA_TOUCH,
            &["0", &mem_node.to_string(), &mib.to_string(), "0"],
        );
        let pid = w.pid().to_string();
        let r = tailprobe_json(&["numa", "--pid", &pid, "--duration", "200ms", "--json"]);
        let kib = |node: usize| r["kib_per_node"][node.to_string()].as_u64().unwrap_or(0);
        let share = r["remote_share"].as_f64().expect("remote_share");
        eprintln!(
            "CPU 0 (node {n0}), memory bound to node {mem_node}: KiB per node {}, remote share {share:.3}",
            r["kib_per_node"]
        );
        assert_eq!(r["nodes"], 2, "{r:#}");
        assert!(kib(mem_node) >= mib * 1024, "{r:#}");
        if remote {
            assert!(share > 0.5, "expected mostly remote: {r:#}");
        } else {
            assert!(share < 0.25, "expected mostly local: {r:#}");
        }
    }
}

/// Writes a sysctl and puts the old value back on drop (also on panic).
struct Sysctl {
    path: &'static str,
    old: String,
}

impl Sysctl {
    fn set(path: &'static str, value: &str) -> Sysctl {
        let old = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        std::fs::write(path, value).unwrap_or_else(|e| panic!("write {path}: {e}"));
        Sysctl {
            path,
            old: old.trim().to_string(),
        }
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(self.path, &self.old) {
            eprintln!("could not restore {} to {}: {e}", self.path, self.old);
        }
    }
}

/// NUMA balancing on, a thread on node A touching memory on node B: the
/// kernel samples remote accesses (hint faults) and moves pages or the
/// task; tailprobe reports what the kernel's own counters saw.
#[test]
fn root_vm_numa_balancing_signals_are_seen() {
    let (n0, n1) = two_nodes_or_skip!("root_vm_numa_balancing_signals_are_seen");
    let path = "/proc/sys/kernel/numa_balancing";
    if !std::path::Path::new(path).exists() {
        tailprobe_tests::skip(
            "root_vm_numa_balancing_signals_are_seen",
            &format!("no {path} (CONFIG_NUMA_BALANCING off)"),
        );
        return;
    }
    let _restore = Sysctl::set(path, "1");
    // Scan at once and often (defaults: first scan after 1 s, then at most
    // every 1 s), so a 6 s run sees several scan periods; restored on drop.
    let dbg = "/sys/kernel/debug/sched/numa_balancing";
    let fast: Vec<Sysctl> = [
        ("/sys/kernel/debug/sched/numa_balancing/scan_delay_ms", "0"),
        (
            "/sys/kernel/debug/sched/numa_balancing/scan_period_min_ms",
            "100",
        ),
    ]
    .into_iter()
    .filter(|(p, _)| std::path::Path::new(p).exists())
    .map(|(p, v)| Sysctl::set(p, v))
    .collect();
    if fast.is_empty() {
        eprintln!("{dbg} absent (debugfs not mounted): default scan delay and period");
    }
    let mib = 16u64;
    let mut w = Workload::start(
        NUMA_TOUCH,
        &["0", &n1.to_string(), &mib.to_string(), "6000"],
    );
    let rec = Recording::start(w.pid(), &[]);
    let before = vmstat();
    w.go_and_wait(Duration::from_secs(120));
    let after = vmstat();
    let (code, r) = rec.stop();
    assert_eq!(code, 0);
    let d = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
    let numa = &r["numa"];
    eprintln!(
        "CPU 0 (node {n0}) touching {mib} MiB on node {n1} for 6 s with balancing on:\n  tailprobe: {numa:#}\n  /proc/vmstat deltas: numa_pte_updates {} numa_hint_faults {} numa_hint_faults_local {} numa_pages_migrated {} pgmigrate_success {}",
        d("numa_pte_updates"),
        d("numa_hint_faults"),
        d("numa_hint_faults_local"),
        d("numa_pages_migrated"),
        d("pgmigrate_success"),
    );
    assert_eq!(numa["nodes"], 2);
    assert_eq!(numa["balancing"], 1, "{numa:#}");
    let remote = u(&numa["remote_hint_faults"]);
    let migrated_events: u64 = numa["migrate_pages"]
        .as_array()
        .expect("migrate_pages")
        .iter()
        .map(|m| u(&m["pages_succeeded"]))
        .sum();
    let te = &numa["task_events"];
    let task_events = u(&te["moves"]) + u(&te["swaps"]) + u(&te["sticks"]);
    let kernel_remote = d("numa_hint_faults").saturating_sub(d("numa_hint_faults_local"));
    if remote == 0 && migrated_events == 0 && task_events == 0 {
        // Nothing seen: acceptable only when the kernel's own counters say
        // nothing happened, and then say why.
        let why = if d("numa_pte_updates") == 0 {
            "the balancer did not scan (numa_pte_updates did not move): the task ran too briefly for a scan period"
        } else {
            "PTEs were marked (numa_pte_updates moved) but no access faulted on them in the window"
        };
        assert_eq!(
            kernel_remote, 0,
            "the kernel counted {kernel_remote} remote hint faults, tailprobe none: {numa:#}"
        );
        assert_eq!(d("numa_pages_migrated"), 0, "{numa:#}");
        // Agreement on "nothing" is not the balancing test passing: say so.
        tailprobe_tests::skip(
            "root_vm_numa_balancing_signals_are_seen",
            &format!("no NUMA balancing activity in the window: {why}"),
        );
        return;
    }
    // Something was seen: it agrees with the kernel's counters.
    if remote > 0 {
        assert!(kernel_remote > 0, "{numa:#}");
    }
    if kernel_remote > 0 {
        assert!(
            remote > 0,
            "kernel counted {kernel_remote} remote hint faults: {numa:#}"
        );
    }
    if d("numa_pages_migrated") > 0 {
        assert!(
            migrated_events > 0,
            "kernel migrated {} pages, no mm_migrate_pages seen: {numa:#}",
            d("numa_pages_migrated")
        );
    }
    // Where the pages are at the end: some moved to the thread's node, or
    // hint faults at least said they were remote.
    eprintln!(
        "seen: remote hint faults {remote}, pages migrated (mm_migrate_pages) {migrated_events}, task events {task_events}; KiB per node at end {}",
        numa["kib_per_node_end"]
    );
}
