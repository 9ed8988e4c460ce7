//! The section's Markdown: tables, verdict lines, and the prose that says
//! how each number was measured.

use super::*;

/// Issue 13's goal: our hot-path programs at most this fraction of runqlat's
/// cost per event.
pub(super) const HOT_PATH_GOAL: f64 = 0.5;

/// One verdict line: ours as a multiple of runqlat's ns per event, PASS or
/// FAIL against `HOT_PATH_GOAL`, with the ratio of each run (`per_run`); no
/// verdict without runs on both sides.
pub(super) fn verdict(
    label: &str,
    hook: &str,
    ours: Option<&ProgCost>,
    theirs: Option<&ProgCost>,
    per_run: &[f64],
) -> String {
    let on = ours.and_then(ProgCost::ns_per_event);
    let tn = theirs.and_then(ProgCost::ns_per_event);
    match (on, tn) {
        (Some(a), Some(b)) if b > 0.0 => {
            let x = a / b;
            let runs: Vec<String> = per_run.iter().map(|r| format!("{r:.2}")).collect();
            format!(
                "{label}, `{hook}`: {x:.2}x of runqlat ({a:.0} vs {b:.0} ns/run, {} vs {} \
                 runs; per run {}): **{}**",
                ours.map_or(0, |p| p.events),
                theirs.map_or(0, |p| p.events),
                if runs.is_empty() {
                    "–".to_string()
                } else {
                    runs.join(", ")
                },
                if x <= HOT_PATH_GOAL { "PASS" } else { "FAIL" }
            )
        }
        _ => format!("{label}, `{hook}`: no verdict (no runs measured on one side)"),
    }
}

/// One table row, without its closing bar: load, hook, both tools' runs
/// and ns per run, and ours over runqlat's.
pub(super) fn cost_row(label: &str, hook: &str, ours: &[ProgCost], theirs: &[ProgCost]) -> String {
    let o = cost_of(ours, hook);
    let t = cost_of(theirs, hook);
    let (on, tn) = (
        o.and_then(ProgCost::ns_per_event),
        t.and_then(ProgCost::ns_per_event),
    );
    let ratio = match (on, tn) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "–".into(),
    };
    format!(
        "| {label} | `{hook}` | {} | {} | {} | {} | {ratio}",
        o.map_or(0, |p| p.events),
        ns(on),
        t.map_or(0, |p| p.events),
        ns(tn),
    )
}

pub(super) fn ns(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.0}")).unwrap_or_else(|| "–".into())
}

pub(super) fn section(bin: &Path, quick: bool) -> Result<String> {
    let t0 = Instant::now();
    let plan = plan(quick);
    let load_costs = load_average();
    let date = cmd::output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let stats_default = read_stats_sysctl()?;

    let costs = measure_costs(bin, &plan)?;
    let load_exporter = load_average();
    let exporter = measure_exporter(bin, &plan)?;
    let load_ab = load_average();
    let ab = measure_slowdown(bin, &plan)?;
    let load_sustained = load_average();
    let mut sustained = Vec::new();
    for load in &plan.sustained {
        check_interrupted()?;
        sustained.push((load.clone(), record(bin, &[], load, 60)?));
    }
    let elapsed = t0.elapsed().as_secs_f64();
    if read_stats_sysctl()? != stats_default {
        bail!("kernel.bpf_stats_enabled was not restored to {stats_default}");
    }

    let mut s = String::new();
    let w = &mut s;
    let loads = [load_costs, load_exporter.clone(), load_ab, load_sustained];
    head_part(w, bin, quick, &date, elapsed, &loads)?;
    cost_part(w, &costs, plan.cost_rounds, &stats_default)?;
    exporter_part(w, &exporter, &load_exporter)?;
    slowdown_part(w, &ab)?;
    sustained_part(w, &sustained)?;
    Ok(s)
}

/// The section's title: how it was produced, the machine, the versions.
fn head_part(
    w: &mut String,
    bin: &Path,
    quick: bool,
    date: &str,
    elapsed: f64,
    loads: &[String; 4],
) -> Result<()> {
    let [load_costs, load_exporter, load_ab, load_sustained] = loads;
    let (cpu, ncpu, kernel) = machine();
    writeln!(w, "## Probe cost\n")?;
    writeln!(
        w,
        "Produced by `cargo xtask bench --only probes{}` (xtask/src/bench/probes/) on {date}, \
         in {elapsed:.0} s{}. Machine: {cpu}, {ncpu} CPUs, kernel {kernel}. Load average \
         (1/5/15 min) before each part: {load_costs}, {load_exporter}, {load_ab}, \
         {load_sustained} (it \
         includes our own loads of the part before; other work on the machine perturbs \
         these numbers).\n",
        if quick { " --quick" } else { "" },
        if quick {
            " (**--quick**: shorter and fewer runs)"
        } else {
            ""
        },
    )?;
    writeln!(
        w,
        "Versions: {}; {}; {}; {}.\n",
        first_line_of(&bin.to_string_lossy(), &["--version"]),
        first_line_of(RUNQLAT, &["--version"]),
        first_line_of("stress-ng", &["--version"]),
        first_line_of("bpftool", &["version"]),
    )?;

    Ok(())
}

/// Per-event cost, ours vs runqlat, with the verdict lines.
fn cost_part(
    w: &mut String,
    costs: &[CostResult],
    cost_rounds: usize,
    stats_default: &str,
) -> Result<()> {
    // 1. Per-event cost.
    writeln!(w, "### Per-event cost: ours vs libbpf-tools runqlat\n")?;
    writeln!(
        w,
        "Each load ran {} time(s) under `tailprobe record --follow-children --json -- LOAD` \
         while `runqlat 3600 1` traced the whole system at the same time: both tools' \
         programs were attached during the same runs, so each saw the same scheduler events \
         under the same load on the machine. Costs are the kernel's BPF run-time statistics, \
         summed over the runs: ours from the report's `overhead.programs[]` (tailprobe holds \
         `BPF_ENABLE_STATS` itself), runqlat's from its program fds' `/proc/PID/fdinfo` \
         (`run_cnt`, `run_time_ns`, read when the recording starts and ends) with \
         `kernel.bpf_stats_enabled=1` just for those runs (restored to {stats_default} \
         after). Both pay the same ~20 ns per run for the statistics.\n",
        cost_rounds
    )?;
    writeln!(
        w,
        "\"Runs\" are program invocations: the tracepoints fire for every task on the \
         machine, so both tools run on every scheduler event; runqlat does its work for all \
         of them, ours returns early unless a target thread is involved. \"Target events\" \
         are what ours recorded for the load's own threads.\n"
    )?;
    writeln!(
        w,
        "| load | hook | ours: runs | ours: ns/run | runqlat: runs | runqlat: ns/run | ours / runqlat |"
    )?;
    writeln!(w, "| --- | --- | ---: | ---: | ---: | ---: | ---: |")?;
    for r in costs {
        for hook in HOOKS {
            writeln!(w, "{} |", cost_row(r.label, hook, &r.ours, &r.theirs))?;
        }
    }
    writeln!(w)?;
    for r in costs {
        let secs = r.ours_wall_s.max(1e-9);
        writeln!(
            w,
            "- {} (`{}`): ours recorded {} switches and {} wakeups of {} target threads \
             ({:.0} switches/s); all {} of our programs together ran {} times for {:.1} ms \
             ({:.0} ns/run, {} of one CPU over the recording) in {:.1} s.",
            r.label,
            r.load,
            r.target_switches,
            r.target_wakeups,
            r.target_threads,
            r.target_switches as f64 / secs,
            r.ours.len(),
            r.ours_total_events,
            r.ours_total_ns as f64 / 1e6,
            r.ours_total_ns as f64 / r.ours_total_events.max(1) as f64,
            if r.ours_cpu_share.is_empty() {
                "–".to_string()
            } else {
                format!("{:.2}%", mean(&r.ours_cpu_share))
            },
            secs,
        )?;
        let mut top = r.ours.clone();
        top.sort_by_key(|p| std::cmp::Reverse(p.run_time_ns));
        let list: Vec<String> = top
            .iter()
            .filter(|p| p.run_time_ns > 0)
            .take(5)
            .map(|p| {
                format!(
                    "`{}` {:.1} ms ({} runs, {} ns/run)",
                    p.name,
                    p.run_time_ns as f64 / 1e6,
                    p.events,
                    ns(p.ns_per_event())
                )
            })
            .collect();
        writeln!(w, "  Our most expensive programs: {}.", list.join(", "))?;
    }
    verdict_part(w, costs)
}

/// The goal and the verdict lines for the hackbench loads.
fn verdict_part(w: &mut String, costs: &[CostResult]) -> Result<()> {
    writeln!(
        w,
        "\nGoal (issue 3): ours at or below runqlat's ns per event, ideally half of it.\n"
    )?;
    writeln!(
        w,
        "Verdict (issue 13: the hot path at most {HOT_PATH_GOAL}x runqlat's ns per event, \
         both measured in the same runs; the ratio of the summed costs decides, the ratio of \
         each run shows the spread). \"Always-on settings\" are what `tailprobe exporter` runs \
         (no time windows, no outlier stream: `record --window 0 --outlier-runq 0 \
         --outlier-irq 0`); record's defaults add per-window series and a stream of every wait \
         of 1 ms or more:\n"
    )?;
    for r in costs.iter().filter(|r| r.label.starts_with("hackbench")) {
        for hook in ["sched_switch", "sched_wakeup"] {
            writeln!(
                w,
                "- {}",
                verdict(
                    r.label,
                    hook,
                    cost_of(&r.ours, hook),
                    cost_of(&r.theirs, hook),
                    &r.per_run
                        .iter()
                        .filter(|(h, _)| *h == hook)
                        .map(|(_, x)| *x)
                        .collect::<Vec<_>>(),
                )
            )?;
        }
    }
    writeln!(w)?;

    Ok(())
}

/// Workload slowdown with all probes attached, A/B pairs.
fn slowdown_part(w: &mut String, ab: &AbResult) -> Result<()> {
    // 2. Slowdown.
    writeln!(w, "### Workload slowdown, all probes attached vs none\n")?;
    writeln!(
        w,
        "`{}`, {} A/B pairs in A, B, A, B order; B ran it under `tailprobe record \
         --follow-children --no-self-stats --json -- ...` (every probe attached, default \
         settings, no run-time statistics). Throughput is stress-ng's bogo-ops/s over wall \
         time; \"per CPU s\" is bogo-ops per CPU second the workload itself was charged \
         (less sensitive to other work on the machine; probe time spent in the workload's \
         context is charged to it).\n",
        ab.cmd,
        ab.ab_pairs_len()
    )?;
    writeln!(
        w,
        "| pair | A: ops/s | B: ops/s | B / A | A: ops per CPU s | B: ops per CPU s | B / A |"
    )?;
    writeln!(w, "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")?;
    for i in 0..ab.ab_pairs_len() {
        let (a, b) = (ab.plain[i], ab.probed[i]);
        let (ac, bc) = (ab.plain_cpu[i], ab.probed_cpu[i]);
        writeln!(
            w,
            "| {} | {a:.1} | {b:.1} | {:.4} | {ac:.1} | {bc:.1} | {:.4} |",
            i + 1,
            b / a,
            bc / ac
        )?;
    }
    writeln!(w)?;
    for (what, plain, probed) in [
        ("ops/s", &ab.plain, &ab.probed),
        ("ops per CPU s", &ab.plain_cpu, &ab.probed_cpu),
    ] {
        let ratio = mean(probed) / mean(plain);
        let pair: Vec<f64> = plain.iter().zip(probed).map(|(a, b)| b / a).collect();
        let (plo, phi) = min_max(&pair);
        let mut sorted = pair.clone();
        sorted.sort_by(f64::total_cmp);
        let pmed = sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN);
        let se = stdev(&pair) / (pair.len() as f64).sqrt();
        writeln!(
            w,
            "- {what}: mean A {:.1} ± {:.1} (sd), mean B {:.1} ± {:.1}; ratio of means B/A \
             **{ratio:.4}** ({:+.2}%); per-pair ratios {plo:.4} to {phi:.4}, median {pmed:.4}, \
             mean {:.4} ± {se:.4} (standard error).",
            mean(plain),
            stdev(plain),
            mean(probed),
            stdev(probed),
            (ratio - 1.0) * 100.0,
            mean(&pair),
        )?;
    }
    writeln!(
        w,
        "\nGoal: under 1% loss. A difference smaller than the run-to-run spread of A alone \
         is noise, not a measured cost.\n"
    )?;

    Ok(())
}

/// Events sustained without loss.
fn sustained_part(w: &mut String, sustained: &[(String, Report)]) -> Result<()> {
    // 3. Sustained events.
    writeln!(w, "### Events sustained without loss\n")?;
    writeln!(
        w,
        "`tailprobe record --follow-children --json -- LOAD`. \"Program runs/s\" counts every \
         invocation of every one of our programs (the report's `overhead.events_per_second`); \
         \"target sched events/s\" is the load's own switches + wakeups that were recorded.\n"
    )?;
    writeln!(
        w,
        "| load | seconds | program runs/s | target sched events/s | threads | lossy | losses | our CPU share |"
    )?;
    writeln!(w, "| --- | ---: | ---: | ---: | ---: | --- | --- | ---: |")?;
    for (load, r) in sustained {
        let losses = if r.losses.is_empty() {
            "none".to_string()
        } else {
            r.losses
                .iter()
                .map(|(n, c)| format!("{n} {c}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(
            w,
            "| `{load}` | {:.1} | {} | {:.0} | {} | {} | {losses} | {} |",
            r.duration_s,
            ns(r.events_per_second),
            (r.switches + r.wakeups) as f64 / r.duration_s.max(1e-9),
            r.threads,
            r.lossy,
            r.cpu_share_pct
                .map(|c| format!("{c:.1}%"))
                .unwrap_or_else(|| "–".into()),
        )?;
        if r.outliers_not_kept > 0 {
            writeln!(
                w,
                "|  |  |  | ({} run-queue outliers counted beyond the kept ones: not a loss) |  |  |  |  |",
                r.outliers_not_kept
            )?;
        }
    }
    writeln!(w)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_lines() {
        let c = |events, run_time_ns| ProgCost {
            name: "sched_switch".into(),
            events,
            run_time_ns,
        };
        let pass = verdict(
            "hb",
            "sched_switch",
            Some(&c(100, 20_000)),
            Some(&c(50, 25_000)),
            &[0.38, 0.42],
        );
        assert!(
            pass.contains("0.40x")
                && pass.contains("per run 0.38, 0.42")
                && pass.ends_with("**PASS**"),
            "{pass}"
        );
        let fail = verdict(
            "hb",
            "sched_switch",
            Some(&c(100, 30_000)),
            Some(&c(100, 50_000)),
            &[],
        );
        assert!(
            fail.contains("0.60x") && fail.ends_with("**FAIL**"),
            "{fail}"
        );
        let edge = verdict(
            "hb",
            "sched_switch",
            Some(&c(10, 2_500)),
            Some(&c(10, 5_000)),
            &[0.5],
        );
        assert!(edge.ends_with("**PASS**"), "{edge}");
        let none = verdict("hb", "sched_wakeup", None, Some(&c(1, 1)), &[]);
        assert!(none.contains("no verdict"), "{none}");
        let zero = verdict("hb", "sched_wakeup", Some(&c(0, 0)), Some(&c(1, 1)), &[]);
        assert!(zero.contains("no verdict"), "{zero}");
    }
}
