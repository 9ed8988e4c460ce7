//! What this node offers and what the documents say about it, read once.

use std::path::Path;

use crate::{
    cpulist,
    experiment::{
        matrix::NodeFacts,
        results::{NodeInfo, NodeRow},
    },
    node::{inventory, pin, Roots},
};

/// What this node offers, read once.
pub fn node_facts(roots: &Roots) -> (NodeFacts, inventory::Inventory) {
    let inv = inventory::read(roots);
    let online = cpulist::parse(&inv.cpus_online).unwrap_or_default();
    let mut nodes = pin::node_cpus(roots);
    for (_, c) in nodes.iter_mut() {
        c.retain(|x| online.contains(x));
    }
    if nodes.is_empty() {
        nodes = vec![(0, online.clone())];
    }
    let (governors, current_governor) = match &inv.cpufreq {
        Some(cf) => (
            Ok(cf.available()),
            cf.policies.first().map(|p| p.governor.clone()),
        ),
        None => (
            Err(inv
                .cpufreq_note
                .clone()
                .unwrap_or_else(|| "no cpufreq".into())),
            None,
        ),
    };
    let facts = NodeFacts {
        online,
        nodes,
        governors,
        current_governor,
        device_local_node: inv.device_local_node,
    };
    (facts, inv)
}

pub fn node_info(facts: &NodeFacts, inv: &inventory::Inventory, roots: &Roots) -> NodeInfo {
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    NodeInfo {
        hostname: read(&roots.proc.join("sys/kernel/hostname")),
        kernel: read(&roots.proc.join("sys/kernel/osrelease")),
        cpus_online: inv.cpus_online.clone(),
        nodes: inv
            .nodes
            .iter()
            .map(|n| NodeRow {
                id: n.id,
                cpus: n.cpus.clone(),
                mem_total_kib: n.mem_total_kib,
            })
            .collect(),
        cpufreq: match &inv.cpufreq {
            Some(cf) => format!(
                "{}, governor {}",
                cf.driver,
                facts.current_governor.as_deref().unwrap_or("?")
            ),
            None => inv
                .cpufreq_note
                .as_deref()
                .unwrap_or("no cpufreq")
                .trim_start_matches("not available on this node: ")
                .to_string(),
        },
        accelerators: inv.accelerators.len(),
        device_local: facts.local_node().1,
        nics: inv
            .nics
            .iter()
            .map(|n| {
                format!(
                    "{} (node {}, {} IRQs)",
                    n.name,
                    n.numa_node
                        .map(|x| x.to_string())
                        .unwrap_or_else(|| "unknown".into()),
                    n.irqs.len()
                )
            })
            .collect(),
        numa_balancing: inv.numa_balancing,
        thp: inv.thp.enabled.clone(),
        irqbalance: inv.irqbalance_pid.is_some(),
        isolated: inv.isolated.clone(),
        topology_markdown: inventory::render_markdown(inv),
        facts: facts.clone(),
    }
}
