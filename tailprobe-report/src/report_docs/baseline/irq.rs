//! The baseline's "IRQ / NIC affinity" section. Pure.

use std::fmt::Write as _;

use crate::experiment::{analysis::stats::Estimate, results::Results};
use crate::report_docs::{fmt::est, why};

pub fn irq_section(r: &Results, prefix: &str) -> String {
    let mut s = String::from("## IRQ / NIC affinity\n\n");
    let _ = writeln!(
        s,
        "NICs: {}. irqbalance: {}.\n",
        if r.node.nics.is_empty() {
            "none with PCI locality (virtual or loopback only)".to_string()
        } else {
            r.node.nics.join("; ")
        },
        if r.node.irqbalance {
            "running (it rewrites IRQ affinity every 10 s)"
        } else {
            "not running"
        }
    );
    let _ = writeln!(s, "| configuration | interrupts/s on the server's CPUs | interrupts/s, all CPUs | IRQ time stolen from the server ms | raw /proc/interrupts delta |\n| --- | --- | --- | --- | --- |");
    for c in r.ran() {
        let cells: Vec<_> = r
            .cells
            .iter()
            .filter(|x| x.config == c.config && x.counts())
            .collect();
        let on: Vec<f64> = cells
            .iter()
            .filter_map(|x| {
                x.metrics
                    .as_ref()
                    .map(|m| m.interrupts_on_server_cpus as f64 / x.seconds.max(1e-9))
            })
            .collect();
        let all: Vec<f64> = cells
            .iter()
            .filter_map(|x| {
                x.metrics
                    .as_ref()
                    .map(|m| m.interrupts_total as f64 / x.seconds.max(1e-9))
            })
            .collect();
        let link = cells
            .first()
            .and_then(|x| {
                x.raw
                    .iter()
                    .find(|p| p.ends_with("interrupts.txt"))
                    .cloned()
            })
            .map(|p| format!("[{}]({prefix}{})", "interrupts.txt", p))
            .unwrap_or_else(|| "–".into());
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} |",
            c.label,
            est(&Estimate::of(&on), 0),
            est(&Estimate::of(&all), 0),
            est(&c.irq_stolen_ms, 2),
            link
        );
    }
    let head = why::headline(r);
    let tail_irq = head
        .as_ref()
        .and_then(|g| Some((g.share_of("interrupt work")?, g.min_share)));
    let _ = writeln!(s, "\nObservations:\n");
    match tail_irq {
        Some((x, _)) => {
            let _ = writeln!(
                s,
                "- Interrupt work on the serving thread explains {x:.1}% of the gap between slow and typical requests (`{}`).",
                head.as_ref().map(|g| g.label.as_str()).unwrap_or("")
            );
        }
        None => {
            let _ = writeln!(
                s,
                "- The interrupt share of the tail was not measured (no tail attribution)."
            );
        }
    }
    let _ = writeln!(s, "- The load is loopback HTTP, so no NIC interrupts are involved; device IRQs on worker CPUs are measured per cell above (raw deltas linked).");
    let rec = match tail_irq {
        Some((x, bar)) if x >= bar => format!("Move device IRQs off the server's CPUs (`tailprobe irq watch --irq-move-off CPUS`, then persist in irqbalance's banned CPUs): they explain {x:.1}% of the tail's gap."),
        Some((x, _)) => format!("No IRQ change: interrupt work explains {x:.1}% of the tail's gap here. On a production node with a real NIC, keep its IRQs on the NIC's node but off the worker CPUs, and re-measure."),
        None => "None from this run: the interrupt share of the tail was not measured.".into(),
    };
    let _ = writeln!(s, "\n**Recommendation.** {rec}");
    s
}
