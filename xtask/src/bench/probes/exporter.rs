//! The exporter's own cost at a measured switch rate: `tailprobe exporter
//! --comm NAME` following a load of that name, its own metrics scraped
//! when the load is followed and again when it has ended.

use super::*;

/// Loopback port for the exporter under test.
const PORT: u16 = 19467;

/// What the exporter cost over one load.
pub(super) struct ExporterCost {
    pub(super) load: String,
    /// Seconds between the two scrapes.
    pub(super) secs: f64,
    /// Target context switches the exporter counted in between.
    pub(super) switches: f64,
    /// Runs of, and CPU seconds in, all of its eBPF programs.
    pub(super) probe_runs: f64,
    pub(super) probe_secs: f64,
    /// CPU seconds of the exporter process itself (user + system).
    pub(super) process_secs: f64,
}

/// Sum of every series of metric `name` (any labels) in an exposition.
fn sum_of(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Run `load` (its first word is the command name the exporter follows)
/// under `tailprobe exporter --comm`.
pub(super) fn measure_exporter(bin: &Path, load: &str) -> Result<ExporterCost> {
    let comm = load.split_whitespace().next().context("empty load")?;
    let ex = spawn(&[
        bin.to_string_lossy().to_string(),
        "exporter".into(),
        "--comm".into(),
        comm.into(),
        "--rescan".into(),
        "100ms".into(),
        "--listen".into(),
        format!("127.0.0.1:{PORT}"),
    ])?;
    let t0 = Instant::now();
    while crate::soak::scrape(PORT).is_err() {
        check_interrupted()?;
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("the exporter did not serve /metrics within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();
    let w = spawn(&argv(load))?;
    // From the first scrape that shows the load followed.
    let (a, ta) = loop {
        check_interrupted()?;
        let body = crate::soak::scrape(PORT)?;
        if sum_of(&body, "tailprobe_target_processes") >= 1.0 {
            break (body, Instant::now());
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the exporter did not follow `{comm}` within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    w.finish(started, Duration::from_secs(120))?;
    let b = crate::soak::scrape(PORT)?;
    let secs = ta.elapsed().as_secs_f64();
    drop(ex);
    let d = |name: &str| sum_of(&b, name) - sum_of(&a, name);
    Ok(ExporterCost {
        load: load.to_string(),
        secs,
        switches: d("tailprobe_context_switches_total"),
        probe_runs: d("tailprobe_probe_runs_total"),
        probe_secs: d("tailprobe_probe_run_seconds_total"),
        process_secs: d("tailprobe_exporter_cpu_seconds_total"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_series_of_one_metric() {
        let b = "# TYPE tailprobe_probe_runs counter\n\
                 tailprobe_probe_runs_total{program=\"sched_switch\"} 10\n\
                 tailprobe_probe_runs_total{program=\"sched_wakeup\"} 5.5\n\
                 tailprobe_probe_runs_total_other 100\n\
                 tailprobe_exporter_cpu_seconds_total 1.25\n";
        assert_eq!(sum_of(b, "tailprobe_probe_runs_total"), 15.5);
        assert_eq!(sum_of(b, "tailprobe_exporter_cpu_seconds_total"), 1.25);
        assert_eq!(sum_of(b, "tailprobe_missing"), 0.0);
    }
}
