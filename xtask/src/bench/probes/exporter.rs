//! The exporter's cost, beside runqlat in the same runs: `tailprobe
//! exporter --comm NAME` following a load of that name while `runqlat`
//! traces the whole machine. Both tools' program counters are read from
//! their fds' fdinfo, back to back, when the load is followed (every
//! process of it) and again when it has ended, so both cover the same
//! events; the attach order alternates between runs. The
//! exporter's scheduler programs run in their per-target mode, the
//! always-on agent's.

use super::*;

/// Loopback port for the exporter under test.
const PORT: u16 = 19467;

/// One run: the exporter's and runqlat's counters over the same window.
pub(super) struct ExporterRun {
    /// Seconds between the two reads.
    pub(super) secs: f64,
    /// Target context switches the exporter counted in between.
    pub(super) switches: f64,
    /// Each of our programs' runs and run time (from the exporter's own
    /// metrics), and runqlat's.
    pub(super) ours: Vec<ProgCost>,
    pub(super) theirs: Vec<ProgCost>,
    /// CPU seconds of the exporter process itself (user + system).
    pub(super) process_secs: f64,
    /// Which tool attached first.
    pub(super) ours_first: bool,
}

/// Every run of one load.
pub(super) struct ExporterCost {
    pub(super) label: &'static str,
    pub(super) load: String,
    pub(super) runs: Vec<ExporterRun>,
}

impl ExporterCost {
    /// Our programs summed over the runs, and runqlat's.
    pub(super) fn summed(&self) -> (Vec<ProgCost>, Vec<ProgCost>) {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for r in &self.runs {
            add_costs(&mut a, &r.ours);
            add_costs(&mut b, &r.theirs);
        }
        (a, b)
    }

    /// Ours over runqlat's ns per run for `hook`, each run.
    pub(super) fn per_run(&self, hook: &str) -> Vec<f64> {
        self.runs
            .iter()
            .filter_map(|r| {
                let a = cost_of(&r.ours, hook)?.ns_per_event()?;
                let b = cost_of(&r.theirs, hook)?.ns_per_event()?;
                (b > 0.0).then(|| a / b)
            })
            .collect()
    }
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

fn start_exporter(bin: &Path, comm: &str) -> Result<Running> {
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
    Ok(ex)
}

/// Wait until every process of the load is followed: the same count of
/// followed processes for 300 ms (three rescans).
fn scrape_when_followed(comm: &str, started: Instant) -> Result<()> {
    let mut last = (0.0, Instant::now());
    loop {
        check_interrupted()?;
        let body = crate::soak::scrape(PORT)?;
        let n = sum_of(&body, "tailprobe_target_processes");
        if n >= 1.0 && n == last.0 && last.1.elapsed() >= Duration::from_millis(300) {
            return Ok(());
        }
        if n != last.0 {
            last = (n, Instant::now());
        }
        if started.elapsed() > Duration::from_secs(30) {
            bail!("the exporter did not follow `{comm}` within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One run of `load` (its first word is the command name the exporter
/// follows) under the exporter, with runqlat attached.
fn exporter_run(bin: &Path, load: &str, ours_first: bool) -> Result<ExporterRun> {
    let comm = load.split_whitespace().next().context("empty load")?;
    let (ex, mut rq) = if ours_first {
        let ex = start_exporter(bin, comm)?;
        (ex, Runqlat::start()?)
    } else {
        let rq = Runqlat::start()?;
        (start_exporter(bin, comm)?, rq)
    };
    // Both tools' program counters from their fds' fdinfo, read back to
    // back (a scrape takes tens of ms to answer under this load).
    let mut oc = ProgCounters::of(ex.pid())?;
    let started = Instant::now();
    let w = spawn(&argv(load))?;
    scrape_when_followed(comm, started)?;
    oc.mark();
    rq.mark();
    // The scrapes inside the counters' window: the target switches they
    // count are a part of the runs counted.
    let a = crate::soak::scrape(PORT)?;
    let ta = Instant::now();
    w.finish(started, Duration::from_secs(120))?;
    let b = crate::soak::scrape(PORT)?;
    let secs = ta.elapsed().as_secs_f64();
    let ours = oc.since_mark();
    let theirs = rq.finish()?;
    drop(ex);
    let d = |name: &str| sum_of(&b, name) - sum_of(&a, name);
    Ok(ExporterRun {
        secs,
        switches: d("tailprobe_context_switches_total"),
        ours,
        theirs,
        process_secs: d("tailprobe_exporter_cpu_seconds_total"),
        ours_first,
    })
}

pub(super) fn measure_exporter(bin: &Path, plan: &Plan) -> Result<Vec<ExporterCost>> {
    let mut out = Vec::new();
    for (label, load) in &plan.exporter_loads {
        let mut c = ExporterCost {
            label,
            load: load.clone(),
            runs: Vec::new(),
        };
        for round in 0..plan.exporter_rounds {
            check_interrupted()?;
            c.runs.push(exporter_run(bin, load, round % 2 == 1)?);
        }
        out.push(c);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "# TYPE tailprobe_probe_runs counter\n\
                     tailprobe_probe_runs_total{program=\"sched_switch\"} 10\n\
                     tailprobe_probe_runs_total{program=\"sched_wakeup\"} 5.5\n\
                     tailprobe_probe_runs_total_other 100\n\
                     tailprobe_probe_run_seconds_total{program=\"sched_switch\"} 0.000001\n\
                     tailprobe_exporter_cpu_seconds_total 1.25\n";

    #[test]
    fn sums_series_of_one_metric() {
        assert_eq!(sum_of(A, "tailprobe_probe_runs_total"), 15.5);
        assert_eq!(sum_of(A, "tailprobe_exporter_cpu_seconds_total"), 1.25);
        assert_eq!(sum_of(A, "tailprobe_missing"), 0.0);
    }
}
