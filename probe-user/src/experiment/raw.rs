//! The raw snapshots an engineer would otherwise collect by hand, one set
//! per cell: a `numastat -p`-style per-process table, a `perf stat`-style
//! counter table and `/proc/interrupts` deltas. Pure formatting.

use std::{collections::BTreeMap, fmt::Write as _};

use crate::node::{counters::Count, irq::IrqDelta};

/// `numastat -p PID` style: the process's memory per node (MB), then the
/// node counters' increase during the cell (pages).
pub fn numastat(
    pid: u32,
    comm: &str,
    kib_per_node: &BTreeMap<u32, u64>,
    node_delta: &BTreeMap<u32, BTreeMap<String, u64>>,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nPer-node process memory usage (in MBs) for PID {pid} ({comm})"
    );
    let nodes: Vec<u32> = kib_per_node.keys().copied().collect();
    let mut head = format!("{:<20}", "");
    let mut rule = format!("{:<20}", "");
    for n in &nodes {
        let _ = write!(head, " {:>15}", format!("Node {n}"));
        let _ = write!(rule, " {:>15}", "---------------");
    }
    let _ = writeln!(s, "{head} {:>15}", "Total");
    let _ = writeln!(s, "{rule} {:>15}", "---------------");
    let mut line = format!("{:<20}", "Total");
    let mut total = 0u64;
    for n in &nodes {
        let k = kib_per_node[n];
        total += k;
        let _ = write!(line, " {:>15.2}", k as f64 / 1024.0);
    }
    let _ = writeln!(line, " {:>15.2}", total as f64 / 1024.0);
    s.push_str(&line);
    if !node_delta.is_empty() {
        let _ = writeln!(s, "\nNode counters, increase during the cell (pages):");
        let keys: Vec<String> = node_delta
            .values()
            .next()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let mut head = format!("{:<20}", "");
        for n in node_delta.keys() {
            let _ = write!(head, " {:>15}", format!("Node {n}"));
        }
        let _ = writeln!(s, "{head}");
        for k in keys {
            let mut l = format!("{k:<20}");
            for m in node_delta.values() {
                let _ = write!(l, " {:>15}", m.get(&k).copied().unwrap_or(0));
            }
            let _ = writeln!(s, "{l}");
        }
    }
    s
}

fn thousands(v: u64) -> String {
    let d = v.to_string();
    let mut out = String::new();
    for (i, c) in d.chars().enumerate() {
        if i > 0 && (d.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `perf stat -p PID` style.
pub fn perf_stat(pid: u32, threads: usize, counts: &[Count], seconds: f64) -> String {
    let mut s =
        format!("\n Performance counter stats for process id '{pid}' ({threads} threads):\n\n");
    for c in counts {
        match c.value {
            Some(v) if c.event == "task-clock" => {
                let _ = writeln!(s, "{:>18.2} msec {}", v as f64 / 1e6, c.event);
            }
            Some(v) => {
                let _ = writeln!(s, "{:>18}      {}", thousands(v), c.event);
            }
            None => {
                let _ = writeln!(
                    s,
                    "{:>18}      {}  ({})",
                    "<not supported>",
                    c.event,
                    c.note.as_deref().unwrap_or("")
                );
            }
        }
    }
    let _ = writeln!(s, "\n{seconds:>18.3} seconds time elapsed");
    s
}

/// `/proc/interrupts` deltas: one row per source that fired, per CPU, with
/// the server's CPUs marked.
pub fn interrupts(deltas: &[IrqDelta], cpus: &[u32], server_cpus: &[u32]) -> String {
    let mut s = String::from("Interrupts during the cell (/proc/interrupts deltas)\n");
    let mut head = format!("{:>8}", "");
    for c in cpus {
        let mark = if server_cpus.contains(c) { "*" } else { "" };
        let _ = write!(head, " {:>10}", format!("CPU{c}{mark}"));
    }
    let _ = writeln!(s, "{head} {:>10}  source", "total");
    let mut rows: Vec<&IrqDelta> = deltas.iter().filter(|d| d.total > 0).collect();
    rows.sort_by_key(|d| std::cmp::Reverse(d.total));
    for d in rows {
        let mut l = format!("{:>8}", format!("{}:", d.name));
        for c in cpus {
            let n = d
                .per_cpu
                .iter()
                .find(|(x, _)| x == c)
                .map(|(_, n)| *n)
                .unwrap_or(0);
            let _ = write!(l, " {n:>10}");
        }
        let _ = writeln!(s, "{l} {:>10}  {}", d.total, d.desc);
    }
    let _ = writeln!(s, "(* the server's CPUs)");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_look_like_the_tools() {
        let mut k = BTreeMap::new();
        k.insert(0, 2048);
        k.insert(1, 1024);
        let t = numastat(7, "tailprobe", &k, &BTreeMap::new());
        assert!(t.contains("for PID 7 (tailprobe)"));
        assert!(t.contains("Node 0"));
        assert!(
            t.lines()
                .any(|l| l.starts_with("Total") && l.trim_end().ends_with("3.00")),
            "{t}"
        );
        let c = vec![
            Count {
                event: "context-switches",
                value: Some(1234567),
                note: None,
                scaled: false,
            },
            Count {
                event: "cycles",
                value: None,
                note: Some("not supported here".into()),
                scaled: false,
            },
        ];
        let p = perf_stat(7, 3, &c, 4.0);
        assert!(p.contains("1,234,567      context-switches"), "{p}");
        assert!(p.contains("<not supported>"));
        let d = vec![IrqDelta {
            name: "LOC".into(),
            desc: "Local timer interrupts".into(),
            per_cpu: vec![(0, 5), (1, 7)],
            total: 12,
        }];
        let i = interrupts(&d, &[0, 1], &[1]);
        assert!(i.contains("CPU1*"));
        assert!(i.contains("LOC:"), "{i}");
    }
}
