//! `tailprobe topo` output: the human text and the "Node topology"
//! Markdown block for reports.

use super::Inventory;

pub(super) fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

pub(super) fn node_str(n: Option<u32>) -> String {
    n.map_or_else(|| "unknown".to_string(), |n| n.to_string())
}

pub(super) fn gib(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "?".into(),
        |k| format!("{:.1} GiB", k as f64 / 1048576.0),
    )
}

/// Human rendering.
pub fn render_text(inv: &Inventory) -> String {
    let mut s = String::new();
    text_cpus(&mut s, inv);
    text_devices(&mut s, inv);
    text_tuning(&mut s, inv);
    s
}

/// CPUs, NUMA nodes, SMT siblings, LLC groups.
fn text_cpus(s: &mut String, inv: &Inventory) {
    use std::fmt::Write as _;
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
}

/// Accelerators and NICs with their locality and IRQs.
fn text_devices(s: &mut String, inv: &Inventory) {
    use std::fmt::Write as _;
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
}

/// cpufreq, isolation, THP, NUMA balancing, irqbalance, the default pin, notes.
fn text_tuning(s: &mut String, inv: &Inventory) {
    use std::fmt::Write as _;
    match &inv.cpufreq {
        Some(cf) => {
            let _ = writeln!(
                s,
                "cpufreq: driver {}, available governors: {}",
                cf.driver_words(),
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
