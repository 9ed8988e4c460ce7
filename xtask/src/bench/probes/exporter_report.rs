//! The Markdown of the exporter's part: its scheduler programs (per-target
//! mode) beside runqlat in the same runs, the verdict against issue 13's
//! goal, and the exporter's CPU share at the switch rate it counted.

use super::*;

pub(super) fn exporter_part(
    w: &mut String,
    costs: &[ExporterCost],
    load_before: &str,
) -> Result<()> {
    writeln!(
        w,
        "### The exporter (per-target mode) beside runqlat, same runs\n"
    )?;
    let rounds = costs.first().map_or(0, |c| c.runs.len());
    writeln!(
        w,
        "`tailprobe exporter --comm hackbench --rescan 100ms` followed each load while \
         `runqlat 3600 1` traced the whole machine, {rounds} run(s) per load, the attach order \
         alternating (load average before: {load_before}). Both tools' program counters \
         (`run_cnt`, `run_time_ns`) were read from their fds' `/proc/PID/fdinfo`, back to \
         back, when every process of the load was followed (the same number of followed \
         processes over three rescans) and again when it had ended, so both cover the same \
         events (the exporter holds `BPF_ENABLE_STATS`; its target switches and its \
         process's CPU time come from its metrics, scraped just inside that window). The exporter loads `sched_switch` and `sched_wakeup` in their per-target \
         mode (docs/fleet.md): waits, switches and on-CPU time per CPU and per target, the \
         wait's start in a tid-indexed array of 8-byte stamps; `record` runs the per-thread \
         mode measured above.\n"
    )?;
    writeln!(
        w,
        "| load | hook | ours: runs | ours: ns/run | runqlat: runs | runqlat: ns/run | ours / runqlat | each run |"
    )?;
    writeln!(w, "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")?;
    for c in costs {
        let (ours, theirs) = c.summed();
        for hook in HOOKS {
            let each: Vec<String> = c.per_run(hook).iter().map(|x| format!("{x:.2}")).collect();
            writeln!(
                w,
                "{} | {} |",
                cost_row(c.label, hook, &ours, &theirs),
                each.join(", ")
            )?;
        }
    }
    writeln!(w)?;
    for c in costs {
        let (ours, _) = c.summed();
        let secs: f64 = c.runs.iter().map(|r| r.secs).sum::<f64>().max(1e-9);
        let switches: f64 = c.runs.iter().map(|r| r.switches).sum();
        let runs = cost_of(&ours, "sched_switch").map_or(0, |p| p.events);
        let probe_ns: u64 = ours.iter().map(|p| p.run_time_ns).sum();
        let process: f64 = c.runs.iter().map(|r| r.process_secs).sum();
        let first: Vec<&str> = c
            .runs
            .iter()
            .map(|r| if r.ours_first { "ours" } else { "runqlat" })
            .collect();
        writeln!(
            w,
            "- {} (`{}`; attached first: {}): the exporter counted {:.0} target switches \
             ({:.0}/s), {:.1}% of the machine's {} `sched_switch` runs. **Exporter CPU \
             share at {:.0} target switches/s: {:.2}% of one CPU** in its eBPF programs (all \
             {} of them, statistics included) + {:.2}% in its process = {:.2}%.",
            c.label,
            c.load,
            first.join(", "),
            switches,
            switches / secs,
            switches * 100.0 / (runs.max(1) as f64),
            runs,
            switches / secs,
            probe_ns as f64 / 1e9 / secs * 100.0,
            ours.len(),
            process / secs * 100.0,
            (probe_ns as f64 / 1e9 + process) / secs * 100.0,
        )?;
    }
    writeln!(
        w,
        "\nVerdict (issue 13: `sched_switch` and `sched_wakeup` at most {HOT_PATH_GOAL}x \
         runqlat's ns per event in the same runs; the summed costs decide; the tool \
         attached first runs first on each event and takes the cache misses on the task \
         fields both read, so the runs with ours first are the higher ratios), per-target \
         mode:\n"
    )?;
    for c in costs {
        let (ours, theirs) = c.summed();
        for hook in ["sched_switch", "sched_wakeup"] {
            writeln!(
                w,
                "- {}",
                verdict(
                    &format!("exporter, {}", c.label),
                    hook,
                    cost_of(&ours, hook),
                    cost_of(&theirs, hook),
                    &c.per_run(hook),
                )
            )?;
        }
    }
    writeln!(w)?;
    Ok(())
}
