//! The baseline's "NUMA locality" section. Pure.

use std::fmt::Write as _;

use crate::experiment::{
    plan::{NoiseAxis, Pinning},
    results::Results,
};
use crate::report_docs::verdict::{self, slo_percentile};

pub fn numa_section(r: &Results) -> String {
    let mut s = String::from("## NUMA locality\n\n");
    let _ = writeln!(
        s,
        "Nodes: {}. Local node for pinning: {}.\n",
        r.node
            .nodes
            .iter()
            .map(|n| format!(
                "node{} CPUs {} ({})",
                n.id,
                n.cpus,
                n.mem_total_kib
                    .map(|k| format!("{} MiB", k / 1024))
                    .unwrap_or_else(|| "size not read".into())
            ))
            .collect::<Vec<_>>()
            .join("; "),
        r.node.device_local
    );
    let _ = writeln!(s, "| configuration | status | server memory per node (MiB, end of cell) | remote share | cross-NUMA migrations | NUMA balancing moves |\n| --- | --- | --- | --- | --- | --- |");
    for c in r
        .configs
        .iter()
        .filter(|c| c.config.governor == "current" && c.config.noise == NoiseAxis::None)
    {
        let m = r
            .cells
            .iter()
            .filter(|x| x.config == c.config && x.counts())
            .find_map(|x| x.metrics.as_ref());
        let mem = m
            .map(|m| {
                m.numa_kib_per_node
                    .iter()
                    .map(|(n, k)| format!("N{n}: {:.1}", *k as f64 / 1024.0))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|| "–".into());
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            c.label,
            match c.status {
                crate::experiment::results::CellStatus::Ran => format!("ran x{}", c.repeats),
                st => format!("{}: {}", st.words(), c.reason.as_deref().unwrap_or("")),
            },
            mem,
            c.remote_share
                .map(|e| format!("{:.1}%", e.mean * 100.0))
                .unwrap_or_else(|| "–".into()),
            m.map(|m| m.migrations_cross_numa.to_string())
                .unwrap_or_else(|| "–".into()),
            m.map(|m| m.numa_task_moves.to_string())
                .unwrap_or_else(|| "–".into()),
        );
    }
    let _ = writeln!(s, "\nObservations:\n");
    let one = r.node.nodes.len() <= 1;
    if one {
        let _ = writeln!(s, "- One NUMA node: all memory is local by construction; remote pinning and other-node noise are not applicable here (recorded with the reason, not run).");
    }
    let _ = writeln!(
        s,
        "- NUMA balancing: {}.",
        match r.node.numa_balancing {
            Some(0) => "off".to_string(),
            Some(v) => format!("on ({v})"),
            None => "not present in this kernel".into(),
        }
    );
    if let Some(e) = verdict::pinning_effect(r) {
        let _ = writeln!(
            s,
            "- Pinned to the local node, against unpinned: {}.",
            e.sentence()
        );
    }
    let pinned = r
        .ran()
        .find(|c| {
            c.config.governor == "current"
                && c.config.pinning == Pinning::Local
                && c.config.noise == NoiseAxis::None
        })
        .cloned();
    let rec = if one {
        "Nothing to fix on a single-node machine; on multi-socket nodes pin the server and bind its memory to the accelerators' node (the drop-in below does both) and re-run this plan there to measure the remote penalty.".to_string()
    } else {
        let remote = r.ran().find(|c| {
            c.config.pinning == Pinning::Remote
                && c.config.noise == NoiseAxis::None
                && c.config.governor == "current"
        });
        match (remote, pinned.as_ref()) {
            (Some(rm), Some(lc)) => match verdict::compare(lc, rm, slo_percentile(r)) {
                Some(e) if e.material_slowdown() => format!("Pin the server to the device-local node with its memory bound there: remote placement {} against local.", e.sentence()),
                Some(e) => format!("No change from this run: remote placement {} against local.", e.sentence()),
                None => "None from this run: remote and local placement were not both measured.".into(),
            },
            _ => "None from this run: remote and local placement were not both measured.".into(),
        }
    };
    let _ = writeln!(s, "\n**Recommendation.** {rec}");
    s
}
