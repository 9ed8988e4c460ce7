//! One cell on the real node: apply its configuration (journaled), launch
//! or re-pin the server, attach the probes, start the neighbour, run the
//! load, collect, put everything back. The figures are computed by the
//! pure functions in `experiment::metrics` and `analysis`.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde::Deserialize;

use super::{server::Server, CellData, Runner};
use crate::{
    cpulist,
    experiment::{
        analysis::{
            gap,
            interference::{self, Context, Threshold},
            stats::cdf_points,
        },
        matrix::CellSpec,
        metrics::{self, ClientRec, ServedRec},
        plan::NoiseAxis,
        raw,
        results::{CellMetrics, CellResult},
    },
    load::report::LoadReport,
    node::{counters, governor, irq, journal, journal::Journal, noise, numa},
    procfs::{parse::PF_KTHREAD, ProcFs},
    record::{self, Callback, RecordOptions},
    report::RecordReport,
    signals,
};

pub(super) fn read_jsonl<T: for<'de> Deserialize<'de>>(p: &Path) -> Vec<T> {
    let Ok(f) = std::fs::File::open(p) else {
        return Vec::new();
    };
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}

/// The built-in server's served-request records (for the trace's flows).
fn read_served(p: &Path) -> Vec<crate::timeline::requests::Served> {
    read_jsonl::<serde_json::Value>(p)
        .iter()
        .filter_map(crate::timeline::requests::Served::from_json)
        .collect()
}

/// Add the cell's requests (and, from the built-in server's records, which
/// worker served each) to its trace and close it: the summary line, or why
/// it failed.
fn finish_trace(
    tl: crate::timeline::SharedTimeline,
    requests: &Path,
    served: Option<&Path>,
) -> Result<String, String> {
    let served = served.map(read_served).unwrap_or_default();
    crate::timeline::session::finish_with_requests(tl, requests, &served, std::process::id())
        .map(|t| t.line())
        .map_err(|e| format!("{e:#}"))
}

/// The server and where things run in one cell.
struct Setup {
    srv: Server,
    server_cpus: Vec<u32>,
    noise_cpus: Option<Vec<u32>>,
}

/// What the load and the recording of one cell produced.
struct Raw {
    load: LoadReport,
    report: RecordReport,
    counts: Vec<counters::Count>,
    numa_before: numa::Counters,
    numa_after: numa::Counters,
    irq_before: Option<irq::Interrupts>,
    irq_after: Option<irq::Interrupts>,
    proc_numa: Option<numa::ProcessNuma>,
    threads: usize,
    seconds: f64,
    client: Vec<ClientRec>,
    /// The cell's Perfetto trace: its summary line, or why it failed.
    trace: Option<Result<String, String>>,
}

/// The cell's directory under the output, relative to it.
fn cell_dir_rel(spec: &CellSpec) -> String {
    format!(
        "cells/{:02}-{}-r{}",
        spec.order,
        spec.config.slug(),
        spec.repeat
    )
}

/// The cell's trace file name, in its directory.
pub const TRACE_FILE: &str = "trace.pftrace";

impl Runner<'_> {
    pub(super) fn noise_cpus(
        &self,
        n: NoiseAxis,
        server_cpus: &[u32],
        notes: &mut Vec<String>,
    ) -> Result<Option<Vec<u32>>, String> {
        let place = match n {
            NoiseAxis::None => return Ok(None),
            NoiseAxis::SameNode => noise::Place::SameNode,
            NoiseAxis::OtherNode => noise::Place::OtherNode,
        };
        match noise::resolve(&self.o.roots, &place, server_cpus) {
            Ok(c) => Ok(Some(c)),
            Err(noise::PlaceError::NotAvailable(_)) if n == NoiseAxis::SameNode => {
                notes.push(format!(
                    "the server's node has no CPUs outside the server's ({}): the neighbour shares its cores",
                    cpulist::Display(server_cpus)
                ));
                Ok(Some(server_cpus.to_vec()))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    pub(super) fn start_noise(&self, cpus: &[u32], seconds: f64) -> JoinHandle<()> {
        let kind = match self.plan().noise_kind.as_str() {
            "membw" => noise::Kind::Membw,
            "mixed" => noise::Kind::Mixed,
            _ => noise::Kind::Cpu,
        };
        let threads = self.plan().noise_threads.unwrap_or(cpus.len()).max(1);
        let buf = noise::membw_buffer_bytes(noise::llc_bytes(&self.o.roots, cpus[0]));
        let cpus = cpus.to_vec();
        std::thread::spawn(move || {
            let _ = noise::run(kind, threads, &cpus, buf, Duration::from_secs_f64(seconds));
        })
    }

    /// Run one cell; Err is the reason it failed. The restore outcome is
    /// in `cell.restore` either way.
    pub(super) fn cell(
        &self,
        spec: &CellSpec,
        cell: &mut CellResult,
        data: &mut CellData,
    ) -> Result<(), String> {
        let (mut j, rec) =
            Journal::begin(&self.o.journal, &self.o.roots.proc).map_err(|e| e.to_string())?;
        if let journal::Recovered::Crash(r) = rec {
            cell.notes.push(format!(
                "restored a crashed session's changes first: {}",
                r.lines().join("; ")
            ));
        }
        let setup = self.setup(spec, cell, &mut j);
        let (mut s, raw) = match setup {
            Ok(mut s) => {
                let trace = (self.plan().trace_mb > 0).then(|| {
                    let dir = self.o.out_dir.join(cell_dir_rel(spec));
                    let _ = std::fs::create_dir_all(&dir);
                    let mut t = crate::timeline::TraceOptions::new(
                        &dir.join(TRACE_FILE),
                        self.plan().trace_mb,
                    );
                    // A quarter of the cap for the requests, added last.
                    t.request_reserve = t.max_bytes / 4;
                    t
                });
                let raw = self.measure(&s, spec.order, trace.as_ref());
                if let Ok(r) = &raw {
                    match &r.trace {
                        Some(Ok(line)) => {
                            cell.raw
                                .push(format!("{}/{TRACE_FILE}", cell_dir_rel(spec)));
                            cell.notes.push(line.clone());
                        }
                        Some(Err(why)) => cell.notes.push(format!("no trace: {why}")),
                        None => {}
                    }
                }
                let died = s.srv.exited();
                s.srv.stop();
                (
                    s,
                    died.map_or(raw, |why| Err(format!("{why} during the cell"))),
                )
            }
            Err(e) => {
                cell.restore = metrics::restore_report(j.restore());
                return Err(e);
            }
        };
        cell.restore = metrics::restore_report(j.restore());
        if let Some(r) = cell.restore.as_ref().filter(|r| !r.complete) {
            cell.notes.push(format!(
                "the node was not put back completely: {}",
                r.failures.join("; ")
            ));
        }
        let raw = raw?;
        if signals::stop_requested() {
            return Err("interrupted by Ctrl-C".into());
        }
        self.compute(spec, cell, data, &mut s, raw)
    }

    fn setup(
        &self,
        spec: &CellSpec,
        cell: &mut CellResult,
        j: &mut Journal,
    ) -> Result<Setup, String> {
        let p = self.plan();
        if spec.config.governor != "current" {
            governor::set(&self.o.roots, j, &spec.config.governor).map_err(|e| e.to_string())?;
        }
        let placed = self.facts.place(spec.config.pinning, p)?;
        cell.placement = placed.clone();
        let srv = self
            .launch(placed.as_ref(), &spec.order.to_string(), j)
            .map_err(|e| format!("{e:#}"))?;
        let server_cpus = placed
            .as_ref()
            .map(|x| x.cpus.clone())
            .unwrap_or_else(|| self.facts.online.clone());
        let noise_cpus = self.noise_cpus(spec.config.noise, &server_cpus, &mut cell.notes)?;
        cell.noise_cpus = noise_cpus.clone();
        Ok(Setup {
            srv,
            server_cpus,
            noise_cpus,
        })
    }

    /// Attach the probes to `pid`; returns once they are attached.
    fn start_recording(
        &self,
        pid: u32,
        timeline: Option<crate::timeline::SharedTimeline>,
    ) -> Result<(JoinHandle<anyhow::Result<RecordReport>>, Arc<AtomicBool>), String> {
        let p = self.plan();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<()>();
        let mut ro = RecordOptions::new(record::TargetSpec::Pid(pid));
        ro.duration = Some(Duration::from_secs_f64(p.warmup_s + p.measure_s + 120.0));
        ro.outlier_runq = Duration::from_nanos(1);
        ro.outlier_irq = Duration::from_nanos(1);
        ro.trace_events = true;
        ro.max_outliers = 2_000_000;
        ro.stop = Some(stop.clone());
        ro.timeline = timeline;
        ro.on_attached = Some(Callback::new(move |_| {
            let _ = tx.send(());
        }));
        let h = std::thread::spawn(move || record::run(&ro));
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(()) => return Ok((h, stop)),
                Err(_) if h.is_finished() => {
                    return Err(match h.join() {
                        Ok(Err(e)) => format!("recording: {e:#}"),
                        _ => "recording ended before the probes were attached".into(),
                    });
                }
                Err(_) => {}
            }
        }
    }

    /// Probes first, then the snapshots and the neighbour, then the load.
    fn measure(
        &self,
        s: &Setup,
        order: usize,
        trace: Option<&crate::timeline::TraceOptions>,
    ) -> Result<Raw, String> {
        let p = self.plan();
        let roots = &self.o.roots;
        // A trace that cannot be created is a note, not a failed cell.
        let (timeline, trace_err) = match trace.map(crate::timeline::Timeline::create) {
            None => (None, None),
            Some(Ok(t)) => (Some(t.shared()), None),
            Some(Err(e)) => (None, Some(format!("creating the cell's trace: {e:#}"))),
        };
        let (rec, stop) = self.start_recording(s.srv.pid, timeline.clone())?;
        let tids = ProcFs::new(&roots.proc).threads(s.srv.pid);
        let irq_before = irq::read_interrupts(roots).ok();
        let numa_before = numa::snapshot(roots);
        let ctr = counters::Session::start(&tids).ok();
        let noise = s
            .noise_cpus
            .as_ref()
            .map(|c| self.start_noise(c, p.warmup_s + p.measure_s + 0.3));
        let t0 = Instant::now();
        let reqs_path = self.tmp.join(format!("requests-{order}.jsonl"));
        let warm = (self.rate * p.warmup_s).round() as u64;
        let load = self
            .load_options(
                &s.srv.url,
                Some(self.rate),
                p.warmup_s + p.measure_s,
                warm,
                Some(reqs_path.clone()),
            )
            .map_err(|e| e.to_string())
            .and_then(|lo| crate::load::run(&lo).map_err(|e| format!("load: {e}")));
        let seconds = t0.elapsed().as_secs_f64();
        let counts = ctr.map(|mut c| c.read()).unwrap_or_default();
        let numa_after = numa::snapshot(roots);
        let irq_after = irq::read_interrupts(roots).ok();
        let proc_numa = numa::read_process(roots, s.srv.pid).ok();
        stop.store(true, Ordering::SeqCst);
        let report = match rec.join() {
            Ok(r) => r.map_err(|e| format!("recording: {e:#}")),
            Err(_) => Err("the recording thread panicked".into()),
        };
        if let Some(h) = noise {
            let _ = h.join();
        }
        let trace = match timeline {
            None => trace_err.map(Err),
            Some(tl) => Some(finish_trace(tl, &reqs_path, s.srv.served.as_deref())),
        };
        let client = read_jsonl(&reqs_path);
        let _ = std::fs::remove_file(&reqs_path);
        Ok(Raw {
            load: load?,
            report: report?,
            counts,
            numa_before,
            numa_after,
            irq_before,
            irq_after,
            proc_numa,
            threads: tids.len(),
            seconds,
            client,
            trace,
        })
    }

    /// The cell's figures from its raw data.
    fn compute(
        &self,
        spec: &CellSpec,
        cell: &mut CellResult,
        data: &mut CellData,
        s: &mut Setup,
        raw: Raw,
    ) -> Result<(), String> {
        if let Some(why) = super::server::cell_problem(&raw.load, self.connections()) {
            return Err(why);
        }
        let p = self.plan();
        let mut m = metrics::from_load(&raw.load, self.rate, p.max_tokens);
        metrics::add_recording(&mut m, &raw.report);
        self.add_node_figures(&mut m, &raw, &s.server_cpus);
        self.write_raw(spec, cell, &m, &raw, s);

        let flights = metrics::flights(&raw.client);
        m.samples_ms = flights.iter().map(|f| f.latency_ms).collect();
        let mut lat = m.samples_ms.clone();
        lat.sort_by(f64::total_cmp);
        m.cdf = cdf_points(&lat, 120);
        data.windows = metrics::windows(&raw.report);
        let exact = s.srv.served.is_some();
        if let Some(path) = s.srv.served.take() {
            let from = raw
                .client
                .iter()
                .filter(|r| !r.warmup)
                .map(|r| r.sent_ns)
                .min()
                .unwrap_or(0);
            let served = metrics::served(read_jsonl::<ServedRec>(&path), from);
            let _ = std::fs::remove_file(&path);
            let (tail, scatter) =
                metrics::exact_split(&served, &metrics::kernel_events(&raw.report));
            m.tail = tail;
            m.scatter = scatter;
            if raw.report.outliers_not_kept > 0 {
                cell.notes.push(format!(
                    "{} kernel events beyond the cap were not kept: attribution is a lower bound",
                    raw.report.outliers_not_kept
                ));
            }
        } else {
            m.tail = metrics::time_window_split(&flights, &data.windows);
        }
        data.flights = flights;
        m.gap = m
            .tail
            .as_ref()
            .and_then(|t| gap::of(t, exact, gap::MIN_SHARE_PCT));
        m.interference = Some(self.interference(&raw.report, s.srv.pid, s.noise_cpus.is_some()));
        cell.metrics = Some(m);
        Ok(())
    }

    fn interference(
        &self,
        report: &RecordReport,
        server: u32,
        neighbour: bool,
    ) -> crate::experiment::results::Interference {
        let procfs = ProcFs::new(&self.o.roots.proc);
        let kernel = |pid: u32| procfs.stat(pid).ok().map(|st| st.flags & PF_KTHREAD != 0);
        let cx = Context {
            server_tgid: server,
            own_tgid: std::process::id(),
            neighbour,
            runq_wait_ns: report.process.runq_wait.total_ns,
            rule: Threshold {
                share: self.plan().interference_share,
                min_ms: self.plan().interference_min_ms,
            },
        };
        interference::account(&metrics::preemptors(report, kernel), &cx)
    }

    fn add_node_figures(&self, m: &mut CellMetrics, raw: &Raw, server_cpus: &[u32]) {
        let local = numa::local_nodes(&self.facts.nodes, server_cpus);
        if let Some(pn) = &raw.proc_numa {
            m.numa_kib_per_node = pn.kib_per_node.clone();
            m.remote_share = numa::remote_share(pn, &local);
        }
        m.ipc = counters::ipc(&raw.counts);
        m.counters = raw
            .counts
            .iter()
            .map(|c| crate::experiment::results::Counter {
                event: c.event.to_string(),
                value: c.value,
                note: c.note.clone(),
            })
            .collect();
        let irq_d = match (&raw.irq_before, &raw.irq_after) {
            (Some(a), Some(b)) => irq::delta(a, b),
            _ => Vec::new(),
        };
        let per_cpu = irq::per_cpu_totals(&irq_d);
        m.interrupts_total = per_cpu.values().sum();
        m.interrupts_on_server_cpus = per_cpu
            .iter()
            .filter(|(c, _)| server_cpus.contains(c))
            .map(|(_, n)| n)
            .sum();
    }

    /// numastat -p, perf stat and /proc/interrupts style snapshots.
    fn write_raw(
        &self,
        spec: &CellSpec,
        cell: &mut CellResult,
        m: &CellMetrics,
        raw: &Raw,
        s: &Setup,
    ) {
        let dir_rel = cell_dir_rel(spec);
        let dir = self.o.out_dir.join(&dir_rel);
        if std::fs::create_dir_all(&dir).is_err() {
            cell.notes
                .push(format!("could not create {}", dir.display()));
            return;
        }
        let comm = raw.report.target.comm.clone();
        let nd = numa::delta(&raw.numa_before, &raw.numa_after);
        let irq_d = match (&raw.irq_before, &raw.irq_after) {
            (Some(a), Some(b)) => irq::delta(a, b),
            _ => Vec::new(),
        };
        let cpus = raw
            .irq_after
            .as_ref()
            .map(|i| i.cpus.clone())
            .unwrap_or_default();
        let files = [
            (
                "numastat.txt",
                raw::numastat(s.srv.pid, &comm, &m.numa_kib_per_node, &nd.numastat),
            ),
            (
                "perf-stat.txt",
                raw::perf_stat(s.srv.pid, raw.threads, &raw.counts, raw.seconds),
            ),
            (
                "interrupts.txt",
                raw::interrupts(&irq_d, &cpus, &s.server_cpus),
            ),
        ];
        for (name, text) in files {
            if std::fs::write(dir.join(name), text).is_ok() {
                cell.raw.push(format!("{dir_rel}/{name}"));
            }
        }
    }
}
