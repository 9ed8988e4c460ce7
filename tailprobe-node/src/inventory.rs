//! `tailprobe topo`: what the node is made of and where its devices sit.

use std::{collections::BTreeMap, fs, path::Path};

use serde::Serialize;

use crate::{
    fsx, governor,
    irq::{self, IrqPlace},
    Roots,
};
use tailprobe_system::{cpulist, sysfs::cache};

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

fn vendor_name(v: &str) -> Option<String> {
    match v {
        "0x10de" => Some("NVIDIA".into()),
        "0x1002" => Some("AMD".into()),
        "0x8086" => Some("Intel".into()),
        "0x15b3" => Some("Mellanox/NVIDIA".into()),
        "0x14e4" => Some("Broadcom".into()),
        "0x1af4" => Some("virtio".into()),
        _ => None,
    }
}

/// Accelerators: NVIDIA or AMD display/3D (class 0x03) or processing
/// accelerator (class 0x12) functions. NVSwitches and audio functions of a
/// GPU are left out.
pub fn is_accelerator(vendor: &str, class: &str) -> bool {
    let Ok(c) = u32::from_str_radix(class.trim_start_matches("0x"), 16) else {
        return false;
    };
    matches!(vendor, "0x10de" | "0x1002") && matches!(c >> 16, 0x03 | 0x12)
}

fn numa_node_of(dev: &Path) -> Option<u32> {
    let n: i64 = fsx::read_opt(&dev.join("numa_node"))?.parse().ok()?;
    u32::try_from(n).ok()
}

fn pci_device(dir: &Path, bdf: &str) -> Option<PciDevice> {
    let vendor = fsx::read_opt(&dir.join("vendor"))?;
    Some(PciDevice {
        bdf: bdf.to_string(),
        vendor_name: vendor_name(&vendor),
        device: fsx::read_opt(&dir.join("device")).unwrap_or_default(),
        class: fsx::read_opt(&dir.join("class")).unwrap_or_default(),
        numa_node: numa_node_of(dir),
        local_cpus: fsx::read_opt(&dir.join("local_cpulist")),
        vendor,
    })
}

/// PCI accelerators, sorted by bus id.
pub fn accelerators(roots: &Roots) -> Vec<PciDevice> {
    let base = roots.sys.join("bus/pci/devices");
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(&base) else {
        return out;
    };
    for e in rd.flatten() {
        let bdf = e.file_name().to_string_lossy().into_owned();
        if let Some(d) = pci_device(&e.path(), &bdf) {
            if is_accelerator(&d.vendor, &d.class) {
                out.push(d);
            }
        }
    }
    out.sort_by(|a, b| a.bdf.cmp(&b.bdf));
    out
}

/// Normalise a bus id as nvidia-smi prints it (`00000000:81:00.0`) to the
/// sysfs form (`0000:81:00.0`), lower case.
pub fn normalise_bdf(s: &str) -> String {
    let s = s.trim().to_ascii_lowercase();
    let parts: Vec<&str> = s.split(':').collect();
    match parts.as_slice() {
        [dom, bus, devfn] => {
            let dom = dom.trim_start_matches('0');
            let dom = format!("{:0>4}", if dom.is_empty() { "0" } else { dom });
            format!("{dom}:{bus}:{devfn}")
        }
        [bus, devfn] => format!("0000:{bus}:{devfn}"),
        _ => s,
    }
}

/// NICs backed by a device (loopback and purely virtual interfaces have no
/// `device` link and are skipped).
pub fn nics(roots: &Roots) -> Vec<Nic> {
    let base = roots.sys.join("class/net");
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(&base) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let dev = e.path().join("device");
        if !dev.exists() {
            continue;
        }
        let bdf = fs::canonicalize(&dev)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .filter(|n| n.matches(':').count() == 2);
        let irqs = fsx::numbered_entries(&dev.join("msi_irqs"), "")
            .into_iter()
            .map(|n| irq::place(roots, n))
            .collect();
        out.push(Nic {
            name,
            bdf,
            numa_node: numa_node_of(&dev),
            local_cpus: fsx::read_opt(&dev.join("local_cpulist")),
            irqs,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
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
        numa_balancing: fsx::read_opt(&roots.proc.join("sys/kernel/numa_balancing"))
            .and_then(|s| s.parse().ok()),
        irqbalance_pid,
        device_local_node,
        notes,
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

fn node_str(n: Option<u32>) -> String {
    n.map_or_else(|| "unknown".to_string(), |n| n.to_string())
}

fn gib(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "?".into(),
        |k| format!("{:.1} GiB", k as f64 / 1048576.0),
    )
}

/// Human rendering.
pub fn render_text(inv: &Inventory) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "CPUs online: {}", or_dash(&inv.cpus_online));
    let _ = writeln!(s, "NUMA nodes: {}", inv.nodes.len());
    for n in &inv.nodes {
        let _ = writeln!(
            s,
            "  node{}: CPUs {}, memory {} ({} free)",
            n.id,
            or_dash(&n.cpus),
            gib(n.mem_total_kib),
            gib(n.mem_free_kib)
        );
    }
    let _ = writeln!(
        s,
        "SMT sibling groups: {}",
        if inv.smt_groups.is_empty() {
            "none (no SMT)".into()
        } else {
            inv.smt_groups.join(" ")
        }
    );
    let _ = writeln!(s, "LLC groups:");
    if inv.llc_groups.is_empty() {
        let _ = writeln!(s, "  unknown (no cache information in sysfs)");
    }
    for g in &inv.llc_groups {
        let _ = writeln!(
            s,
            "  L{} {}: CPUs {}",
            g.level,
            g.size.as_deref().unwrap_or("?"),
            g.cpus
        );
    }
    let _ = writeln!(s, "Accelerators: {}", inv.accelerators.len());
    for a in &inv.accelerators {
        let _ = writeln!(
            s,
            "  {} {} {} class {}: node {}, local CPUs {}",
            a.bdf,
            a.vendor_name.as_deref().unwrap_or(&a.vendor),
            a.device,
            a.class,
            node_str(a.numa_node),
            a.local_cpus.as_deref().unwrap_or("?")
        );
    }
    let _ = writeln!(s, "NICs: {}", inv.nics.len());
    for n in &inv.nics {
        let _ = writeln!(
            s,
            "  {} ({}): node {}, local CPUs {}, {} IRQs",
            n.name,
            n.bdf.as_deref().unwrap_or("not PCI"),
            node_str(n.numa_node),
            n.local_cpus.as_deref().unwrap_or("?"),
            n.irqs.len()
        );
        for i in &n.irqs {
            let _ = writeln!(
                s,
                "    IRQ {}: allowed {}, effective {}",
                i.irq,
                i.affinity.as_deref().unwrap_or("?"),
                i.effective.as_deref().unwrap_or("?")
            );
        }
    }
    match &inv.cpufreq {
        Some(cf) => {
            let _ = writeln!(
                s,
                "cpufreq: driver {}{}, available governors: {}",
                cf.driver,
                cf.pstate_mode
                    .as_deref()
                    .map(|m| format!(" ({m} mode)"))
                    .unwrap_or_default(),
                cf.available().join(" ")
            );
            for p in &cf.policies {
                let _ = writeln!(s, "  {} (CPUs {}): {}", p.name, p.cpus, p.governor);
            }
        }
        None => {
            let _ = writeln!(s, "cpufreq: not available on this node");
        }
    }
    let _ = writeln!(s, "isolated CPUs: {}", or_dash(&inv.isolated));
    let _ = writeln!(s, "nohz_full CPUs: {}", or_dash(&inv.nohz_full));
    let _ = writeln!(
        s,
        "THP: enabled {}, defrag {}",
        inv.thp.enabled.as_deref().unwrap_or("?"),
        inv.thp.defrag.as_deref().unwrap_or("?")
    );
    let _ = writeln!(
        s,
        "NUMA balancing: {}",
        inv.numa_balancing.map_or_else(
            || "unknown".into(),
            |v| if v == 0 {
                "off".into()
            } else {
                format!("on ({v})")
            }
        )
    );
    let _ = writeln!(
        s,
        "irqbalance: {}",
        inv.irqbalance_pid
            .map_or_else(|| "not running".into(), |p| format!("running (pid {p})"))
    );
    let _ = writeln!(
        s,
        "device-local node (default pin): {}",
        inv.device_local_node.map_or_else(
            || "none (no accelerator with a known node)".into(),
            |n| format!("node{n}")
        )
    );
    for n in inv.notes.iter().chain(inv.cpufreq_note.iter()) {
        let _ = writeln!(s, "note: {n}");
    }
    s
}

/// The "Node topology" Markdown block for reports.
pub fn render_markdown(inv: &Inventory) -> String {
    use std::fmt::Write as _;
    let mut s = String::from("## Node topology\n\n| item | value |\n| --- | --- |\n");
    let mut row = |k: &str, v: String| {
        let _ = writeln!(s, "| {k} | {} |", v.replace('|', "\\|"));
    };
    row("CPUs online", or_dash(&inv.cpus_online).to_string());
    for n in &inv.nodes {
        row(
            &format!("node{}", n.id),
            format!("CPUs {}, {}", or_dash(&n.cpus), gib(n.mem_total_kib)),
        );
    }
    row(
        "SMT",
        if inv.smt_groups.is_empty() {
            "off / none".into()
        } else {
            format!("{} sibling groups", inv.smt_groups.len())
        },
    );
    row(
        "LLC groups",
        if inv.llc_groups.is_empty() {
            "unknown".into()
        } else {
            inv.llc_groups
                .iter()
                .map(|g| format!("L{} {}", g.level, g.cpus))
                .collect::<Vec<_>>()
                .join("; ")
        },
    );
    row(
        "cpufreq",
        match &inv.cpufreq {
            Some(cf) => {
                let mut govs: Vec<&str> = cf.policies.iter().map(|p| p.governor.as_str()).collect();
                govs.sort_unstable();
                govs.dedup();
                format!(
                    "{}{}, governor {}",
                    cf.driver,
                    cf.pstate_mode
                        .as_deref()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default(),
                    govs.join("/")
                )
            }
            None => "not available on this node".into(),
        },
    );
    row(
        "isolated / nohz_full",
        format!("{} / {}", or_dash(&inv.isolated), or_dash(&inv.nohz_full)),
    );
    row(
        "THP",
        format!(
            "{} (defrag {})",
            inv.thp.enabled.as_deref().unwrap_or("?"),
            inv.thp.defrag.as_deref().unwrap_or("?")
        ),
    );
    row(
        "NUMA balancing",
        inv.numa_balancing
            .map_or_else(|| "unknown".into(), |v| v.to_string()),
    );
    row(
        "irqbalance",
        inv.irqbalance_pid
            .map_or_else(|| "not running".into(), |p| format!("running (pid {p})")),
    );
    row(
        "device-local node",
        inv.device_local_node
            .map_or_else(|| "none".into(), |n| format!("node{n}")),
    );
    if !inv.accelerators.is_empty() || !inv.nics.is_empty() {
        s.push_str("\n| device | kind | node | local CPUs |\n| --- | --- | --- | --- |\n");
        for a in &inv.accelerators {
            let _ = writeln!(
                s,
                "| {} | {} accelerator | {} | {} |",
                a.bdf,
                a.vendor_name.as_deref().unwrap_or(&a.vendor),
                node_str(a.numa_node),
                a.local_cpus.as_deref().unwrap_or("?")
            );
        }
        for n in &inv.nics {
            let _ = writeln!(
                s,
                "| {} ({}) | NIC, {} IRQs | {} | {} |",
                n.name,
                n.bdf.as_deref().unwrap_or("-"),
                n.irqs.len(),
                node_str(n.numa_node),
                n.local_cpus.as_deref().unwrap_or("?")
            );
        }
    }
    for n in inv.notes.iter().chain(inv.cpufreq_note.iter()) {
        let _ = writeln!(s, "\n> {n}");
    }
    s
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
