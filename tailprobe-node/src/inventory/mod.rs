//! `tailprobe topo`: what the node is made of and where its devices sit.

use std::{collections::BTreeMap, fs, path::Path};

use serde::Serialize;

use crate::{fsx, governor, irq::IrqPlace, Roots};
use tailprobe_system::{cpulist, sysfs::cache};

mod pci;
mod render;

pub use pci::{accelerators, is_accelerator, nics, normalise_bdf};
pub use render::{render_markdown, render_text};

/// A NUMA node.
#[derive(Debug, Clone, Serialize)]
pub struct NumaNode {
    pub id: u32,
    pub cpus: String,
    pub mem_total_kib: Option<u64>,
    pub mem_free_kib: Option<u64>,
}

/// A group of CPUs sharing the last-level cache.
#[derive(Debug, Clone, Serialize)]
pub struct LlcGroup {
    pub level: u32,
    pub size: Option<String>,
    pub cpus: String,
}

/// A PCI device of interest (accelerator, NIC).
#[derive(Debug, Clone, Serialize)]
pub struct PciDevice {
    /// Bus id as sysfs writes it, `0000:81:00.0`.
    pub bdf: String,
    pub vendor: String,
    pub vendor_name: Option<String>,
    pub device: String,
    pub class: String,
    /// `None` when sysfs says -1: locality unknown, *not* "any node".
    pub numa_node: Option<u32>,
    pub local_cpus: Option<String>,
}

/// A network interface backed by a device.
#[derive(Debug, Clone, Serialize)]
pub struct Nic {
    pub name: String,
    pub bdf: Option<String>,
    pub numa_node: Option<u32>,
    pub local_cpus: Option<String>,
    pub irqs: Vec<IrqPlace>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Thp {
    pub enabled: Option<String>,
    pub defrag: Option<String>,
}

/// Everything `tailprobe topo` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    pub cpus_online: String,
    pub nodes: Vec<NumaNode>,
    /// SMT sibling groups with more than one CPU.
    pub smt_groups: Vec<String>,
    pub llc_groups: Vec<LlcGroup>,
    pub accelerators: Vec<PciDevice>,
    pub nics: Vec<Nic>,
    /// `None`: no cpufreq on this node (see `cpufreq_note`).
    pub cpufreq: Option<governor::CpuFreq>,
    pub cpufreq_note: Option<String>,
    pub isolated: String,
    pub nohz_full: String,
    pub thp: Thp,
    /// `/proc/sys/kernel/numa_balancing` (0 off, 1 on, 2 tiering).
    pub numa_balancing: Option<u32>,
    /// Pid of a running irqbalance (it rewrites IRQ affinity every 10 s).
    pub irqbalance_pid: Option<u32>,
    /// Where to pin by default: the node holding most accelerators with a
    /// known node; `None` without accelerators or when none is known.
    pub device_local_node: Option<u32>,
    /// Findings in words (locality unknown on a multi-socket host, ...).
    pub notes: Vec<String>,
}

fn meminfo_kib(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.split_once(key)?.1;
        rest.trim_start_matches(':')
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// NUMA nodes with their CPUs and memory.
pub fn numa_nodes(roots: &Roots) -> Vec<NumaNode> {
    let base = roots.sys.join("devices/system/node");
    fsx::numbered_entries(&base, "node")
        .into_iter()
        .map(|id| {
            let d = base.join(format!("node{id}"));
            let mi = fsx::read_opt(&d.join("meminfo")).unwrap_or_default();
            NumaNode {
                id,
                cpus: fsx::read_opt(&d.join("cpulist")).unwrap_or_default(),
                mem_total_kib: meminfo_kib(&mi, "MemTotal"),
                mem_free_kib: meminfo_kib(&mi, "MemFree"),
            }
        })
        .collect()
}

fn smt_and_llc(roots: &Roots, online: &[u32]) -> (Vec<String>, Vec<LlcGroup>) {
    let cpu = roots.sys.join("devices/system/cpu");
    let mut smt = BTreeMap::<Vec<u32>, ()>::new();
    let mut llc = BTreeMap::<Vec<u32>, LlcGroup>::new();
    for &c in online {
        let d = cpu.join(format!("cpu{c}"));
        if let Some(s) = fsx::read_opt(&d.join("topology/thread_siblings_list")) {
            if let Ok(v) = cpulist::parse(&s) {
                if v.len() > 1 {
                    smt.insert(v, ());
                }
            }
        }
        if let Some(l) = cache::llc(&roots.sys, c) {
            if !l.shared_cpus.is_empty() {
                llc.entry(l.shared_cpus.clone()).or_insert(LlcGroup {
                    level: l.level,
                    cpus: cpulist::Display(&l.shared_cpus).to_string(),
                    size: l.size,
                });
            }
        }
    }
    (
        smt.keys()
            .map(|v| cpulist::Display(v).to_string())
            .collect(),
        llc.into_values().collect(),
    )
}

fn find_irqbalance(proc: &Path) -> Option<u32> {
    let rd = fs::read_dir(proc).ok()?;
    rd.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim() == "irqbalance").then_some(pid)
    })
}

/// The bracketed choice of a THP file: `always [madvise] never` -> madvise.
pub fn bracketed(s: &str) -> Option<String> {
    let a = s.find('[')?;
    let b = s[a..].find(']')? + a;
    Some(s[a + 1..b].to_string())
}

/// The node most accelerators sit on (ties: the lowest id).
pub fn device_local_node(accels: &[PciDevice]) -> Option<u32> {
    let mut count = BTreeMap::<u32, usize>::new();
    for a in accels {
        if let Some(n) = a.numa_node {
            *count.entry(n).or_default() += 1;
        }
    }
    let max = *count.values().max()?;
    count.into_iter().find(|(_, c)| *c == max).map(|(n, _)| n)
}

/// Read the whole inventory.
pub fn read(roots: &Roots) -> Inventory {
    let online_s = fsx::read_opt(&roots.sys.join("devices/system/cpu/online")).unwrap_or_default();
    let online = cpulist::parse(&online_s).unwrap_or_default();
    let nodes = numa_nodes(roots);
    let (smt_groups, llc_groups) = smt_and_llc(roots, &online);
    let accelerators = accelerators(roots);
    let nics = nics(roots);
    let (cpufreq, cpufreq_note) = match governor::read(roots) {
        Ok(cf) => {
            let note = cf.pstate_note();
            (Some(cf), note)
        }
        Err(na) => (None, Some(na.to_string())),
    };
    let cpu = roots.sys.join("devices/system/cpu");
    let thp_dir = roots.sys.join("kernel/mm/transparent_hugepage");
    let mut notes = Vec::new();
    let unknown: Vec<&str> = accelerators
        .iter()
        .filter(|a| a.numa_node.is_none())
        .map(|a| a.bdf.as_str())
        .collect();
    if nodes.len() > 1 && !unknown.is_empty() {
        notes.push(format!(
            "device locality unknown (numa_node -1) on a {}-node host for {}: check the \
             firmware's SRAT/_PXM (or set it in the hypervisor) before pinning",
            nodes.len(),
            unknown.join(", ")
        ));
    }
    let irqbalance_pid = find_irqbalance(&roots.proc);
    if let Some(pid) = irqbalance_pid {
        notes.push(format!(
            "irqbalance is running (pid {pid}): it rewrites IRQ affinity every 10 s, so \
             IRQ moves do not last while it runs"
        ));
    }
    let device_local_node = device_local_node(&accelerators);
    Inventory {
        cpus_online: cpulist::Display(&online).to_string(),
        nodes,
        smt_groups,
        llc_groups,
        accelerators,
        nics,
        cpufreq,
        cpufreq_note,
        isolated: fsx::read_opt(&cpu.join("isolated")).unwrap_or_default(),
        // An unset nohz_full reads "(null)".
        nohz_full: fsx::read_opt(&cpu.join("nohz_full"))
            .filter(|s| s != "(null)")
            .unwrap_or_default(),
        thp: Thp {
            enabled: fsx::read_opt(&thp_dir.join("enabled")).and_then(|s| bracketed(&s)),
            defrag: fsx::read_opt(&thp_dir.join("defrag")).and_then(|s| bracketed(&s)),
        },
        numa_balancing: tailprobe_system::procfs::sysctl_parsed(
            &roots.proc,
            "kernel/numa_balancing",
        ),
        irqbalance_pid,
        device_local_node,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bdf_forms() {
        assert_eq!(normalise_bdf("00000000:81:00.0"), "0000:81:00.0");
        assert_eq!(normalise_bdf("0000:1A:00.0"), "0000:1a:00.0");
        assert_eq!(normalise_bdf("81:00.0"), "0000:81:00.0");
    }

    #[test]
    fn accelerator_classes() {
        assert!(is_accelerator("0x10de", "0x030200"));
        assert!(is_accelerator("0x1002", "0x120000"));
        assert!(!is_accelerator("0x10de", "0x068000")); // NVSwitch bridge
        assert!(!is_accelerator("0x8086", "0x030000"));
    }

    #[test]
    fn thp_choice() {
        assert_eq!(
            bracketed("always [madvise] never").as_deref(),
            Some("madvise")
        );
        assert_eq!(bracketed("nothing"), None);
    }

    #[test]
    fn device_local_is_the_majority_node() {
        let d = |n: Option<u32>| PciDevice {
            bdf: String::new(),
            vendor: "0x10de".into(),
            vendor_name: None,
            device: String::new(),
            class: String::new(),
            numa_node: n,
            local_cpus: None,
        };
        assert_eq!(
            device_local_node(&[d(Some(1)), d(Some(0)), d(Some(1))]),
            Some(1)
        );
        assert_eq!(device_local_node(&[d(Some(1)), d(Some(0))]), Some(0));
        assert_eq!(device_local_node(&[d(None)]), None);
        assert_eq!(device_local_node(&[]), None);
    }
}
