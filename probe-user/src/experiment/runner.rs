//! Running the matrix on the node: each cell applies its configuration
//! (journaled), launches or re-pins the server, starts the neighbour,
//! attaches the probes, runs the load, collects, and puts everything back.

use std::{
    io::{BufRead as _, BufReader},
    net::{SocketAddr, TcpStream, ToSocketAddrs as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use serde::Deserialize;

use super::{
    analysis::{
        attribution::{self, EventKind, KEvent, ServedReq},
        capacity::{self, CapacityRow, SweepPoint},
        correlate::{self, Flight, WindowSignals},
        stats::{cdf_points, percentile_sorted},
    },
    matrix::{self, CellSpec, Config, NodeFacts, Placed},
    plan::{NoiseAxis, Plan},
    raw,
    results::*,
    summarise,
};
use crate::{
    cpulist,
    load::{self, target::Api, LoadOptions, Mode},
    node::{self, counters, governor, inventory, irq, journal::Journal, noise, numa, pin, Roots},
    procfs::ProcFs,
    record::{self, Callback, RecordOptions},
    report::RecordReport,
    signals,
};

/// What the experiment runs against.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerTarget {
    /// `tailprobe serve`, launched per cell (pinning applies at launch).
    Builtin,
    /// A server that is already running: its URL and pid (pinning re-pins
    /// its threads through the journal).
    Running { url: String, pid: u32 },
    /// A command that starts the server, launched per cell; `url` is where
    /// it answers once up.
    Command { cmd: String, url: String },
}

#[derive(Debug, Clone)]
pub struct ExperimentOptions {
    pub plan: Plan,
    pub target: ServerTarget,
    /// results.json, plots, per-cell raw snapshots.
    pub out_dir: PathBuf,
    pub roots: Roots,
    pub journal: PathBuf,
    pub progress: bool,
    /// The tailprobe binary (runs the built-in server).
    pub exe: PathBuf,
}

/// What this node offers, read once.
pub fn node_facts(roots: &Roots) -> (NodeFacts, inventory::Inventory) {
    let inv = inventory::read(roots);
    let online = cpulist::parse(&inv.cpus_online).unwrap_or_default();
    let mut nodes = pin::node_cpus(roots);
    for (_, c) in nodes.iter_mut() {
        c.retain(|x| online.contains(x));
    }
    if nodes.is_empty() {
        nodes = vec![(0, online.clone())];
    }
    let (governors, current_governor) = match &inv.cpufreq {
        Some(cf) => (
            Ok(cf.available()),
            cf.policies.first().map(|p| p.governor.clone()),
        ),
        None => (
            Err(inv
                .cpufreq_note
                .clone()
                .unwrap_or_else(|| "no cpufreq".into())),
            None,
        ),
    };
    let facts = NodeFacts {
        online,
        nodes,
        governors,
        current_governor,
        device_local_node: inv.device_local_node,
    };
    (facts, inv)
}

fn node_info(facts: &NodeFacts, inv: &inventory::Inventory, roots: &Roots) -> NodeInfo {
    let read = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    NodeInfo {
        hostname: read(&roots.proc.join("sys/kernel/hostname")),
        kernel: read(&roots.proc.join("sys/kernel/osrelease")),
        cpus_online: inv.cpus_online.clone(),
        nodes: inv
            .nodes
            .iter()
            .map(|n| NodeRow {
                id: n.id,
                cpus: n.cpus.clone(),
                mem_total_kib: n.mem_total_kib,
            })
            .collect(),
        cpufreq: match &inv.cpufreq {
            Some(cf) => format!(
                "{}, governor {}",
                cf.driver,
                facts.current_governor.as_deref().unwrap_or("?")
            ),
            None => inv
                .cpufreq_note
                .as_deref()
                .unwrap_or("no cpufreq")
                .trim_start_matches("not available on this node: ")
                .to_string(),
        },
        accelerators: inv.accelerators.len(),
        device_local: facts.local_node().1,
        nics: inv
            .nics
            .iter()
            .map(|n| {
                format!(
                    "{} (node {}, {} IRQs)",
                    n.name,
                    n.numa_node
                        .map(|x| x.to_string())
                        .unwrap_or_else(|| "unknown".into()),
                    n.irqs.len()
                )
            })
            .collect(),
        numa_balancing: inv.numa_balancing,
        thp: inv.thp.enabled.clone(),
        irqbalance: inv.irqbalance_pid.is_some(),
        isolated: inv.isolated.clone(),
        topology_markdown: inventory::render_markdown(inv),
        facts: facts.clone(),
    }
}

/// A server for one cell.
struct Server {
    child: Option<Child>,
    pid: u32,
    url: String,
    served: Option<PathBuf>,
}

impl Server {
    fn exited(&mut self) -> Option<String> {
        match &mut self.child {
            Some(c) => match c.try_wait() {
                Ok(Some(st)) => Some(format!("the server exited ({st})")),
                _ => None,
            },
            None => (!ProcFs::new("/proc").is_alive(self.pid))
                .then(|| format!("the server (pid {}) is gone", self.pid)),
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on the pid of a child we spawned and have not
            // reaped yet (so the pid cannot have been reused).
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_tcp(addr: SocketAddr, limit: Duration, child: &mut Child) -> Result<()> {
    let t = Instant::now();
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(st)) = child.try_wait() {
            bail!("the server command exited before it answered ({st})");
        }
        if t.elapsed() > limit {
            bail!("nothing answered on {addr} within {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn addr_of(url: &str) -> Result<SocketAddr> {
    let uri: http::Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
    let host = uri.host().context("URL without host")?;
    let port = uri.port_u16().unwrap_or(80);
    (host.trim_matches(|c| c == '[' || c == ']'), port)
        .to_socket_addrs()?
        .next()
        .context("URL host does not resolve")
}

fn placement(p: &Placed) -> pin::Placement {
    pin::Placement {
        cpus: p.cpus.clone(),
        mem_node: p.mem_node,
        why: p.why.clone(),
    }
}

struct Runner<'a> {
    o: &'a ExperimentOptions,
    facts: NodeFacts,
    started: Instant,
    tmp: PathBuf,
    /// Offered rate of every cell.
    rate: f64,
}

#[derive(Deserialize)]
struct ClientRec {
    warmup: bool,
    intended_ns: Option<u64>,
    sent_ns: u64,
    end_ns: u64,
    outcome: String,
}

#[derive(Deserialize)]
struct ServedRec {
    id: u64,
    tid: u32,
    queued_ns: u64,
    start_ns: u64,
    end_ns: u64,
    outcome: String,
}

fn read_jsonl<T: for<'de> Deserialize<'de>>(p: &Path) -> Vec<T> {
    let Ok(f) = std::fs::File::open(p) else {
        return Vec::new();
    };
    BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str(&l).ok())
        .collect()
}

/// Everything a finished cell hands to the analysis, beside its metrics.
#[derive(Default)]
struct CellData {
    flights: Vec<Flight>,
    windows: Vec<WindowSignals>,
}

impl Runner<'_> {
    fn plan(&self) -> &Plan {
        &self.o.plan
    }

    fn say(&self, msg: &str) {
        if self.o.progress {
            eprintln!("[{:>5.1} s] {msg}", self.started.elapsed().as_secs_f64());
        }
    }

    fn workers(&self) -> usize {
        self.plan()
            .server
            .workers
            .unwrap_or(self.facts.online.len().max(1))
    }

    fn launch(&self, placed: Option<&Placed>, tag: &str, journal: &mut Journal) -> Result<Server> {
        match &self.o.target {
            ServerTarget::Builtin => {
                let served = self.tmp.join(format!("served-{tag}.jsonl"));
                let mut cmd = Command::new(&self.o.exe);
                cmd.args(["serve", "--port", "0", "--requests-out"])
                    .arg(&served)
                    .args(["--hidden", &self.plan().server.hidden.to_string()])
                    .args(["--layers", &self.plan().server.layers.to_string()])
                    .args(["--workers", &self.workers().to_string()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped());
                if let Some(p) = placed {
                    pin::pin_command(&mut cmd, &placement(p)).context("pinning the server")?;
                }
                let mut child = cmd
                    .spawn()
                    .with_context(|| format!("starting {} serve", self.o.exe.display()))?;
                let stderr = child.stderr.take().context("server stderr")?;
                let (tx, rx) = mpsc::channel::<String>();
                std::thread::spawn(move || {
                    let mut tx = Some(tx);
                    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                        if let Some(rest) = line.split("listening on http://").nth(1) {
                            if let (Some(t), Some(a)) = (tx.take(), rest.split_whitespace().next())
                            {
                                let _ = t.send(a.to_string());
                            }
                        }
                    }
                });
                let addr = match rx.recv_timeout(Duration::from_secs(20)) {
                    Ok(a) => a,
                    Err(_) => {
                        let _ = child.kill();
                        let st = child.wait().ok();
                        bail!("the built-in server did not start (status {st:?})");
                    }
                };
                Ok(Server {
                    pid: child.id(),
                    child: Some(child),
                    url: format!("http://{addr}/v1/completions"),
                    served: Some(served),
                })
            }
            ServerTarget::Command { cmd, url } => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("exec {cmd}"))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                if let Some(p) = placed {
                    pin::pin_command(&mut c, &placement(p)).context("pinning the server")?;
                }
                let mut child = c.spawn().with_context(|| format!("starting {cmd:?}"))?;
                let addr = addr_of(url)?;
                wait_tcp(addr, Duration::from_secs(60), &mut child)?;
                Ok(Server {
                    pid: child.id(),
                    child: Some(child),
                    url: url.clone(),
                    served: None,
                })
            }
            ServerTarget::Running { url, pid } => {
                if let Some(p) = placed {
                    pin::repin(&self.o.roots, journal, *pid, &p.cpus)
                        .with_context(|| format!("re-pinning pid {pid}"))?;
                }
                Ok(Server {
                    child: None,
                    pid: *pid,
                    url: url.clone(),
                    served: None,
                })
            }
        }
    }

    fn load_options(
        &self,
        url: &str,
        rate: Option<f64>,
        seconds: f64,
        warmup: u64,
        out: Option<PathBuf>,
    ) -> Result<LoadOptions> {
        let p = self.plan();
        let request = load::RequestSpec {
            api: Api::Completions,
            model: load::ModelChoice::Given("tailprobe-sim".into()),
            prompt_tokens: p.prompt_tokens,
            max_tokens: p.max_tokens,
            stream: true,
            ..load::RequestSpec::default()
        };
        let target = request
            .target(url)
            .map_err(|e| anyhow!("load target {url}: {e}"))?;
        let mode = match rate {
            Some(rate) => Mode::Open {
                rate,
                arrival: p.arrival.parse().map_err(|e| anyhow!("arrival: {e}"))?,
                seed: p.seed,
                connections: (self.workers() * 2).max(2),
                max_in_flight: 10_000,
            },
            None => Mode::Closed {
                concurrency: (self.workers() * 2).max(2),
            },
        };
        Ok(LoadOptions {
            target,
            mode,
            n_requests: None,
            duration: Some(Duration::from_secs_f64(seconds)),
            warmup,
            timeout: Duration::from_secs(10),
            request,
            slo: load::Slo::default(),
            threads: 1,
            cpus: None,
            requests_out: out,
            progress: false,
            stop: Some(signals::stop_requested),
        })
    }

    /// Closed-loop throughput of the baseline, to size the offered rate.
    fn calibrate(&self) -> Result<f64> {
        let (mut j, _) =
            Journal::begin(&self.o.journal, &self.o.roots.proc).context("opening the journal")?;
        let mut srv = self.launch(None, "calibrate", &mut j)?;
        let lo = self.load_options(&srv.url, None, 2.5, 20, None)?;
        let rep = load::run(&lo).context("calibration load")?;
        srv.stop();
        let _ = j.restore();
        if rep.ok == 0 {
            bail!("calibration: no request succeeded on {}", srv.url);
        }
        Ok(rep.throughput_rps)
    }

    fn noise_cpus(
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

    fn start_noise(&self, cpus: &[u32], seconds: f64) -> std::thread::JoinHandle<()> {
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

    /// Run one cell; Err is the reason it failed.
    fn cell(
        &self,
        spec: &CellSpec,
        cell: &mut CellResult,
        data: &mut CellData,
    ) -> Result<(), String> {
        let p = self.plan();
        let roots = &self.o.roots;
        let (mut j, rec) =
            Journal::begin(&self.o.journal, &roots.proc).map_err(|e| e.to_string())?;
        if let node::journal::Recovered::Crash(r) = rec {
            cell.notes.push(format!(
                "restored a crashed session's changes first: {}",
                r.lines().join("; ")
            ));
        }
        if spec.config.governor != "current" {
            governor::set(roots, &mut j, &spec.config.governor).map_err(|e| e.to_string())?;
        }
        let placed = self.facts.place(spec.config.pinning, p)?;
        cell.placement = placed.clone();
        let tag = format!("{}", spec.order);
        let mut srv = self
            .launch(placed.as_ref(), &tag, &mut j)
            .map_err(|e| format!("{e:#}"))?;
        let server_cpus = placed
            .as_ref()
            .map(|x| x.cpus.clone())
            .unwrap_or_else(|| self.facts.online.clone());
        let noise_cpus = self.noise_cpus(spec.config.noise, &server_cpus, &mut cell.notes)?;
        cell.noise_cpus = noise_cpus.clone();

        // Probes first, then the neighbour, then the load.
        let exact = srv.served.is_some();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<()>();
        let mut ro = RecordOptions::new(record::TargetSpec::Pid(srv.pid));
        ro.duration = Some(Duration::from_secs_f64(p.warmup_s + p.measure_s + 120.0));
        ro.outlier_runq = Duration::from_nanos(1);
        ro.outlier_irq = Duration::from_nanos(1);
        ro.trace_events = true;
        ro.max_outliers = 2_000_000;
        ro.stop = Some(stop.clone());
        ro.on_attached = Some(Callback::new(move |_| {
            let _ = tx.send(());
        }));
        let rec_thread = std::thread::spawn(move || record::run(&ro));
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(()) => break,
                Err(_) if rec_thread.is_finished() => {
                    return Err(match rec_thread.join() {
                        Ok(Err(e)) => format!("recording: {e:#}"),
                        _ => "recording ended before the probes were attached".into(),
                    });
                }
                Err(_) => {}
            }
        }
        let tids = ProcFs::new(&roots.proc).threads(srv.pid);
        let irq_before = irq::read_interrupts(roots).ok();
        let numa_before = numa::snapshot(roots);
        let ctr = counters::Session::start(&tids).ok();
        let noise_thread = noise_cpus
            .as_ref()
            .map(|c| self.start_noise(c, p.warmup_s + p.measure_s + 0.3));
        let t0 = Instant::now();
        let reqs_path = self.tmp.join(format!("requests-{tag}.jsonl"));
        let warm = (self.rate * p.warmup_s).round() as u64;
        let lo = self
            .load_options(
                &srv.url,
                Some(self.rate),
                p.warmup_s + p.measure_s,
                warm,
                Some(reqs_path.clone()),
            )
            .map_err(|e| e.to_string())?;
        let load_res = load::run(&lo);
        let seconds = t0.elapsed().as_secs_f64();
        let counts = ctr.map(|c| c.read()).unwrap_or_default();
        let numa_after = numa::snapshot(roots);
        let irq_after = irq::read_interrupts(roots).ok();
        let proc_numa = numa::read_process(roots, srv.pid).ok();
        stop.store(true, Ordering::SeqCst);
        let report: Result<RecordReport, String> = match rec_thread.join() {
            Ok(r) => r.map_err(|e| format!("recording: {e:#}")),
            Err(_) => Err("the recording thread panicked".into()),
        };
        if let Some(h) = noise_thread {
            let _ = h.join();
        }
        let died = srv.exited();
        srv.stop();
        if let Err(e) = j.restore() {
            cell.notes.push(format!("restore: {e}"));
        }
        if let Some(why) = died {
            return Err(format!("{why} during the cell"));
        }
        let lrep = load_res.map_err(|e| format!("load: {e}"))?;
        let report = report?;
        if lrep.ok == 0 {
            return Err(format!(
                "no request succeeded (errors {:?}, timeouts {})",
                lrep.error_kinds, lrep.timeouts
            ));
        }
        if signals::stop_requested() {
            return Err("interrupted by Ctrl-C".into());
        }

        // Metrics.
        let mut m = CellMetrics {
            offered_rps: self.rate,
            throughput_rps: lrep.throughput_rps,
            ok: lrep.ok,
            errors: lrep.errors,
            timeouts: lrep.timeouts,
            ..CellMetrics::default()
        };
        if let Some(s) = lrep
            .latency_ms
            .e2e_sched
            .as_ref()
            .or(lrep.latency_ms.e2e.as_ref())
        {
            m.latency_ms = Latency {
                count: s.count,
                avg: s.avg,
                p50: s.p50.value,
                p95: s.p95.value,
                p99: s.p99.value,
                max: s.max,
                p95_samples: s.p95.samples,
                p99_samples: s.p99.samples,
            };
        }
        m.uncorrected_p95_ms = lrep
            .latency_ms
            .e2e
            .as_ref()
            .map(|s| s.p95.value)
            .unwrap_or(0.0);
        m.ttft_p95_ms = lrep.latency_ms.ttft_sched.as_ref().map(|s| s.p95.value);
        let pr = &report.process;
        m.runq_wait_ms = pr.runq_wait.total_ns as f64 / 1e6;
        m.runq_p99_us = pr.runq_wait.p99_ns.unwrap_or(0) as f64 / 1e3;
        m.runq_max_ms = pr.runq_wait.max_ns as f64 / 1e6;
        m.involuntary_switches = pr.involuntary_switches;
        m.migrations = pr.migrations.total;
        m.migrations_cross_llc = pr.migrations.cross_llc;
        m.migrations_cross_numa = pr.migrations.cross_numa;
        m.irq_stolen_ms = (pr.hardirq.total_ns + pr.softirq.total_ns) as f64 / 1e6;
        m.page_faults = pr.page_faults;
        m.numa_task_moves = pr.numa_balancing.moves + pr.numa_balancing.swaps;
        m.probe_cpu_pct = report.overhead.cpu_share_pct;
        m.lossy = report.lossy;
        m.events_not_kept = report.outliers_not_kept;
        let local = numa::local_nodes(&self.facts.nodes, &server_cpus);
        if let Some(pn) = &proc_numa {
            m.numa_kib_per_node = pn.kib_per_node.clone();
            m.remote_share = numa::remote_share(pn, &local);
        }
        m.ipc = counters::ipc(&counts);
        m.counters = counts
            .iter()
            .map(|c| Counter {
                event: c.event.to_string(),
                value: c.value,
                note: c.note.clone(),
            })
            .collect();
        let irq_d = match (&irq_before, &irq_after) {
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

        // Raw snapshots.
        let dir_rel = format!(
            "cells/{:02}-{}-r{}",
            spec.order,
            spec.config.slug(),
            spec.repeat
        );
        let dir = self.o.out_dir.join(&dir_rel);
        if std::fs::create_dir_all(&dir).is_ok() {
            let comm = report.target.comm.clone();
            let nd = numa::delta(&numa_before, &numa_after);
            let files = [
                (
                    "numastat.txt",
                    raw::numastat(srv.pid, &comm, &m.numa_kib_per_node, &nd.numastat),
                ),
                (
                    "perf-stat.txt",
                    raw::perf_stat(srv.pid, tids.len(), &counts, seconds),
                ),
                (
                    "interrupts.txt",
                    raw::interrupts(
                        &irq_d,
                        &irq_after
                            .as_ref()
                            .map(|i| i.cpus.clone())
                            .unwrap_or_default(),
                        &server_cpus,
                    ),
                ),
            ];
            for (name, text) in files {
                if std::fs::write(dir.join(name), text).is_ok() {
                    cell.raw.push(format!("{dir_rel}/{name}"));
                }
            }
        }

        // Requests on the kernel's clock.
        let client: Vec<ClientRec> = read_jsonl(&reqs_path);
        let _ = std::fs::remove_file(&reqs_path);
        let measured: Vec<&ClientRec> = client
            .iter()
            .filter(|r| !r.warmup && r.outcome == "ok")
            .collect();
        let mut lat: Vec<f64> = measured
            .iter()
            .map(|r| r.end_ns.saturating_sub(r.intended_ns.unwrap_or(r.sent_ns)) as f64 / 1e6)
            .collect();
        lat.sort_by(f64::total_cmp);
        m.cdf = cdf_points(&lat, 120);
        data.flights = measured
            .iter()
            .map(|r| Flight {
                start_ns: r.intended_ns.unwrap_or(r.sent_ns).min(r.sent_ns),
                end_ns: r.end_ns,
                latency_ms: r.end_ns.saturating_sub(r.intended_ns.unwrap_or(r.sent_ns)) as f64
                    / 1e6,
            })
            .collect();
        data.windows = report
            .windows
            .iter()
            .map(|w| WindowSignals {
                start_ns: w.start_ns,
                len_ns: report.window_ns,
                runq_ns: w.runq_total_ns as f64,
                involuntary_switches: w.involuntary_switches as f64,
                migrations: w.migrations as f64,
                irq_ns: (w.hardirq_ns + w.softirq_ns) as f64,
                page_faults: w.page_faults as f64,
            })
            .collect();
        if exact {
            let measure_from = measured.iter().map(|r| r.sent_ns).min().unwrap_or(0);
            let served: Vec<ServedReq> = srv
                .served
                .as_ref()
                .map(|p| read_jsonl::<ServedRec>(p))
                .unwrap_or_default()
                .into_iter()
                .filter(|s| s.outcome == "ok" && s.queued_ns >= measure_from)
                .map(|s| ServedReq {
                    id: s.id,
                    tid: s.tid,
                    queued_ns: s.queued_ns,
                    start_ns: s.start_ns,
                    end_ns: s.end_ns,
                })
                .collect();
            if let Some(p) = &srv.served {
                let _ = std::fs::remove_file(p);
            }
            let events: Vec<KEvent> = report
                .outliers
                .iter()
                .filter_map(|o| {
                    Some(KEvent {
                        kind: EventKind::from_outlier(o.kind)?,
                        tid: o.tid,
                        ts_ns: o.ts_ns,
                        value_ns: o.value_ns,
                    })
                })
                .collect();
            let bs = attribution::breakdown(&served, &events);
            let step = (bs.len() / 400).max(1);
            m.scatter = bs
                .iter()
                .step_by(step)
                .map(|b| (b.runq_ns as f64 / 1e6, b.total_ns as f64 / 1e6))
                .collect();
            m.tail = attribution::tail_split(&bs);
            if report.outliers_not_kept > 0 {
                cell.notes.push(format!(
                    "{} kernel events beyond the cap were not kept: attribution is a lower bound",
                    report.outliers_not_kept
                ));
            }
        } else {
            // By time window: process-wide signals while each request was in flight.
            let sig = correlate::per_request(&data.flights, &data.windows);
            let mut ls: Vec<f64> = data.flights.iter().map(|f| f.latency_ms).collect();
            ls.sort_by(f64::total_cmp);
            if let (Some(p95), Some(p50)) =
                (percentile_sorted(&ls, 95.0), percentile_sorted(&ls, 50.0))
            {
                let group = |keep: &dyn Fn(f64) -> bool| {
                    let v: Vec<attribution::Breakdown> = data
                        .flights
                        .iter()
                        .zip(&sig)
                        .filter(|(f, _)| keep(f.latency_ms))
                        .map(|(f, s)| {
                            let total = (f.latency_ms * 1e6) as u64;
                            let runq = s[0] as u64;
                            let irq = s[3] as u64;
                            attribution::Breakdown {
                                total_ns: total,
                                runq_ns: runq,
                                hardirq_ns: irq,
                                page_faults: s[4] as u64,
                                migrations: s[2] as u64,
                                service_ns: total.saturating_sub(runq + irq),
                                ..Default::default()
                            }
                        })
                        .collect();
                    attribution::GroupMeans::of(&v.iter().collect::<Vec<_>>())
                };
                m.tail = Some(attribution::TailSplit {
                    method: "time window (process-wide, all threads)".into(),
                    p95_ms: p95,
                    tail: group(&|l| l > p95),
                    typical: group(&|l| l <= p50),
                });
            }
        }
        cell.metrics = Some(m);
        Ok(())
    }

    /// Rate sweep of one configuration: p-percentile at each offered rate.
    fn sweep(&self, cfg: &Config, base_rps: f64) -> Result<Vec<SweepPoint>, String> {
        let p = self.plan();
        let Some(slo) = p.slo else {
            return Ok(Vec::new());
        };
        let roots = &self.o.roots;
        let (mut j, _) = Journal::begin(&self.o.journal, &roots.proc).map_err(|e| e.to_string())?;
        if cfg.governor != "current" {
            governor::set(roots, &mut j, &cfg.governor).map_err(|e| e.to_string())?;
        }
        let placed = self.facts.place(cfg.pinning, p)?;
        let mut srv = self
            .launch(placed.as_ref(), &format!("sweep-{}", cfg.slug()), &mut j)
            .map_err(|e| format!("{e:#}"))?;
        let server_cpus = placed
            .as_ref()
            .map(|x| x.cpus.clone())
            .unwrap_or_else(|| self.facts.online.clone());
        let mut notes = Vec::new();
        let nc = self.noise_cpus(cfg.noise, &server_cpus, &mut notes)?;
        let total = p.sweep.len() as f64 * (p.sweep_s + 0.5) + 0.5;
        let nt = nc.as_ref().map(|c| self.start_noise(c, total));
        let mut out = Vec::new();
        for f in &p.sweep {
            if signals::stop_requested() {
                break;
            }
            let rate = base_rps * f;
            let warm = (rate * 0.3).round() as u64;
            let lo = self
                .load_options(&srv.url, Some(rate), p.sweep_s + 0.3, warm, None)
                .map_err(|e| e.to_string())?;
            let r = load::run(&lo).map_err(|e| e.to_string())?;
            let pct = r
                .latency_ms
                .e2e_sched
                .as_ref()
                .map(|s| match slo.percentile as u32 {
                    50 => s.p50.value,
                    90 => s.p90.value,
                    99 => s.p99.value,
                    _ => s.p95.value,
                });
            out.push(SweepPoint {
                offered_rps: rate,
                achieved_rps: r.throughput_rps,
                pctl_ms: pct.unwrap_or(f64::INFINITY),
                errors: r.errors + r.timeouts,
            });
            std::thread::sleep(Duration::from_millis(200));
        }
        if let Some(h) = nt {
            let _ = h.join();
        }
        srv.stop();
        let _ = j.restore();
        Ok(out)
    }
}

fn est_cell_s(p: &Plan) -> f64 {
    p.warmup_s + p.measure_s + 2.5
}

/// Run the whole experiment; what finished is returned also after Ctrl-C.
pub fn run(o: &ExperimentOptions) -> Result<Results> {
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (facts, inv) = node_facts(&o.roots);
    facts.check_plan(&o.plan)?;
    // A private directory (random name, mode 0700, created by us): another
    // user cannot plant it or the files in it beforehand.
    let tmp_guard = crate::node::fsx::private_temp_dir("tailprobe-experiment-")
        .context("creating a private temporary directory")?;
    let tmp = tmp_guard.path().to_path_buf();
    let mut r = Runner {
        o,
        facts: facts.clone(),
        started: Instant::now(),
        tmp: tmp.clone(),
        rate: o.plan.rate.unwrap_or(0.0),
    };
    let p = &o.plan;
    let configs = matrix::configs(p);
    let specs = matrix::cells(&configs, p.repeats);
    let mut notes = Vec::new();

    let need_cal = p.rate.is_none() || !p.sweep.is_empty();
    let mut calibration = None;
    let mut closed = None;
    if need_cal {
        r.say("calibrating: closed loop on the baseline for 2.5 s");
        match r.calibrate() {
            Ok(t) => {
                closed = Some(t);
                if p.rate.is_none() {
                    r.rate = (t * p.load_fraction).max(1.0);
                }
            }
            Err(e) if p.rate.is_some() => {
                notes.push(format!("calibration failed ({e:#}): no capacity sweep"))
            }
            Err(e) => return Err(e.context("calibrating the offered rate")),
        }
    }
    calibration = calibration.or(Some(Calibration {
        closed_loop_rps: closed,
        offered_rps: r.rate,
        how: match (p.rate, closed) {
            (Some(x), _) => format!("{x} requests/s from the plan"),
            (None, Some(c)) => format!(
                "{:.0}% of the closed-loop throughput of the baseline ({c:.1} requests/s with {} connections)",
                p.load_fraction * 100.0,
                (r.workers() * 2).max(2)
            ),
            (None, None) => "unknown".into(),
        },
    }));
    r.say(&format!(
        "offered rate {:.1} requests/s, {} cells",
        r.rate,
        specs.len()
    ));

    let mut cells: Vec<CellResult> = Vec::new();
    let mut data: Vec<(Config, CellData)> = Vec::new();
    let mut stopped: Option<String> = None;
    let sweep_budget = if p.sweep.is_empty() || p.slo.is_none() {
        0.0
    } else {
        configs
            .iter()
            .filter(|c| facts.applicable(c, p).is_ok())
            .count() as f64
            * (p.sweep.len() as f64 * (p.sweep_s + 0.5) + 2.0)
    };
    let runnable = specs
        .iter()
        .filter(|s| facts.applicable(&s.config, p).is_ok())
        .count();
    let mut done = 0;
    for spec in &specs {
        let mut cell = CellResult {
            order: spec.order,
            repeat: spec.repeat,
            config: spec.config.clone(),
            label: spec.config.label(),
            status: CellStatus::Ran,
            reason: None,
            placement: None,
            noise_cpus: None,
            notes: Vec::new(),
            metrics: None,
            raw: Vec::new(),
            seconds: 0.0,
        };
        if let Err(why) = facts.applicable(&spec.config, p) {
            cell.status = CellStatus::NotApplicable;
            cell.reason = Some(why);
            cells.push(cell);
            continue;
        }
        if let Some(s) = &stopped {
            cell.status = CellStatus::Skipped;
            cell.reason = Some(s.clone());
            cells.push(cell);
            continue;
        }
        let elapsed = r.started.elapsed().as_secs_f64();
        if elapsed + est_cell_s(p) > p.max_total_s - sweep_budget.min(p.max_total_s / 3.0) {
            cell.status = CellStatus::Skipped;
            cell.reason = Some(format!(
                "time bound: max_total_s = {} would be exceeded",
                p.max_total_s
            ));
            cells.push(cell);
            continue;
        }
        done += 1;
        r.say(&format!(
            "cell {done}/{runnable}: {} (repeat {})",
            cell.label,
            spec.repeat + 1
        ));
        let t = Instant::now();
        let mut d = CellData::default();
        let res = r.cell(spec, &mut cell, &mut d);
        cell.seconds = t.elapsed().as_secs_f64();
        match res {
            Ok(()) => {
                if let Some(m) = &cell.metrics {
                    r.say(&format!(
                        "  p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, {:.1} req/s, run-queue wait {:.1} ms",
                        m.latency_ms.p50, m.latency_ms.p95, m.latency_ms.p99, m.throughput_rps, m.runq_wait_ms
                    ));
                }
                data.push((spec.config.clone(), d));
            }
            Err(why) if signals::stop_requested() => {
                cell.status = CellStatus::Skipped;
                cell.reason = Some(format!("interrupted by Ctrl-C ({why})"));
                stopped = Some("not run: interrupted by Ctrl-C".into());
            }
            Err(why) => {
                r.say(&format!("  failed: {why}"));
                cell.status = CellStatus::Failed;
                cell.reason = Some(why);
                if p.on_failure == super::plan::OnFailure::Stop {
                    stopped = Some("not run: an earlier cell failed and on_failure = stop".into());
                }
            }
        }
        cells.push(cell);
    }

    // Capacity sweep per runnable configuration.
    let mut capacity = None;
    if let (Some(slo), Some(base)) = (p.slo, closed) {
        if !p.sweep.is_empty() {
            let mut rows = Vec::new();
            let mut cnotes = Vec::new();
            for cfg in configs.iter().filter(|c| facts.applicable(c, p).is_ok()) {
                let left = p.max_total_s - r.started.elapsed().as_secs_f64();
                let need = p.sweep.len() as f64 * (p.sweep_s + 0.5) + 2.0;
                if stopped.is_some() || signals::stop_requested() || left < need {
                    cnotes.push(format!(
                        "{}: sweep not run ({})",
                        cfg.label(),
                        if left < need { "time bound" } else { "stopped" }
                    ));
                    continue;
                }
                r.say(&format!("capacity sweep: {}", cfg.label()));
                match r.sweep(cfg, base) {
                    Ok(points) => rows.push(CapacityRow {
                        label: cfg.label(),
                        capacity_rps: capacity::capacity(&points, slo.e2e_ms),
                        replicas: None,
                        replicas_n1: None,
                        saved_vs_worst: None,
                        ratio_vs_baseline: None,
                        points,
                    }),
                    Err(e) => cnotes.push(format!("{}: sweep failed ({e})", cfg.label())),
                }
            }
            let bi = rows.iter().position(|row| {
                configs
                    .iter()
                    .any(|c| c.is_baseline() && c.label() == row.label)
            });
            capacity = Some(CapacityResult {
                slo_percentile: slo.percentile,
                slo_ms: slo.e2e_ms,
                fleet_load_rps: p.fleet_load_rps,
                headroom: p.headroom,
                rows: capacity::fleet(rows, bi, p.fleet_load_rps, p.headroom),
                notes: cnotes,
            });
        }
    }
    drop(tmp_guard);

    let configs_sum = summarise::summarise(&cells);
    let exact = o.target == ServerTarget::Builtin;
    let correlation = correlation_of(&data);
    let attribution = {
        let per: Vec<(String, attribution::TailSplit)> = configs_sum
            .iter()
            .filter_map(|c| {
                // The repeat with the median p95 represents the configuration.
                let mut ts: Vec<&CellMetrics> = cells
                    .iter()
                    .filter(|x| x.config == c.config)
                    .filter_map(|x| x.metrics.as_ref())
                    .filter(|m| m.tail.is_some())
                    .collect();
                ts.sort_by(|a, b| a.latency_ms.p95.total_cmp(&b.latency_ms.p95));
                let m = ts.get(ts.len() / 2)?;
                Some((c.label.clone(), m.tail.clone()?))
            })
            .collect();
        (!per.is_empty()).then(|| AttributionResult {
            method: if exact {
                "exact: kernel events of the serving thread inside each request (built-in server's request log)".into()
            } else {
                "time window: process-wide kernel signals while each request was in flight (the server does not say which thread served a request)".into()
            },
            per_config: per,
        })
    };
    let target = match &o.target {
        ServerTarget::Builtin => TargetInfo {
            kind: "built-in server".into(),
            description: format!(
                "tailprobe serve, {} workers, model {}x{}x{}, launched per cell",
                r.workers(),
                p.server.hidden,
                p.server.hidden,
                p.server.layers
            ),
            exact_attribution: true,
        },
        ServerTarget::Running { url, pid } => TargetInfo {
            kind: "running server".into(),
            description: format!("{url} (pid {pid}), re-pinned per cell"),
            exact_attribution: false,
        },
        ServerTarget::Command { cmd, url } => TargetInfo {
            kind: "server command".into(),
            description: format!("`{cmd}` launched per cell, load on {url}"),
            exact_attribution: false,
        },
    };
    Ok(Results {
        version: VERSION,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        started_unix,
        elapsed_s: r.started.elapsed().as_secs_f64(),
        interrupted: signals::stop_requested(),
        plan: p.clone(),
        node: node_info(&facts, &inv, &o.roots),
        target,
        calibration,
        cells,
        configs: configs_sum,
        correlation,
        attribution,
        capacity,
        dropin: None,
        plots: Vec::new(),
        notes,
    })
}

fn correlation_of(data: &[(Config, CellData)]) -> Option<CorrelationResult> {
    let mut flights = Vec::new();
    let mut sig = Vec::new();
    let mut bflights = Vec::new();
    let mut bsig = Vec::new();
    for (cfg, d) in data {
        let s = correlate::per_request(&d.flights, &d.windows);
        if cfg.is_baseline() {
            bflights.extend_from_slice(&d.flights);
            bsig.extend_from_slice(&s);
        }
        flights.extend_from_slice(&d.flights);
        sig.extend(s);
    }
    if flights.is_empty() {
        return None;
    }
    Some(CorrelationResult {
        method: "Spearman rank correlation of each request's latency (end - intended) with the server's kernel signals in the 10 ms windows it was in flight (overlap-weighted), CLOCK_MONOTONIC on both sides".into(),
        cells: data.len(),
        pooled: correlate::correlate(&flights, &sig),
        baseline: if bflights.is_empty() { Vec::new() } else { correlate::correlate(&bflights, &bsig) },
    })
}
