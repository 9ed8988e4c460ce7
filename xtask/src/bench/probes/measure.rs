//! The measurements: tailprobe's JSON report read back, the plan of loads,
//! the per-event cost runs (ours and runqlat attached at the same time),
//! and the A/B slowdown runs.

use super::*;

/// One program's counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct ProgCost {
    pub(super) name: String,
    pub(super) events: u64,
    pub(super) run_time_ns: u64,
}

impl ProgCost {
    pub(super) fn ns_per_event(&self) -> Option<f64> {
        (self.events > 0).then(|| self.run_time_ns as f64 / self.events as f64)
    }
}

/// The figures we use from one `tailprobe record --json` report.
#[derive(Debug, Default, Clone)]
pub(super) struct Report {
    pub(super) duration_s: f64,
    pub(super) programs: Vec<ProgCost>,
    pub(super) total_events: u64,
    pub(super) total_run_time_ns: u64,
    pub(super) cpu_share_pct: Option<f64>,
    pub(super) events_per_second: Option<f64>,
    pub(super) switches: u64,
    pub(super) wakeups: u64,
    pub(super) threads: u64,
    pub(super) lossy: bool,
    pub(super) losses: Vec<(String, u64)>,
    pub(super) outliers_not_kept: u64,
}

pub(super) fn parse_report(text: &str) -> Result<Report> {
    let v: Value = serde_json::from_str(text).context("parsing tailprobe's JSON report")?;
    let u = |v: &Value| v.as_u64().unwrap_or(0);
    let o = &v["overhead"];
    let programs = o["programs"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| ProgCost {
                    name: p["name"].as_str().unwrap_or("?").to_string(),
                    events: u(&p["events"]),
                    run_time_ns: u(&p["run_time_ns"]),
                })
                .collect()
        })
        .unwrap_or_default();
    let p = &v["process"];
    let losses = v["losses"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|l| u(&l["total"]) > 0)
                .map(|l| {
                    (
                        l["name"].as_str().unwrap_or("?").to_string(),
                        u(&l["total"]),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Report {
        duration_s: u(&v["duration_ns"]) as f64 / 1e9,
        programs,
        total_events: u(&o["total_events"]),
        total_run_time_ns: u(&o["total_run_time_ns"]),
        cpu_share_pct: o["cpu_share_pct"].as_f64(),
        events_per_second: o["events_per_second"].as_f64(),
        switches: u(&p["voluntary_switches"]) + u(&p["involuntary_switches"]),
        wakeups: u(&p["wakeups"]),
        threads: u(&p["threads_seen"]),
        lossy: v["lossy"].as_bool().unwrap_or(true),
        losses,
        outliers_not_kept: u(&v["outliers_not_kept"]),
    })
}

/// Add `b`'s counters into `a`, program by program (matched by name).
pub(super) fn add_costs(a: &mut Vec<ProgCost>, b: &[ProgCost]) {
    for p in b {
        match a.iter_mut().find(|q| q.name == p.name) {
            Some(q) => {
                q.events += p.events;
                q.run_time_ns += p.run_time_ns;
            }
            None => a.push(p.clone()),
        }
    }
}

pub(super) fn cost_of<'a>(v: &'a [ProgCost], hook: &str) -> Option<&'a ProgCost> {
    v.iter().find(|p| hook_of(&p.name) == hook)
}

/// A stress-ng metric (e.g. `bogo-ops-per-second-real-time`) for one
/// stressor from its `--yaml` file.
pub(super) fn stress_ng_metric(yaml: &str, stressor: &str, key: &str) -> Option<f64> {
    let mut in_it = false;
    for l in yaml.lines() {
        let t = l.trim();
        if let Some(s) = t.strip_prefix("- stressor:") {
            in_it = s.trim() == stressor;
        } else if in_it {
            if let Some(r) = t.strip_prefix(key).and_then(|r| r.strip_prefix(':')) {
                return r.trim().parse().ok();
            }
        }
    }
    None
}

pub(super) struct Plan {
    pub(super) cost_rounds: usize,
    /// (label, load, extra `record` arguments).
    pub(super) loads: Vec<(&'static str, String, &'static [&'static str])>,
    pub(super) ab_pairs: usize,
    pub(super) ab_secs: u32,
    pub(super) sustained: Vec<String>,
    /// Runs of each exporter load (even: each tool attaches first in half).
    pub(super) exporter_rounds: usize,
    /// (label, load) the exporter follows (by its command name, the first
    /// word), beside runqlat.
    pub(super) exporter_loads: Vec<(&'static str, String)>,
}

/// `record` with what `tailprobe exporter` runs: no time windows, no
/// outlier stream (every count, histogram and preemptor is still kept in
/// the kernel, as the exporter serves them).
pub(super) const ALWAYS_ON: &[&str] =
    &["--window", "0", "--outlier-runq", "0", "--outlier-irq", "0"];

pub(super) fn plan(quick: bool) -> Plan {
    if quick {
        Plan {
            cost_rounds: 2,
            loads: vec![
                ("hackbench, threads", "hackbench -T -g 4 -l 600".into(), &[]),
                ("hackbench, processes", "hackbench -g 4 -l 600".into(), &[]),
                (
                    "hackbench, threads, always-on settings",
                    "hackbench -T -g 4 -l 600".into(),
                    ALWAYS_ON,
                ),
                (
                    "hackbench, processes, always-on settings",
                    "hackbench -g 4 -l 600".into(),
                    ALWAYS_ON,
                ),
                (
                    "CPU-bound mix",
                    "stress-ng --cpu 3 --cpu-method matrixprod --sleep 1 --sleep-max 16 -t 2s"
                        .into(),
                    &[],
                ),
            ],
            ab_pairs: 3,
            ab_secs: 3,
            sustained: vec!["stress-ng --switch 2 -t 4s".into()],
            exporter_rounds: 2,
            exporter_loads: vec![
                ("hackbench, threads", "hackbench -T -g 4 -l 600".into()),
                ("hackbench, processes", "hackbench -g 4 -l 600".into()),
            ],
        }
    } else {
        Plan {
            cost_rounds: 3,
            loads: vec![
                // One process with many threads (the shape of an inference
                // server): our filter is a compare.
                (
                    "hackbench, threads",
                    "hackbench -T -g 4 -l 1000".into(),
                    &[],
                ),
                // 160 processes: our filter is the followed-process set.
                ("hackbench, processes", "hackbench -g 4 -l 1000".into(), &[]),
                // The same loads with what an always-on agent keeps (the
                // exporter's settings): in-kernel aggregation only.
                (
                    "hackbench, threads, always-on settings",
                    "hackbench -T -g 4 -l 1000".into(),
                    ALWAYS_ON,
                ),
                (
                    "hackbench, processes, always-on settings",
                    "hackbench -g 4 -l 1000".into(),
                    ALWAYS_ON,
                ),
                (
                    "CPU-bound mix",
                    "stress-ng --cpu 3 --cpu-method matrixprod --sleep 1 --sleep-max 16 -t 4s"
                        .into(),
                    &[],
                ),
            ],
            ab_pairs: 8,
            ab_secs: 4,
            sustained: vec![
                "stress-ng --switch 2 -t 8s".into(),
                "hackbench -g 8 -l 1500".into(),
            ],
            exporter_rounds: 4,
            exporter_loads: vec![
                ("hackbench, threads", "hackbench -T -g 4 -l 2000".into()),
                ("hackbench, processes", "hackbench -g 4 -l 2000".into()),
            ],
        }
    }
}

/// `tailprobe record ... --json -- CMD`, bounded.
pub(super) fn record(bin: &Path, extra: &[&str], load: &str, bound_s: u32) -> Result<Report> {
    let mut a = record_argv(bin, extra, bound_s);
    a.extend(argv(load));
    let f = run_bounded(&a, Duration::from_secs(bound_s as u64 + 30))?;
    report_of(&f)
}

/// `tailprobe record --follow-children --duration BOUND --json EXTRA --`
/// (the command to follow goes after).
fn record_argv(bin: &Path, extra: &[&str], bound_s: u32) -> Vec<String> {
    let mut a = vec![
        bin.to_string_lossy().to_string(),
        "record".into(),
        "--follow-children".into(),
        "--duration".into(),
        format!("{bound_s}s"),
        "--json".into(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a.push("--".into());
    a
}

fn report_of(f: &Finished) -> Result<Report> {
    parse_report(&f.stdout).with_context(|| {
        format!(
            "tailprobe's stderr:\n{}",
            f.stderr.lines().take(20).collect::<Vec<_>>().join("\n")
        )
    })
}

/// One cost run of `load` with ours and runqlat attached at the same time:
/// our report and runqlat's counters over the run. The tool attached first
/// runs first on each event and takes the cache misses on the task fields
/// both read, so runs alternate the order (`ours_first`).
fn cost_run(
    bin: &Path,
    load: &str,
    extra: &[&str],
    ours_first: bool,
) -> Result<(Report, Vec<ProgCost>)> {
    if !ours_first {
        let rq = Runqlat::start()?;
        let rep = record(bin, extra, load, 60);
        // Stop runqlat first, also when the recording failed.
        let costs = rq.finish()?;
        return Ok((rep?, costs));
    }
    // tailprobe attaches, then runqlat, then the load starts: it waits for
    // a gate file, in a shell that tailprobe follows.
    let gate = scratch_dir()?.join("cost-run-gate");
    let _ = std::fs::remove_file(&gate);
    let mut a = record_argv(bin, extra, 60);
    a.extend([
        "sh".to_string(),
        "-c".to_string(),
        format!(
            "while [ ! -e {} ]; do sleep 0.05; done; exec {load}",
            gate.display()
        ),
    ]);
    let started = Instant::now();
    let rec = spawn(&a)?;
    while !rec.stderr_so_far().contains("probes attached") {
        check_interrupted()?;
        if started.elapsed() > Duration::from_secs(60) {
            bail!("tailprobe did not attach within 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let rq = Runqlat::start()?;
    std::fs::write(&gate, "").with_context(|| format!("creating {}", gate.display()))?;
    let f = rec.finish(started, Duration::from_secs(90));
    let costs = rq.finish()?;
    Ok((report_of(&f?)?, costs))
}

pub(super) struct CostResult {
    pub(super) label: &'static str,
    pub(super) load: String,
    pub(super) ours: Vec<ProgCost>,
    pub(super) ours_total_ns: u64,
    pub(super) ours_total_events: u64,
    pub(super) ours_cpu_share: Vec<f64>,
    pub(super) target_switches: u64,
    pub(super) target_wakeups: u64,
    pub(super) target_threads: u64,
    pub(super) theirs: Vec<ProgCost>,
    pub(super) ours_wall_s: f64,
    /// Ours over runqlat's ns per run, for each run and hook.
    pub(super) per_run: Vec<(&'static str, f64)>,
}

/// The hooks both tools attach to, in table order.
pub(super) const HOOKS: [&str; 3] = ["sched_switch", "sched_wakeup", "sched_wakeup_new"];

pub(super) fn measure_costs(bin: &Path, plan: &Plan) -> Result<Vec<CostResult>> {
    let mut results = Vec::new();
    for (label, load, extra) in &plan.loads {
        let mut r = CostResult {
            label,
            load: if extra.is_empty() {
                load.clone()
            } else {
                format!("record {}: {load}", extra.join(" "))
            },
            ours: Vec::new(),
            ours_total_ns: 0,
            ours_total_events: 0,
            ours_cpu_share: Vec::new(),
            target_switches: 0,
            target_wakeups: 0,
            target_threads: 0,
            theirs: Vec::new(),
            ours_wall_s: 0.0,
            per_run: Vec::new(),
        };
        for round in 0..plan.cost_rounds {
            check_interrupted()?;
            // Both attached at once: every event of the run goes through
            // both tools' programs, under the same load on the machine.
            let (rep, costs) = cost_run(bin, load, extra, round % 2 == 1)?;
            for hook in HOOKS {
                let on = cost_of(&rep.programs, hook).and_then(ProgCost::ns_per_event);
                let tn = cost_of(&costs, hook).and_then(ProgCost::ns_per_event);
                if let (Some(a), Some(b)) = (on, tn) {
                    if b > 0.0 {
                        r.per_run.push((hook, a / b));
                    }
                }
            }
            add_costs(&mut r.ours, &rep.programs);
            r.ours_total_ns += rep.total_run_time_ns;
            r.ours_total_events += rep.total_events;
            r.ours_cpu_share.extend(rep.cpu_share_pct);
            r.target_switches += rep.switches;
            r.target_wakeups += rep.wakeups;
            r.target_threads = r.target_threads.max(rep.threads);
            r.ours_wall_s += rep.duration_s;
            add_costs(&mut r.theirs, &costs);
        }
        results.push(r);
    }
    Ok(results)
}

pub(super) struct AbResult {
    pub(super) cmd: String,
    /// bogo-ops/s over wall-clock time, without and with probes.
    pub(super) plain: Vec<f64>,
    pub(super) probed: Vec<f64>,
    /// bogo-ops per CPU second the workload itself used.
    pub(super) plain_cpu: Vec<f64>,
    pub(super) probed_cpu: Vec<f64>,
}

pub(super) fn measure_slowdown(bin: &Path, plan: &Plan) -> Result<AbResult> {
    let yaml = scratch_dir()?.join("stress-ng.yaml");
    let yaml_s = yaml.to_string_lossy().to_string();
    let cmd = format!(
        "stress-ng --cpu 2 --cpu-method matrixprod --metrics-brief -t {}s --yaml {yaml_s}",
        plan.ab_secs
    );
    let mut plain = Vec::new();
    let mut probed = Vec::new();
    let mut plain_cpu = Vec::new();
    let mut probed_cpu = Vec::new();
    for _ in 0..plan.ab_pairs {
        for with_probes in [false, true] {
            check_interrupted()?;
            let _ = std::fs::remove_file(&yaml);
            if with_probes {
                record(bin, &["--no-self-stats"], &cmd, plan.ab_secs + 30)?;
            } else {
                run_bounded(&argv(&cmd), Duration::from_secs(plan.ab_secs as u64 + 30))?;
            }
            let text = std::fs::read_to_string(&yaml)
                .with_context(|| format!("reading stress-ng's {yaml_s}"))?;
            let metric = |k: &str| {
                stress_ng_metric(&text, "cpu", k).with_context(|| format!("no cpu {k} in {yaml_s}"))
            };
            let rate = metric("bogo-ops-per-second-real-time")?;
            let cpu_rate = metric("bogo-ops-per-second-usr-sys-time")?;
            if with_probes {
                probed.push(rate);
                probed_cpu.push(cpu_rate);
            } else {
                plain.push(rate);
                plain_cpu.push(cpu_rate);
            }
        }
    }
    Ok(AbResult {
        cmd: cmd.replace(&yaml_s, "FILE"),
        plain,
        probed,
        plain_cpu,
        probed_cpu,
    })
}

impl AbResult {
    pub(super) fn ab_pairs_len(&self) -> usize {
        self.plain.len().min(self.probed.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stress_ng_yaml() {
        let y = "metrics:\n    - stressor: switch\n      bogo-ops-per-second-real-time: 5.0\n\
                 \x20   - stressor: cpu\n      bogo-ops: 3195\n      \
                 bogo-ops-per-second-real-time: 1062.270563\n";
        let rt = "bogo-ops-per-second-real-time";
        assert_eq!(stress_ng_metric(y, "cpu", rt), Some(1062.270563));
        assert_eq!(stress_ng_metric(y, "cpu", "bogo-ops"), Some(3195.0));
        assert_eq!(stress_ng_metric(y, "switch", rt), Some(5.0));
        assert_eq!(stress_ng_metric(y, "vm", rt), None);
    }

    #[test]
    fn reads_report_and_adds_costs() {
        let j = r#"{"duration_ns": 2000000000,
            "process": {"voluntary_switches": 10, "involuntary_switches": 5, "wakeups": 7, "threads_seen": 3},
            "overhead": {"programs": [{"name": "sched_switch", "events": 100, "run_time_ns": 50000, "ns_per_event": 500.0}],
                         "total_events": 100, "total_run_time_ns": 50000, "cpu_share_pct": 0.0025, "events_per_second": 50.0},
            "losses": [{"name": "a", "total": 0, "per_cpu": [0]}, {"name": "b", "total": 2, "per_cpu": [2]}],
            "lossy": true, "outliers_not_kept": 4}"#;
        let r = parse_report(j).unwrap();
        assert_eq!(r.switches, 15);
        assert_eq!(r.wakeups, 7);
        assert_eq!(r.losses, vec![("b".to_string(), 2)]);
        assert!(r.lossy);
        assert_eq!(r.duration_s, 2.0);
        let mut acc = r.programs.clone();
        add_costs(&mut acc, &r.programs);
        add_costs(
            &mut acc,
            &[ProgCost {
                name: "handle_sched_wakeup".into(),
                events: 1,
                run_time_ns: 9,
            }],
        );
        assert_eq!(acc[0].events, 200);
        assert_eq!(acc[0].ns_per_event(), Some(500.0));
        assert_eq!(cost_of(&acc, "sched_wakeup").map(|p| p.events), Some(1));
        assert!(cost_of(&acc, "sched_wakeup_new").is_none());
    }
}
