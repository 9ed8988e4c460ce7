//! NUMA locality of a process: pages per node from `numa_maps` (like
//! `numastat -p`), per-node `numastat` and `/proc/vmstat` NUMA counter
//! deltas over a run, and the share of memory on remote nodes.

use std::{collections::BTreeMap, io, path::Path};

use serde::Serialize;

use crate::{fsx, Roots};

/// Memory of a process per node, in KiB, from `/proc/<pid>/numa_maps`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProcessNuma {
    pub kib_per_node: BTreeMap<u32, u64>,
    /// Mappings per memory policy (`default`, `bind:0`, `interleave:0-1`...).
    pub policies: BTreeMap<String, u64>,
}

/// Parse `numa_maps`: each line `<addr> <policy> ... N<node>=<pages> ...
/// kernelpagesize_kB=<k>`.
pub fn parse_numa_maps(text: &str) -> ProcessNuma {
    let mut out = ProcessNuma::default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(_addr), Some(policy)) = (it.next(), it.next()) else {
            continue;
        };
        let e = out.policies.entry(policy.to_string()).or_default();
        *e = e.saturating_add(1);
        let mut page_kib = 4u64;
        let mut nodes: Vec<(u32, u64)> = Vec::new();
        for tok in it {
            if let Some(k) = tok.strip_prefix("kernelpagesize_kB=") {
                page_kib = k.parse().unwrap_or(4);
            } else if let Some(rest) = tok.strip_prefix('N') {
                if let Some((n, p)) = rest.split_once('=') {
                    if let (Ok(n), Ok(p)) = (n.parse(), p.parse()) {
                        nodes.push((n, p));
                    }
                }
            }
        }
        for (n, p) in nodes {
            // Saturating: a corrupt line must not overflow (or panic).
            let e = out.kib_per_node.entry(n).or_default();
            *e = e.saturating_add(p.saturating_mul(page_kib));
        }
    }
    out
}

pub fn read_process(roots: &Roots, pid: u32) -> io::Result<ProcessNuma> {
    let s = std::fs::read_to_string(roots.proc.join(format!("{pid}/numa_maps")))?;
    Ok(parse_numa_maps(&s))
}

/// Share of the memory on nodes outside `local` (0.0 ..= 1.0); `None`
/// with no memory.
pub fn remote_share(p: &ProcessNuma, local: &[u32]) -> Option<f64> {
    // In f64: huge (corrupt) counts must not overflow an integer sum.
    let total: f64 = p.kib_per_node.values().map(|&k| k as f64).sum();
    if total == 0.0 {
        return None;
    }
    let remote: f64 = p
        .kib_per_node
        .iter()
        .filter(|(n, _)| !local.contains(n))
        .map(|(_, &k)| k as f64)
        .sum();
    Some(remote / total)
}

/// `key value` lines (numastat, vmstat) into a map.
pub fn parse_kv(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

/// The vmstat counters about NUMA balancing and migration.
pub const VMSTAT_KEYS: &[&str] = &[
    "numa_pte_updates",
    "numa_hint_faults",
    "numa_hint_faults_local",
    "numa_pages_migrated",
    "pgmigrate_success",
    "pgmigrate_fail",
];

/// A snapshot of node numastat and NUMA vmstat counters.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    pub numastat: BTreeMap<u32, BTreeMap<String, u64>>,
    pub vmstat: BTreeMap<String, u64>,
}

pub fn snapshot(roots: &Roots) -> Counters {
    let base = roots.sys.join("devices/system/node");
    let numastat = fsx::numbered_entries(&base, "node")
        .into_iter()
        .filter_map(|n| {
            let s = std::fs::read_to_string(base.join(format!("node{n}/numastat"))).ok()?;
            Some((n, parse_kv(&s)))
        })
        .collect();
    let vm = std::fs::read_to_string(roots.proc.join("vmstat")).unwrap_or_default();
    let vmstat = parse_kv(&vm)
        .into_iter()
        .filter(|(k, _)| VMSTAT_KEYS.contains(&k.as_str()))
        .collect();
    Counters { numastat, vmstat }
}

/// Increases between two snapshots (pages, as the kernel counts them).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CounterDelta {
    pub numastat: BTreeMap<u32, BTreeMap<String, u64>>,
    /// Keys absent from vmstat (kernel without CONFIG_NUMA_BALANCING) are
    /// left out, not shown as zero.
    pub vmstat: BTreeMap<String, u64>,
}

pub fn delta(a: &Counters, b: &Counters) -> CounterDelta {
    let sub = |x: &BTreeMap<String, u64>, y: &BTreeMap<String, u64>| -> BTreeMap<String, u64> {
        y.iter()
            .filter_map(|(k, v)| Some((k.clone(), v.saturating_sub(*x.get(k)?))))
            .collect()
    };
    CounterDelta {
        numastat: b
            .numastat
            .iter()
            .filter_map(|(n, m)| Some((*n, sub(a.numastat.get(n)?, m))))
            .collect(),
        vmstat: sub(&a.vmstat, &b.vmstat),
    }
}

/// Nodes of a list of CPUs, given each node's CPUs.
pub fn local_nodes(node_cpus: &[(u32, Vec<u32>)], cpus: &[u32]) -> Vec<u32> {
    node_cpus
        .iter()
        .filter(|(_, c)| c.iter().any(|x| cpus.contains(x)))
        .map(|(n, _)| *n)
        .collect()
}

/// Is `path` an existing numa_maps (the kernel has CONFIG_NUMA)?
pub fn has_numa_maps(proc: &Path, pid: u32) -> bool {
    proc.join(format!("{pid}/numa_maps")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000 default file=/usr/bin/python3.11 mapped=300 mapmax=2 N0=200 N1=100 kernelpagesize_kB=4
7f0000000000 bind:1 anon=1000 dirty=1000 N1=1000 kernelpagesize_kB=4
7f1000000000 default anon=4 dirty=4 N0=4 kernelpagesize_kB=2048
7ffd00000000 default stack anon=3 dirty=3 N0=3 kernelpagesize_kB=4
7ffd10000000 default
";

    #[test]
    fn pages_per_node_in_kib() {
        let p = parse_numa_maps(MAPS);
        assert_eq!(p.kib_per_node[&0], 200 * 4 + 4 * 2048 + 3 * 4);
        assert_eq!(p.kib_per_node[&1], 100 * 4 + 1000 * 4);
        assert_eq!(p.policies["default"], 4);
        assert_eq!(p.policies["bind:1"], 1);
        let share = remote_share(&p, &[0]).unwrap();
        assert!((share - 4400.0 / (4400.0 + 9004.0)).abs() < 1e-9);
        assert_eq!(remote_share(&ProcessNuma::default(), &[0]), None);
    }

    #[test]
    fn deltas() {
        let mut a = Counters::default();
        let mut b = Counters::default();
        a.numastat.insert(0, parse_kv("numa_hit 10\nnuma_miss 1\n"));
        b.numastat.insert(0, parse_kv("numa_hit 25\nnuma_miss 1\n"));
        a.vmstat = parse_kv("numa_hint_faults 5\n");
        b.vmstat = parse_kv("numa_hint_faults 9\npgmigrate_success 3\n");
        let d = delta(&a, &b);
        assert_eq!(d.numastat[&0]["numa_hit"], 15);
        assert_eq!(d.numastat[&0]["numa_miss"], 0);
        assert_eq!(d.vmstat["numa_hint_faults"], 4);
        assert!(!d.vmstat.contains_key("pgmigrate_success"));
    }

    #[test]
    fn local_nodes_of_cpus() {
        let n = vec![(0, vec![0, 1]), (1, vec![2, 3])];
        assert_eq!(local_nodes(&n, &[1, 2]), vec![0, 1]);
        assert_eq!(local_nodes(&n, &[3]), vec![1]);
    }

    #[test]
    fn huge_page_counts_saturate_instead_of_overflowing() {
        let p = parse_numa_maps(
            "7f00 default N0=18446744073709551615 kernelpagesize_kB=4\n\
             7f01 default N0=5 N1=18446744073709551615 kernelpagesize_kB=2048\n",
        );
        assert_eq!(p.kib_per_node[&0], u64::MAX);
        assert_eq!(p.kib_per_node[&1], u64::MAX);
        let share = remote_share(&p, &[0]).unwrap();
        assert!((share - 0.5).abs() < 1e-9, "{share}");
    }
}
