//! The load generator behind `tailprobe load`.
//!
//! - `spec`: what to ask (`RequestSpec`: API, model, body, lengths,
//!   streaming) and model discovery (`GET /v1/models`).
//! - `schedule`: the absolute, seeded arrival schedule of rate mode.
//! - `target`: URL, method, headers, body (file, `{{id}}` template, or the
//!   OpenAI-style default).
//! - `client`: one hyper HTTP/1.1 keep-alive connection and the timing of a
//!   request on it.
//! - `sse`: Server-Sent Events parsing and the token metrics (pure).
//! - `complete`: whether an answer is what was asked (pure); `account`:
//!   each outcome into the statistics and the record.
//! - CPU affinity, CPU time and absolute sleeps come from
//!   `tailprobe_system` (`affinity`, `clock`).
//! - `stats`: HdrHistogram statistics (pure); `report`: the result, as JSON
//!   and as text (pure).
//! - `records`: per-request JSON Lines; `progress`: the terminal line.
//!
//! Threads: N generator threads (`tp-load-N`), each a single-threaded tokio
//! runtime that owns its connections and its statistics (no locks on the
//! request path), merged at the end. In rate mode a dispatcher thread
//! (`tp-load-sched`) sleeps until each absolute intended time
//! (clock_nanosleep, TIMER_ABSTIME, CLOCK_MONOTONIC) and hands
//! `(id, intended)` to the generator threads in turn; a request that finds
//! every connection busy or the in-flight cap reached waits, and the wait
//! counts, because its latency is measured from its intended time.

mod account;
pub mod client;
pub mod complete;
pub mod h1;
pub mod progress;
#[cfg(test)]
mod props;
pub mod records;
pub mod report;
pub mod schedule;
pub mod spec;
pub mod sse;
pub mod stats;
pub mod target;

use std::{
    cell::RefCell,
    path::PathBuf,
    rc::Rc,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Barrier, Mutex,
    },
    time::Duration,
};

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

pub use self::spec::{discover_model, DiscoverError, Expect, ModelChoice, RequestSpec};
use self::{
    client::{Conn, ReqError, Timing},
    progress::Live,
    records::RecordWriter,
    report::LoadReport,
    schedule::{Arrival, Schedule},
    stats::Stats,
    target::Target,
};
pub use tailprobe_system::affinity::{allowed_cpus, pin_to};
pub use tailprobe_system::clock::cpu_times;
use tailprobe_system::clock::{monotonic_ns, sleep_until_ns};

/// Errors that stop a run before it starts.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("creating the records file {path}: {source}")]
    Records {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pinning the generator to CPUs {cpus}: {source}")]
    Pin {
        cpus: String,
        source: std::io::Error,
    },
    #[error("starting generator thread: {0}")]
    Thread(std::io::Error),
    #[error("a generator thread failed: {0}")]
    Runtime(String),
    #[error("nothing to stop the run: give a request count or a duration")]
    Unbounded,
}

/// Closed loop (fixed concurrency) or open loop (fixed arrival rate).
#[derive(Debug, Clone, PartialEq)]
pub enum Mode {
    /// `concurrency` connections, each sending its next request as soon as
    /// the previous one completes.
    Closed { concurrency: usize },
    /// Requests sent at intended times from a seeded schedule.
    Open {
        rate: f64,
        arrival: Arrival,
        seed: u64,
        /// Connections opened before the start (more open on demand).
        connections: usize,
        /// Most requests in flight; further ones wait (their wait counts).
        max_in_flight: usize,
    },
}

/// Service-level objectives for goodput; `None` means not checked.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Slo {
    pub ttft: Option<Duration>,
    pub tpot: Option<Duration>,
    pub e2e: Option<Duration>,
}

impl Slo {
    pub fn is_set(&self) -> bool {
        self.ttft.is_some() || self.tpot.is_some() || self.e2e.is_some()
    }
}

/// Error in an `--slo` value.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SloError {
    #[error("bad SLO part {0:?}: expected ttft=DUR, tpot=DUR or e2e=DUR, comma-separated")]
    Part(String),
    #[error("bad duration in SLO part {0:?} (examples: 500ms, 2s)")]
    Duration(String),
}

impl std::str::FromStr for Slo {
    type Err = SloError;
    fn from_str(s: &str) -> Result<Self, SloError> {
        let mut slo = Slo::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| SloError::Part(part.to_string()))?;
            let d = humantime::parse_duration(v.trim())
                .map_err(|_| SloError::Duration(part.to_string()))?;
            match k.trim() {
                "ttft" => slo.ttft = Some(d),
                "tpot" => slo.tpot = Some(d),
                "e2e" => slo.e2e = Some(d),
                _ => return Err(SloError::Part(part.to_string())),
            }
        }
        if !slo.is_set() {
            return Err(SloError::Part(s.to_string()));
        }
        Ok(slo)
    }
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// What is sent, bound to the URL (`request.target(url)`).
    pub target: Target,
    /// What was asked for: the API (token metrics and completeness checks
    /// for OpenAI endpoints), the model, lengths, streaming.
    pub request: RequestSpec,
    pub mode: Mode,
    /// Measured requests (warm-up not included).
    pub n_requests: Option<u64>,
    /// Run length (rate mode: schedule length; then in-flight requests end).
    pub duration: Option<Duration>,
    /// Requests sent first and excluded from the statistics.
    pub warmup: u64,
    pub timeout: Duration,
    pub slo: Slo,
    /// Generator threads.
    pub threads: usize,
    /// CPUs the generator runs on (already applied by the caller, or by
    /// `run` when set).
    pub cpus: Option<Vec<u32>>,
    pub requests_out: Option<PathBuf>,
    pub progress: bool,
    /// Polled to stop early (Ctrl-C); `None` never stops early.
    pub stop: Option<fn() -> bool>,
}

struct Shared {
    opts: LoadOptions,
    next_id: AtomicU64,
    /// Total ids to send (warm-up included), if bounded by count.
    total: Option<u64>,
    /// Closed loop: no new request starts after this.
    deadline_ns: AtomicU64,
    halt: AtomicBool,
    live: Arc<Live>,
    records: Option<RecordWriter>,
    record_errors: AtomicU64,
    tids: Mutex<Vec<u32>>,
    /// The plain fast path's pre-built request (`h1`), when it applies.
    fast: Option<h1::FastRequest>,
    /// What a complete answer holds.
    expect: Expect,
}

impl Shared {
    fn stopping(&self) -> bool {
        if self.halt.load(Ordering::Relaxed) {
            return true;
        }
        if self.opts.stop.is_some_and(|f| f()) {
            self.halt.store(true, Ordering::Relaxed);
            return true;
        }
        false
    }
}

enum Outcome {
    Done(Timing),
    Failed(ReqError),
    TimedOut,
}

/// Per generator thread: its stats and its idle connections.
struct Local {
    shared: Arc<Shared>,
    stats: RefCell<Stats>,
    pool: RefCell<Vec<Conn>>,
    tid: u32,
}

impl Local {
    /// Send request `id` on `conn` (opened if `None`), with the timeout.
    async fn one(&self, conn: &mut Option<Conn>, id: u64, intended: Option<u64>) {
        let opts = &self.shared.opts;
        let sent = monotonic_ns();
        let work = async {
            if conn.as_mut().is_none_or(|c| !c.usable()) {
                let fast = self.shared.fast.is_some();
                *conn = Some(client::connect(opts.target.addr, fast).await?);
            }
            match conn.as_mut() {
                Some(c) => {
                    let fast = self.shared.fast.as_ref();
                    client::exchange(c, &opts.target, fast, id, opts.request.api.is_openai()).await
                }
                None => Err(ReqError::Connect(std::io::Error::other("no connection"))),
            }
        };
        let outcome = match tokio::time::timeout(opts.timeout, work).await {
            Ok(Ok(t)) => Outcome::Done(t),
            Ok(Err(e)) => {
                *conn = None;
                Outcome::Failed(e)
            }
            Err(_) => {
                *conn = None;
                Outcome::TimedOut
            }
        };
        self.account(id, intended, sent, outcome);
    }

    async fn closed_worker(self: Rc<Self>) {
        let sh = self.shared.clone();
        let mut conn = self.pool.borrow_mut().pop();
        loop {
            if sh.stopping() {
                break;
            }
            let id = sh.next_id.fetch_add(1, Ordering::Relaxed);
            if sh.total.is_some_and(|t| id >= t) {
                break;
            }
            if monotonic_ns() >= sh.deadline_ns.load(Ordering::Relaxed) {
                break;
            }
            self.one(&mut conn, id, None).await;
        }
    }

    async fn open_request(self: Rc<Self>, _permit: OwnedSemaphorePermit, id: u64, intended: u64) {
        let mut conn = self.pool.borrow_mut().pop();
        self.one(&mut conn, id, Some(intended)).await;
        if let Some(mut c) = conn {
            if c.usable() {
                self.pool.borrow_mut().push(c);
            }
        }
    }
}

/// Generator thread body: returns its statistics.
fn generator_thread(
    shared: Arc<Shared>,
    index: usize,
    threads: usize,
    start: Arc<Barrier>,
    rx: Option<mpsc::UnboundedReceiver<(u64, u64)>>,
) -> Result<Stats, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("building the runtime: {e}"))?;
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    if let Ok(mut t) = shared.tids.lock() {
        t.push(tid);
    }
    let local = Rc::new(Local {
        shared: shared.clone(),
        stats: RefCell::new(Stats::default()),
        pool: RefCell::new(Vec::new()),
        tid,
    });
    let set = tokio::task::LocalSet::new();
    let my_share = |n: usize| n / threads + usize::from(index < n % threads);
    let conns = match &shared.opts.mode {
        Mode::Closed { concurrency } => my_share(*concurrency),
        Mode::Open { connections, .. } => my_share(*connections),
    };
    // Open the connections before the start, so the first requests do not
    // pay for them (failures are retried, and counted, per request).
    set.block_on(&rt, async {
        for _ in 0..conns {
            match tokio::time::timeout(
                shared.opts.timeout,
                client::connect(shared.opts.target.addr, shared.fast.is_some()),
            )
            .await
            {
                Ok(Ok(c)) => local.pool.borrow_mut().push(c),
                _ => break,
            }
        }
    });
    start.wait();
    match (&shared.opts.mode, rx) {
        (Mode::Closed { .. }, _) => {
            let workers = conns;
            set.block_on(&rt, async {
                let mut hs = Vec::new();
                for _ in 0..workers {
                    hs.push(tokio::task::spawn_local(local.clone().closed_worker()));
                }
                for h in hs {
                    let _ = h.await;
                }
            });
        }
        (Mode::Open { max_in_flight, .. }, Some(mut rx)) => {
            let cap = my_share(*max_in_flight).max(1);
            let sem = Arc::new(Semaphore::new(cap));
            set.block_on(&rt, async {
                while let Some((id, intended)) = rx.recv().await {
                    // At the cap, wait here: later requests queue behind
                    // this one, and their wait counts from their intended
                    // times.
                    let Ok(permit) = sem.clone().acquire_owned().await else {
                        break;
                    };
                    tokio::task::spawn_local(local.clone().open_request(permit, id, intended));
                }
                // Every permit back: every request has finished.
                let _ = sem.acquire_many(cap as u32).await;
            });
        }
        (Mode::Open { .. }, None) => return Err("no dispatcher queue".into()),
    }
    // Every request has ended (the loops above wait for them); dropping the
    // idle connections closes them (each owns its driver; no task is left).
    local.pool.borrow_mut().clear();
    drop(set);
    let stats = local.stats.borrow().clone();
    Ok(stats)
}

/// The dispatcher: walk the schedule, sleep until each intended time, and
/// hand the request to the generator threads in turn.
fn dispatch(
    shared: &Shared,
    rate: f64,
    arrival: Arrival,
    seed: u64,
    txs: Vec<mpsc::UnboundedSender<(u64, u64)>>,
) {
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer
    // slack; 1 ns asks for the most precise wake-ups.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
    let t0 = monotonic_ns() + 2_000_000;
    let end = shared
        .opts
        .duration
        .map(|d| t0.saturating_add(d.as_nanos() as u64));
    for (id, offset) in Schedule::new(rate, arrival, seed) {
        if shared.total.is_some_and(|t| id >= t) {
            break;
        }
        let intended = t0 + offset;
        if end.is_some_and(|e| intended >= e) {
            break;
        }
        if monotonic_ns() < intended {
            sleep_until_ns(intended);
        }
        if shared.stopping() {
            break;
        }
        let tx = &txs[(id % txs.len() as u64) as usize];
        if tx.send((id, intended)).is_err() {
            break;
        }
    }
}

/// The fast path's request: plain (non-OpenAI) targets whose request it can
/// send, unless `TAILPROBE_LOAD_CLIENT=hyper` asks for hyper everywhere
/// (to compare the two).
fn fast_request(opts: &LoadOptions) -> Option<h1::FastRequest> {
    if opts.request.api.is_openai()
        || std::env::var_os("TAILPROBE_LOAD_CLIENT").is_some_and(|v| v == "hyper")
    {
        return None;
    }
    h1::FastRequest::new(&opts.target)
}

/// Check the options, pin this thread (the generators inherit it), open
/// the records file: the state the generator threads share.
fn prepare(opts: &LoadOptions) -> Result<Arc<Shared>, LoadError> {
    if opts.n_requests.is_none() && opts.duration.is_none() {
        return Err(LoadError::Unbounded);
    }
    if let Some(cpus) = &opts.cpus {
        pin_to(cpus).map_err(|source| LoadError::Pin {
            cpus: tailprobe_system::cpulist::Display(cpus).to_string(),
            source,
        })?;
    }
    let records = match &opts.requests_out {
        Some(p) => Some(
            RecordWriter::create(p).map_err(|source| LoadError::Records {
                path: p.clone(),
                source,
            })?,
        ),
        None => None,
    };
    let live = Arc::new(Live::new(opts.progress));
    Ok(Arc::new(Shared {
        opts: opts.clone(),
        next_id: AtomicU64::new(0),
        total: opts.n_requests.map(|n| n + opts.warmup),
        deadline_ns: AtomicU64::new(u64::MAX),
        halt: AtomicBool::new(false),
        live: live.clone(),
        records,
        record_errors: AtomicU64::new(0),
        tids: Mutex::new(Vec::new()),
        fast: fast_request(opts),
        expect: opts.request.expectation(),
    }))
}

/// Run the load and return the report.
pub fn run(opts: &LoadOptions) -> Result<LoadReport, LoadError> {
    let shared = prepare(opts)?;
    let live = shared.live.clone();
    let units = match &opts.mode {
        Mode::Closed { concurrency } => *concurrency,
        Mode::Open { max_in_flight, .. } => *max_in_flight,
    };
    let threads = opts.threads.clamp(1, units.max(1));
    let barrier = Arc::new(Barrier::new(threads + 1));
    let mut txs = Vec::new();
    let mut handles = Vec::new();
    for i in 0..threads {
        let rx = if matches!(opts.mode, Mode::Open { .. }) {
            let (tx, rx) = mpsc::unbounded_channel();
            txs.push(tx);
            Some(rx)
        } else {
            None
        };
        let (sh, b) = (shared.clone(), barrier.clone());
        let h = std::thread::Builder::new()
            .name(format!("tp-load-{i}"))
            .spawn(move || generator_thread(sh, i, threads, b, rx))
            .map_err(LoadError::Thread)?;
        handles.push(h);
    }
    let cpu0 = cpu_times();
    barrier.wait();
    let _progress = opts
        .progress
        .then(|| progress::Progress::start(live.clone()));
    let started_ns = monotonic_ns();
    if let Some(d) = opts.duration {
        shared
            .deadline_ns
            .store(started_ns + d.as_nanos() as u64, Ordering::Relaxed);
    }
    let mut dispatcher_tid = None;
    if let Mode::Open {
        rate,
        arrival,
        seed,
        ..
    } = opts.mode
    {
        let sh = shared.clone();
        let h = std::thread::Builder::new()
            .name("tp-load-sched".into())
            .spawn(move || {
                // SAFETY: gettid has no preconditions.
                let tid = unsafe { libc::gettid() } as u32;
                dispatch(&sh, rate, arrival, seed, txs);
                tid
            })
            .map_err(LoadError::Thread)?;
        dispatcher_tid = h.join().ok();
    }
    let mut stats = Stats::default();
    let mut failure = None;
    for h in handles {
        match h.join() {
            Ok(Ok(s)) => stats.merge(&s),
            Ok(Err(e)) => failure = Some(e),
            Err(_) => failure = Some("a generator thread panicked".into()),
        }
    }
    let wall = (monotonic_ns() - started_ns) as f64 / 1e9;
    let cpu1 = cpu_times();
    drop(_progress);
    if let Some(e) = failure {
        return Err(LoadError::Runtime(e));
    }
    if let Some(w) = &shared.records {
        if w.flush().is_err() {
            shared.record_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    let gen = generator_info(opts, &shared, threads, dispatcher_tid, (cpu0, cpu1), wall);
    Ok(report::build(
        opts,
        &stats,
        gen,
        shared.halt.load(Ordering::Relaxed),
    ))
}

/// The generator's own side of the report: its threads and CPU time.
fn generator_info(
    opts: &LoadOptions,
    shared: &Shared,
    threads: usize,
    dispatcher_tid: Option<u32>,
    (cpu0, cpu1): ((f64, f64), (f64, f64)),
    wall: f64,
) -> report::Generator {
    let mut tids = shared.tids.lock().map(|t| t.clone()).unwrap_or_default();
    tids.sort_unstable();
    report::Generator {
        threads,
        tids,
        dispatcher_tid,
        cpus: opts
            .cpus
            .as_ref()
            .map(|c| tailprobe_system::cpulist::Display(c).to_string()),
        allowed_cpus: allowed_cpus(),
        cpu_user_s: cpu1.0 - cpu0.0,
        cpu_sys_s: cpu1.1 - cpu0.1,
        wall_s: wall,
        record_write_errors: shared.record_errors.load(Ordering::Relaxed),
        warnings: Vec::new(),
    }
}
