//! NUMA sampling around a run: node count, balancing switch, /proc/vmstat
//! counters and the target's pages per node (numa_maps).

use std::collections::BTreeMap;

use crate::{
    node::{numa as nnuma, Roots},
    procfs,
};

#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub nodes: usize,
    pub balancing: Option<u64>,
    pub counters: nnuma::Counters,
    pub kib_per_node: BTreeMap<u32, u64>,
}

impl Sample {
    pub fn take(tgids: &[u32]) -> Sample {
        let roots = Roots::default();
        let nodes =
            crate::node::fsx::numbered_entries(&roots.sys.join("devices/system/node"), "node")
                .len()
                .max(1);
        let balancing = procfs::sysctl_parsed(&roots.proc, "kernel/numa_balancing");
        let kib_per_node = kib_per_node(tgids);
        Sample {
            nodes,
            balancing,
            counters: nnuma::snapshot(&roots),
            kib_per_node,
        }
    }

    pub fn delta(&self, later: &Sample) -> BTreeMap<String, u64> {
        nnuma::delta(&self.counters, &later.counters).vmstat
    }
}

/// The processes' resident memory per node (KiB), from numa_maps.
pub fn kib_per_node(tgids: &[u32]) -> BTreeMap<u32, u64> {
    let roots = Roots::default();
    let mut out = BTreeMap::new();
    for t in tgids {
        if let Ok(p) = nnuma::read_process(&roots, *t) {
            for (n, k) in p.kib_per_node {
                *out.entry(n).or_default() += k;
            }
        }
    }
    out
}
