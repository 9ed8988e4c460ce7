//! IRQ placement: `/proc/interrupts` counts per CPU, IRQ affinity, and
//! moving movable IRQs off a set of CPUs through the journal.

use std::{collections::BTreeMap, io};

use serde::Serialize;

use crate::{
    fsx,
    journal::{Journal, JournalError},
    Roots,
};
use tailprobe_system::cpulist;

/// One line of `/proc/interrupts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IrqRow {
    /// `"30"` for a numbered IRQ, `"LOC"`, `"NMI"`... for the others.
    pub name: String,
    /// Counts per CPU, in the order of [`Interrupts::cpus`].
    pub counts: Vec<u64>,
    /// The rest of the line: chip, hwirq, type, device names.
    pub desc: String,
}

impl IrqRow {
    pub fn number(&self) -> Option<u32> {
        self.name.parse().ok()
    }
}

/// `/proc/interrupts`, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Interrupts {
    pub cpus: Vec<u32>,
    pub rows: Vec<IrqRow>,
}

/// Parse `/proc/interrupts`. The header names the online CPUs (`CPU0 CPU3`
/// when CPUs 1 and 2 are offline); rows with fewer counts (ERR, MIS) keep
/// what they have.
pub fn parse_interrupts(text: &str) -> Option<Interrupts> {
    let mut lines = text.lines();
    let cpus: Vec<u32> = lines
        .next()?
        .split_whitespace()
        .filter_map(|c| c.strip_prefix("CPU")?.parse().ok())
        .collect();
    if cpus.is_empty() {
        return None;
    }
    let mut rows = Vec::new();
    for line in lines {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let mut counts = Vec::with_capacity(cpus.len());
        let mut tail = rest;
        for _ in 0..cpus.len() {
            let t = tail.trim_start();
            let end = t.find(char::is_whitespace).unwrap_or(t.len());
            match t[..end].parse::<u64>() {
                Ok(n) => {
                    counts.push(n);
                    tail = &t[end..];
                }
                Err(_) => break,
            }
        }
        rows.push(IrqRow {
            name: name.trim().to_string(),
            counts,
            desc: tail.split_whitespace().collect::<Vec<_>>().join(" "),
        });
    }
    Some(Interrupts { cpus, rows })
}

/// Read `<proc>/interrupts`.
pub fn read_interrupts(roots: &Roots) -> io::Result<Interrupts> {
    let p = roots.proc.join("interrupts");
    let s = std::fs::read_to_string(&p)?;
    parse_interrupts(&s).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: no CPU header", p.display()),
        )
    })
}

/// Per-IRQ, per-CPU increase between two snapshots (an IRQ that appeared
/// counts from zero; counter wrap or a removed IRQ is ignored).
#[derive(Debug, Clone, Serialize)]
pub struct IrqDelta {
    pub name: String,
    pub desc: String,
    /// (cpu, count) with a count above zero.
    pub per_cpu: Vec<(u32, u64)>,
    pub total: u64,
}

pub fn delta(before: &Interrupts, after: &Interrupts) -> Vec<IrqDelta> {
    let old: BTreeMap<&str, &IrqRow> = before.rows.iter().map(|r| (r.name.as_str(), r)).collect();
    let mut out = Vec::new();
    for r in &after.rows {
        let mut per_cpu = Vec::new();
        for (i, &n) in r.counts.iter().enumerate() {
            let prev = old
                .get(r.name.as_str())
                .and_then(|o| {
                    let cpu = after.cpus.get(i)?;
                    let j = before.cpus.iter().position(|c| c == cpu)?;
                    o.counts.get(j).copied()
                })
                .unwrap_or(0);
            let d = n.saturating_sub(prev);
            if d > 0 {
                if let Some(&cpu) = after.cpus.get(i) {
                    per_cpu.push((cpu, d));
                }
            }
        }
        let total = per_cpu.iter().map(|(_, d)| d).sum();
        if total > 0 {
            out.push(IrqDelta {
                name: r.name.clone(),
                desc: r.desc.clone(),
                per_cpu,
                total,
            });
        }
    }
    out.sort_by(|a, b| b.total.cmp(&a.total).then(a.name.cmp(&b.name)));
    out
}

/// Totals per CPU over all rows of a delta.
pub fn per_cpu_totals(d: &[IrqDelta]) -> BTreeMap<u32, u64> {
    let mut m = BTreeMap::new();
    for r in d {
        for &(c, n) in &r.per_cpu {
            *m.entry(c).or_default() += n;
        }
    }
    m
}

/// Where an IRQ may and does land.
#[derive(Debug, Clone, Serialize)]
pub struct IrqPlace {
    pub irq: u32,
    pub affinity: Option<String>,
    pub effective: Option<String>,
}

/// Allowed and effective CPUs of an IRQ.
pub fn place(roots: &Roots, irq: u32) -> IrqPlace {
    let d = roots.proc.join(format!("irq/{irq}"));
    IrqPlace {
        irq,
        affinity: fsx::read_opt(&d.join("smp_affinity_list")),
        effective: fsx::read_opt(&d.join("effective_affinity_list")),
    }
}

/// Numbered IRQs that exist (`/proc/irq/N`).
pub fn irq_numbers(roots: &Roots) -> Vec<u32> {
    fsx::numbered_entries(&roots.proc.join("irq"), "")
}

#[derive(Debug, thiserror::Error)]
pub enum IrqError {
    #[error("IRQ {irq} does not exist on this node (no {path}); IRQs present: {present}")]
    Absent {
        irq: u32,
        path: std::path::PathBuf,
        present: String,
    },
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// Check that an IRQ exists.
pub fn check_exists(roots: &Roots, irq: u32) -> Result<(), IrqError> {
    let path = roots.proc.join(format!("irq/{irq}/smp_affinity_list"));
    if path.exists() {
        return Ok(());
    }
    let nums = irq_numbers(roots);
    let present = if nums.is_empty() {
        "none".to_string()
    } else {
        cpulist::Display(&nums).to_string()
    };
    Err(IrqError::Absent { irq, path, present })
}

/// True when the kernel's debugfs says the IRQ's affinity is managed
/// (`IRQD_AFFINITY_MANAGED` in `/sys/kernel/debug/irq/irqs/N`); `None`
/// when debugfs is not mounted.
pub fn debugfs_managed(roots: &Roots, irq: u32) -> Option<bool> {
    let s = std::fs::read_to_string(roots.sys.join(format!("kernel/debug/irq/irqs/{irq}"))).ok()?;
    Some(s.contains("AFFINITY_MANAGED"))
}

/// A refused affinity write that means "managed, unmovable": EIO before
/// Linux 6.12, EPERM after.
pub fn is_unmovable_error(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EIO) | Some(libc::EPERM))
}

/// What moving IRQs off a set of CPUs did.
#[derive(Debug, Default, Serialize)]
pub struct MoveReport {
    /// (irq, allowed before, allowed after)
    pub moved: Vec<(u32, String, String)>,
    /// (irq, why): managed IRQs the kernel will not move. Not an error.
    pub unmovable: Vec<(u32, String)>,
    /// IRQs already off those CPUs.
    pub untouched: usize,
}

/// Move every movable IRQ whose allowed CPUs intersect `avoid` to the
/// online CPUs outside `avoid`, through the journal.
pub fn move_off(
    roots: &Roots,
    journal: &mut Journal,
    avoid: &[u32],
    online: &[u32],
) -> Result<MoveReport, IrqError> {
    let rest: Vec<u32> = online
        .iter()
        .copied()
        .filter(|c| !avoid.contains(c))
        .collect();
    let mut rep = MoveReport::default();
    if rest.is_empty() {
        return Ok(rep);
    }
    let target = cpulist::Display(&rest).to_string();
    for irq in irq_numbers(roots) {
        let p = place(roots, irq);
        let Some(allowed) = p.affinity.as_deref().and_then(|s| cpulist::parse(s).ok()) else {
            continue;
        };
        if !allowed.iter().any(|c| avoid.contains(c)) {
            rep.untouched += 1;
            continue;
        }
        if debugfs_managed(roots, irq) == Some(true) {
            rep.unmovable
                .push((irq, "managed IRQ (debugfs: IRQD_AFFINITY_MANAGED)".into()));
            continue;
        }
        let path = roots.proc.join(format!("irq/{irq}/smp_affinity_list"));
        match journal.set_file(&path, &format!("affinity of IRQ {irq}"), &target) {
            Ok(()) => rep
                .moved
                .push((irq, cpulist::Display(&allowed).to_string(), target.clone())),
            Err(JournalError::WriteKnob { source, .. }) if is_unmovable_error(&source) => {
                rep.unmovable.push((
                    irq,
                    format!("managed IRQ: the kernel refused the write ({source})"),
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "           CPU0       CPU1       \n\
  0:         44          0   IO-APIC   2-edge      timer\n\
 30:        100          5  PCI-MSIX-0000:81:00.0   0-edge      mlx5_comp0@pci:0000:81:00.0\n\
NMI:          0          0   Non-maskable interrupts\n\
LOC:       1000       2000   Local timer interrupts\n\
ERR:          0\n";

    const AFTER: &str = "           CPU0       CPU1       \n\
  0:         44          0   IO-APIC   2-edge      timer\n\
 30:        150          5  PCI-MSIX-0000:81:00.0   0-edge      mlx5_comp0@pci:0000:81:00.0\n\
 31:          0          7  PCI-MSIX-0000:81:00.0   1-edge      mlx5_comp1@pci:0000:81:00.0\n\
NMI:          0          0   Non-maskable interrupts\n\
LOC:       1100       2300   Local timer interrupts\n\
ERR:          0\n";

    #[test]
    fn parses_rows_and_descriptions() {
        let i = parse_interrupts(BEFORE).unwrap();
        assert_eq!(i.cpus, vec![0, 1]);
        assert_eq!(i.rows[1].number(), Some(30));
        assert_eq!(i.rows[1].counts, vec![100, 5]);
        assert!(i.rows[1].desc.ends_with("mlx5_comp0@pci:0000:81:00.0"));
        assert_eq!(i.rows[3].name, "LOC");
        assert_eq!(i.rows[4].counts, vec![0]);
    }

    #[test]
    fn deltas_per_irq_and_cpu() {
        let d = delta(
            &parse_interrupts(BEFORE).unwrap(),
            &parse_interrupts(AFTER).unwrap(),
        );
        let names: Vec<&str> = d.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["LOC", "30", "31"]);
        assert_eq!(d[0].per_cpu, vec![(0, 100), (1, 300)]);
        assert_eq!(d[1].per_cpu, vec![(0, 50)]);
        assert_eq!(d[2].per_cpu, vec![(1, 7)]);
        let t = per_cpu_totals(&d);
        assert_eq!(t[&0], 150);
        assert_eq!(t[&1], 307);
    }

    #[test]
    fn offline_cpus_in_header() {
        let i = parse_interrupts("  CPU0  CPU3\n 5: 1 2 x\n").unwrap();
        assert_eq!(i.cpus, vec![0, 3]);
        assert_eq!(i.rows[0].counts, vec![1, 2]);
    }

    #[test]
    fn unmovable_errors() {
        assert!(is_unmovable_error(&io::Error::from_raw_os_error(libc::EIO)));
        assert!(is_unmovable_error(&io::Error::from_raw_os_error(
            libc::EPERM
        )));
        assert!(!is_unmovable_error(&io::Error::from_raw_os_error(
            libc::EINVAL
        )));
    }
}
