//! The exporter's own cost (its CPU time and resident memory, the eBPF
//! programs' share of a CPU) and the targets' memory per NUMA node.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use probe_common::CpuTopo;

use crate::{
    cpulist,
    node::{numa as nnuma, Roots},
    procfs::ProcFs,
};

/// `utime + stime` of `self/stat` under `proc`, in seconds.
pub fn self_cpu_seconds(proc: &ProcFs) -> f64 {
    let Ok(s) = proc.own_file("stat") else {
        return 0.0;
    };
    // Fields after the parenthesised comm: state is field 3; utime, stime
    // are fields 14 and 15 (1-based).
    let Some(rest) = s.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|i| f.get(*i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    ticks as f64 / hz
}

/// `VmRSS` of a process's status file, in bytes.
pub fn rss_bytes(status_text: &str) -> Option<u64> {
    status_text.lines().find_map(|l| {
        let v = l.strip_prefix("VmRSS:")?;
        let kib: u64 = v.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    })
}

/// This process's `VmRSS` (`self/status` under `proc`), 0 when unknown.
pub fn self_rss_bytes(proc: &ProcFs) -> u64 {
    proc.own_file("status")
        .ok()
        .and_then(|s| rss_bytes(&s))
        .unwrap_or(0)
}

/// The programs' CPU share between two samples of their summed run time.
#[derive(Debug, Default)]
pub struct CpuShare {
    last: Option<(Instant, u64)>,
    pub ratio: Option<f64>,
}

impl CpuShare {
    /// Take a sample when `every` has passed since the last one.
    pub fn sample(&mut self, run_ns: u64, every: Duration) {
        let now = Instant::now();
        match self.last {
            Some((t, _)) if now.duration_since(t) < every => {}
            Some((t, ns)) => {
                let wall = now.duration_since(t).as_nanos() as f64;
                if wall > 0.0 {
                    self.ratio = Some(run_ns.saturating_sub(ns) as f64 / wall);
                }
                self.last = Some((now, run_ns));
            }
            None => self.last = Some((now, run_ns)),
        }
    }
}

/// One target's memory: bytes per node, and the share on nodes none of its
/// processes' allowed CPUs belong to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Memory {
    pub per_node: BTreeMap<u32, u64>,
    pub remote_ratio: Option<f64>,
}

/// Read numa_maps and the allowed CPUs of `tgids` (processes that vanish
/// meanwhile are skipped).
pub fn memory(proc: &ProcFs, topo: &[(u32, CpuTopo)], tgids: &[u32]) -> Memory {
    let roots = Roots {
        proc: proc.root().to_path_buf(),
        ..Roots::default()
    };
    let mut node_cpus: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (cpu, t) in topo {
        node_cpus.entry(t.node_id).or_default().push(*cpu);
    }
    let node_cpus: Vec<(u32, Vec<u32>)> = node_cpus.into_iter().collect();
    let mut all = nnuma::ProcessNuma::default();
    let mut remote_kib = 0f64;
    for t in tgids {
        let Ok(p) = nnuma::read_process(&roots, *t) else {
            continue;
        };
        let cpus = proc
            .status(*t)
            .ok()
            .and_then(|s| cpulist::parse(&s.cpus_allowed_list).ok())
            .unwrap_or_default();
        let local = nnuma::local_nodes(&node_cpus, &cpus);
        let total: f64 = p.kib_per_node.values().map(|&k| k as f64).sum();
        if let Some(r) = nnuma::remote_share(&p, &local) {
            remote_kib += r * total;
        }
        for (n, k) in p.kib_per_node {
            let e = all.kib_per_node.entry(n).or_default();
            *e = e.saturating_add(k);
        }
    }
    let total: f64 = all.kib_per_node.values().map(|&k| k as f64).sum();
    Memory {
        per_node: all
            .kib_per_node
            .iter()
            .map(|(n, k)| (*n, k.saturating_mul(1024)))
            .collect(),
        remote_ratio: (total > 0.0 && !node_cpus.is_empty()).then(|| remote_kib / total),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_parse() {
        let s = "Name:\tx\nVmRSS:\t   12345 kB\nThreads:\t1\n";
        assert_eq!(rss_bytes(s), Some(12345 * 1024));
        assert_eq!(rss_bytes("Name: x\n"), None);
        assert!(self_rss_bytes(&ProcFs::default()) > 0);
        assert!(self_cpu_seconds(&ProcFs::default()) >= 0.0);
    }

    #[test]
    fn own_cost_from_a_fixture_tree() {
        let d = tempfile::tempdir().unwrap();
        let own = d.path().join("self");
        std::fs::create_dir_all(&own).unwrap();
        // utime 150 and stime 50 ticks (fields 14 and 15); a comm with a
        // space and a parenthesis.
        std::fs::write(
            own.join("stat"),
            "77 (a (b) c) S 1 77 77 0 -1 4194560 10 0 0 0 150 50 0 0 20 0 3 0 99\n",
        )
        .unwrap();
        std::fs::write(own.join("status"), "Name:\tx\nVmRSS:\t  2048 kB\n").unwrap();
        let proc = ProcFs::new(d.path());
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        assert!((self_cpu_seconds(&proc) * hz - 200.0).abs() < 1e-9);
        assert_eq!(self_rss_bytes(&proc), 2048 * 1024);
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(self_cpu_seconds(&ProcFs::new(empty.path())), 0.0);
        assert_eq!(self_rss_bytes(&ProcFs::new(empty.path())), 0);
    }

    #[test]
    fn cpu_share_over_an_interval() {
        let mut c = CpuShare::default();
        c.sample(0, Duration::ZERO);
        std::thread::sleep(Duration::from_millis(20));
        c.sample(2_000_000, Duration::ZERO);
        let r = c.ratio.unwrap();
        // 2 ms over >= 20 ms of wall time.
        assert!(r > 0.0 && r <= 0.1, "{r}");
    }
}
