//! The documents an experiment produces, rendered from its results: the
//! baseline (`benchmarks/day05_numa_baseline.md`), the tuning summary
//! (`docs/os_node_os_tuning_summary_day05.md`), SVG plots, the systemd
//! drop-in and `results.json`.
//!
//! - `verdict`: the conclusions layer: each effect with its direction,
//!   size and outcome, and the sentence that states it.
//! - `why`: the tail's gap in milliseconds by component (attribution).
//! - `advice`: risk level (with its rule) and recommendations, from
//!   significant effects only; `checklist`: health-check statuses.
//! - `markers`: marked sections and the merge that keeps people's text.
//! - `baseline`, `summary`, `plain`: the two documents' sections.
//! - `capacity`: capacity per server and the sweep table; `runs`: failed
//!   restores, answers and output tokens, interference, every cell.
//! - `plots`: SVG plots (plotters); `dropin`: the systemd drop-in;
//!   `fmt`: numbers.
//!
//! Everything but `precheck` and `write_all` is pure.

pub mod advice;
pub mod baseline;
pub mod capacity;
pub mod checklist;
#[cfg(test)]
mod doc_tests;
pub mod dropin;
pub mod fmt;
pub mod markers;
pub mod plain;
pub mod plots;
pub mod runs;
pub mod summary;
#[cfg(test)]
pub mod testkit;
pub mod verdict;
pub mod why;

use std::path::{Component, Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::experiment::{
    matrix::Placed,
    results::{CellMetrics, CellStatus, DropIn, Results},
};

/// Where everything goes.
#[derive(Debug, Clone)]
pub struct DocPaths {
    pub out_dir: PathBuf,
    pub baseline: PathBuf,
    pub summary: PathBuf,
    /// The systemd unit the drop-in is for.
    pub unit: String,
}

fn check_doc(p: &Path) -> Result<()> {
    match std::fs::read_to_string(p) {
        Ok(text) => {
            markers::spans(&text).with_context(|| {
                format!(
                    "{} has broken tailprobe markers; fix them (or move the file away) and run again — nothing was changed",
                    p.display()
                )
            })?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
    }
    Ok(())
}

fn check_dir_writable(d: &Path) -> Result<()> {
    std::fs::create_dir_all(d)
        .with_context(|| format!("cannot create the output directory {}", d.display()))?;
    let probe = d.join(format!(".tailprobe-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"x")
        .with_context(|| format!("the output directory {} is not writable", d.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Before anything runs: every output location writable, the existing
/// documents' markers intact.
pub fn precheck(p: &DocPaths) -> Result<()> {
    check_dir_writable(&p.out_dir)?;
    for d in [&p.baseline, &p.summary] {
        check_doc(d)?;
        let parent = d
            .parent()
            .filter(|x| !x.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        check_dir_writable(parent)?;
    }
    Ok(())
}

fn absolute(p: &Path) -> PathBuf {
    let a = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut out = PathBuf::new();
    for c in a.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

/// `to` relative to the directory `from_dir`, with `/` separators.
pub fn relative(from_dir: &Path, to: &Path) -> String {
    let (a, b) = (absolute(from_dir), absolute(to));
    let ac: Vec<_> = a.components().collect();
    let bc: Vec<_> = b.components().collect();
    let common = ac.iter().zip(&bc).take_while(|(x, y)| x == y).count();
    let mut parts: Vec<String> = vec!["..".into(); ac.len() - common];
    parts.extend(
        bc[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

/// The representative cell of each configuration that ran: the repeat
/// with the median p95.
fn representative(r: &Results) -> Vec<(String, &CellMetrics, Vec<f64>)> {
    r.ran()
        .filter_map(|c| {
            let mut ms: Vec<&CellMetrics> = r
                .cells
                .iter()
                .filter(|x| x.config == c.config && x.status == CellStatus::Ran)
                .filter_map(|x| x.metrics.as_ref())
                .collect();
            ms.sort_by(|a, b| a.latency_ms.p95.total_cmp(&b.latency_ms.p95));
            let vals: Vec<f64> = ms.iter().map(|m| m.latency_ms.p95).collect();
            Some((c.label.clone(), *ms.get(ms.len() / 2)?, vals))
        })
        .collect()
}

/// The placement to persist: only a pinned configuration that measured a
/// significant gain of at least `verdict::MATERIAL_PCT` over the baseline.
fn placement_for_dropin(r: &Results) -> Option<(Placed, String)> {
    let g = advice::placement_to_persist(r)?;
    let c = r.ran().find(|c| c.label == g.label)?;
    let p = r
        .cells
        .iter()
        .find(|x| x.config == c.config && x.status == CellStatus::Ran)
        .and_then(|x| x.placement.clone())?;
    Some((
        p,
        format!("{}: against the baseline it {}", g.label, g.sentence()),
    ))
}

/// Write plots, drop-in, results.json and both documents. Returns the
/// files written.
pub fn write_all(r: &mut Results, p: &DocPaths) -> Result<Vec<PathBuf>> {
    precheck(p)?;
    let mut written = Vec::new();
    let plots_dir = p.out_dir.join("plots");
    std::fs::create_dir_all(&plots_dir)
        .with_context(|| format!("creating {}", plots_dir.display()))?;
    let plots = write_plots(r, &plots_dir, &mut written)?;
    r.plots = plots.iter().map(|x| x.1.clone()).collect();

    // Drop-in: only for a placement with a significant gain behind it.
    r.dropin = None;
    if let Some((pl, ev)) = placement_for_dropin(r) {
        let f = p.out_dir.join("50-tailprobe-placement.conf");
        let text = dropin::render(&p.unit, &pl, &ev);
        std::fs::write(&f, &text).with_context(|| format!("writing {}", f.display()))?;
        r.dropin = Some(DropIn {
            path: "50-tailprobe-placement.conf".into(),
            config: pl.why.clone(),
            text,
        });
        written.push(f);
    }

    // results.json
    let rf = p.out_dir.join("results.json");
    std::fs::write(&rf, serde_json::to_vec_pretty(&*r)?)
        .with_context(|| format!("writing {}", rf.display()))?;
    written.push(rf.clone());

    write_baseline(r, p, &plots)?;
    written.push(p.baseline.clone());

    write_summary(r, p)?;
    written.push(p.summary.clone());
    Ok(written)
}

/// The three plots, when some configuration ran: (title, path under the
/// output directory) of each.
fn write_plots(
    r: &Results,
    plots_dir: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<Vec<(String, String)>> {
    let rep = representative(r);
    let mut plots = Vec::new();
    if !rep.is_empty() {
        let cdf: Vec<(String, Vec<(f64, f64)>)> = rep
            .iter()
            .map(|(l, m, _)| (l.clone(), m.cdf.clone()))
            .collect();
        let bars: Vec<(String, f64, Vec<f64>)> = r
            .ran()
            .filter_map(|c| {
                let vals = rep
                    .iter()
                    .find(|x| x.0 == c.label)
                    .map(|x| x.2.clone())
                    .unwrap_or_default();
                Some((c.label.clone(), c.p95_ms?.mean, vals))
            })
            .collect();
        let sc: Vec<(String, Vec<(f64, f64)>)> = rep
            .iter()
            .map(|(l, m, _)| (l.clone(), m.scatter.clone()))
            .collect();
        for (name, title, text) in [
            (
                "latency-cdf.svg",
                "latency CDF per configuration",
                plots::cdf(
                    "Latency CDF per configuration (representative repeat)",
                    &cdf,
                )?,
            ),
            (
                "p95-per-config.svg",
                "p95 per configuration with spread",
                plots::bars(
                    "p95 latency per configuration (bar: mean over repeats, dots: each repeat)",
                    "p95 latency, ms",
                    &bars,
                )?,
            ),
            (
                "latency-vs-runq.svg",
                "latency vs run-queue wait",
                plots::scatter(
                    "Server time vs run-queue wait of the serving thread",
                    "run-queue wait during the request (ms)",
                    "server time (ms)",
                    &sc,
                )?,
            ),
        ] {
            let f = plots_dir.join(name);
            crate::node::fsx::atomic_write(&f, text.as_bytes())
                .with_context(|| format!("writing {}", f.display()))?;
            plots.push((title.to_string(), format!("plots/{name}")));
            written.push(f);
        }
    }
    Ok(plots)
}

/// The baseline document, its sections linking the plots and traces.
fn write_baseline(r: &Results, p: &DocPaths, plots: &[(String, String)]) -> Result<()> {
    let bdir = p
        .baseline
        .parent()
        .filter(|x| !x.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let prefix_b = format!("{}/", relative(bdir, &p.out_dir));
    let links: Vec<(String, String)> = plots
        .iter()
        .map(|(t, l)| (t.clone(), format!("{prefix_b}{l}")))
        .collect();
    let bsections = vec![
        (
            "run".to_string(),
            baseline::run_section(r, &format!("{prefix_b}results.json"), &links),
        ),
        ("cpu-governor".into(), baseline::governor_section(r)),
        ("noisy-neighbor".into(), baseline::noise_section(r)),
        ("perf-scheduler".into(), baseline::sched_section(r)),
        ("numa-locality".into(), baseline::numa_section(r)),
        (
            "irq-nic-affinity".into(),
            baseline::irq_section(r, &prefix_b),
        ),
        ("capacity".into(), capacity::section(r)),
        ("answers".into(), runs::answers_section(r)),
        ("interference".into(), runs::interference_section(r)),
        ("cells".into(), runs::cells_section(r, &prefix_b)),
    ];
    write_doc(&p.baseline, &baseline::preamble(), &bsections)?;
    Ok(())
}

/// The summary document.
fn write_summary(r: &Results, p: &DocPaths) -> Result<()> {
    let sdir = p
        .summary
        .parent()
        .filter(|x| !x.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let prefix_s = format!("{}/", relative(sdir, &p.out_dir));
    let blink = relative(sdir, &p.baseline);
    let dlink = r.dropin.as_ref().map(|d| format!("{prefix_s}{}", d.path));
    let ssections = vec![
        (
            "engineering-view".to_string(),
            summary::engineering(r, &blink),
        ),
        (
            "consultant-view".into(),
            summary::consultant(r, dlink.as_deref()),
        ),
        (
            "health-check".into(),
            summary::checklist(r, dlink.as_deref()),
        ),
        ("engagement".into(), summary::engagement()),
        ("feynman".into(), plain::feynman(r)),
    ];
    write_doc(&p.summary, &summary::preamble(), &ssections)?;
    Ok(())
}

fn write_doc(path: &Path, preamble: &str, sections: &[(String, String)]) -> Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let text = markers::merge(existing.as_deref(), preamble, sections).with_context(|| {
        format!(
            "{} has broken tailprobe markers; nothing was changed",
            path.display()
        )
    })?;
    crate::node::fsx::atomic_write(path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative(
                Path::new("/a/benchmarks"),
                Path::new("/a/benchmarks/experiment")
            ),
            "experiment"
        );
        assert_eq!(
            relative(Path::new("/a/docs"), Path::new("/a/benchmarks/experiment")),
            "../benchmarks/experiment"
        );
        assert_eq!(relative(Path::new("/a"), Path::new("/a")), ".");
    }
}
