//! The load generator behind `tailprobe load`.
//!
//! - `schedule`: the absolute, seeded arrival schedule of rate mode.
//! - `target`: URL, method, headers, body (file, `{{id}}` template, or the
//!   OpenAI-style default).
//! - `client`: one hyper HTTP/1.1 keep-alive connection and the timing of a
//!   request on it.
//! - `sse`: Server-Sent Events parsing and the token metrics (pure).
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
    borrow::Cow,
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
    complete::Verdict,
    progress::Live,
    records::{RecordWriter, RequestRecord},
    report::LoadReport,
    schedule::{Arrival, Schedule},
    stats::Stats,
    target::Target,
};
use crate::record::monotonic_ns;

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

    fn account(&self, id: u64, intended: Option<u64>, sent: u64, outcome: Outcome) {
        let opts = &self.shared.opts;
        let warm = id < opts.warmup;
        let start = intended.unwrap_or(sent);
        let timeout_ns = opts.timeout.as_nanos() as u64;
        let mut rec = RequestRecord {
            id,
            warmup: warm,
            intended_ns: intended,
            sent_ns: sent,
            first_byte_ns: None,
            first_token_ns: None,
            end_ns: 0,
            status: 0,
            outcome: Cow::Borrowed(""),
            incomplete: None,
            output_tokens: None,
            bytes: 0,
            tid: self.tid,
        };
        let mut st = self.stats.borrow_mut();
        let st = &mut *st;
        if warm {
            st.warmup += 1;
        } else if intended.is_some() {
            st.lag.record(sent.saturating_sub(start));
        }
        let headline = |e2e: u64, end: u64| {
            if intended.is_some() {
                end.saturating_sub(start)
            } else {
                e2e
            }
        };
        match outcome {
            Outcome::TimedOut => {
                rec.end_ns = sent + timeout_ns;
                rec.outcome = Cow::Borrowed("timeout");
                if !warm {
                    st.timeouts += 1;
                    st.e2e.record(timeout_ns);
                    if intended.is_some() {
                        st.e2e_sched.record(rec.end_ns.saturating_sub(start));
                    }
                    st.window(start, rec.end_ns);
                    self.shared
                        .live
                        .record(false, true, headline(timeout_ns, rec.end_ns));
                }
            }
            Outcome::Failed(e) => {
                rec.end_ns = monotonic_ns();
                rec.outcome = Cow::Borrowed(e.kind());
                if !warm {
                    st.error(e.kind());
                    st.window(start, rec.end_ns);
                    self.shared.live.record(false, false, 0);
                }
            }
            Outcome::Done(t) => self.account_answer(t, warm, intended, sent, &mut rec, st),
        }
        if let Some(w) = &self.shared.records {
            if w.write(&rec).is_err() {
                self.shared.record_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Account an answer that arrived: ok, incomplete, or an error.
    fn account_answer(
        &self,
        t: Timing,
        warm: bool,
        intended: Option<u64>,
        sent: u64,
        rec: &mut RequestRecord,
        st: &mut Stats,
    ) {
        let opts = &self.shared.opts;
        let start = intended.unwrap_or(sent);
        let headline = |e2e: u64, end: u64| {
            if intended.is_some() {
                end.saturating_sub(start)
            } else {
                e2e
            }
        };
        rec.end_ns = t.end_ns;
        rec.status = t.status;
        rec.first_byte_ns = Some(t.first_byte_ns);
        rec.bytes = t.bytes;
        let stream = t.stream.as_ref();
        let first_token = match stream {
            Some(s) => s.first_token_ns,
            None => t.first_body_ns,
        };
        rec.first_token_ns = first_token;
        let verdict = self.judge(&t);
        let out_tokens = match (&verdict, stream) {
            (Ok(Verdict::Complete { tokens, .. }), _) => *tokens,
            (_, Some(s)) => Some(s.output_tokens()),
            _ => None,
        };
        rec.output_tokens = out_tokens;
        let failed = |st: &mut Stats, live: &Live| {
            st.window(start, t.end_ns);
            live.record(false, false, 0);
        };
        match verdict {
            Err(kind) => {
                rec.outcome = kind.clone();
                if !warm {
                    if st.error_sample.is_none() && !(200..300).contains(&t.status) {
                        st.error_sample = Some(format!(
                            "HTTP {}: {}",
                            t.status,
                            spec::quote_answer(&t.body)
                        ));
                    }
                    st.error(&kind);
                    failed(st, &self.shared.live);
                }
            }
            Ok(Verdict::Incomplete(why)) => {
                rec.outcome = Cow::Borrowed("incomplete");
                rec.incomplete = Some(why);
                if !warm {
                    st.incomplete(why);
                    failed(st, &self.shared.live);
                }
            }
            Ok(Verdict::Complete { stopped_early, .. }) => {
                rec.outcome = Cow::Borrowed("ok");
                if warm {
                    return;
                }
                let e2e = t.end_ns.saturating_sub(sent);
                st.ok += 1;
                st.stopped_early += u64::from(stopped_early);
                st.bytes = st.bytes.saturating_add(t.bytes);
                st.window(start, t.end_ns);
                st.e2e.record(e2e);
                if intended.is_some() {
                    st.e2e_sched.record(t.end_ns.saturating_sub(start));
                }
                let mut ttft_head = None;
                let mut tpot = None;
                if opts.request.api.is_openai() || stream.is_some() {
                    if let Some(ft) = first_token {
                        st.ttft.record(ft.saturating_sub(sent));
                        if intended.is_some() {
                            st.ttft_sched.record(ft.saturating_sub(start));
                        }
                        ttft_head = Some(headline(ft.saturating_sub(sent), ft));
                    }
                    if let Some(s) = stream {
                        tpot = s.tpot_ns();
                        if let Some(v) = tpot {
                            st.tpot.record(v);
                        }
                        if !s.done {
                            st.streams_without_done += 1;
                        }
                    }
                    for g in &t.itl {
                        st.itl.record(*g);
                    }
                    if let Some(n) = out_tokens {
                        st.output_tokens = st.output_tokens.saturating_add(n);
                        st.tokens.record(n);
                    }
                }
                let head = headline(e2e, t.end_ns);
                if opts.slo.is_set() && meets_slo(&opts.slo, ttft_head, tpot, head) {
                    st.good += 1;
                }
                self.shared.live.record(true, false, head);
            }
        }
    }

    /// The verdict on an answer: an error kind, or complete/incomplete.
    fn judge(&self, t: &Timing) -> Result<Verdict, Cow<'static, str>> {
        if !(200..300).contains(&t.status) {
            return Err(Cow::Owned(format!("http_{}", t.status)));
        }
        let expect = &self.shared.expect;
        match &t.stream {
            Some(s) if s.error.is_some() => Err(Cow::Borrowed("stream_error")),
            Some(s) => Ok(complete::judge_stream(s, expect)),
            None if self.shared.opts.request.api.is_openai() => {
                Ok(complete::judge_body(&t.body, expect))
            }
            None => Ok(Verdict::Complete {
                tokens: None,
                stopped_early: false,
            }),
        }
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

/// Whether one successful request met every objective (a one-token answer
/// has no TPOT: it cannot miss it).
fn meets_slo(slo: &Slo, ttft: Option<u64>, tpot: Option<u64>, e2e: u64) -> bool {
    let within = |limit: Option<Duration>, v: Option<u64>| match limit {
        None => true,
        Some(l) => v.is_some_and(|v| v <= l.as_nanos() as u64),
    };
    let tpot_ok = slo.tpot.is_none() || tpot.is_none() || within(slo.tpot, tpot);
    within(slo.ttft, ttft) && tpot_ok && within(slo.e2e, Some(e2e))
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

/// Sleep until CLOCK_MONOTONIC reaches `deadline_ns` (absolute).
fn sleep_until_ns(deadline_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
    };
    loop {
        // SAFETY: a valid timespec; a null remainder is allowed with
        // TIMER_ABSTIME.
        let rc = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
        if rc != libc::EINTR {
            return;
        }
    }
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

/// CPU time this process used so far: (user, system) seconds.
pub fn cpu_times() -> (f64, f64) {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (s(ru.ru_utime), s(ru.ru_stime))
}

/// Pin the calling thread (and the threads it starts later) to `cpus`.
pub fn pin_to(cpus: &[u32]) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET indexes within its bounds
    // because the CPU numbers are checked against its size first.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let max = (std::mem::size_of::<libc::cpu_set_t>() * 8) as u32;
        for &c in cpus {
            if c >= max {
                return Err(std::io::Error::other(format!("CPU {c} is out of range")));
            }
            libc::CPU_SET(c as usize, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// CPUs this thread may run on.
pub fn allowed_cpus() -> usize {
    // SAFETY: sched_getaffinity fills the zeroed set we pass.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            let n = libc::CPU_COUNT(&set);
            if n > 0 {
                return n as usize;
            }
        }
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
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

/// Run the load and return the report.
pub fn run(opts: &LoadOptions) -> Result<LoadReport, LoadError> {
    if opts.n_requests.is_none() && opts.duration.is_none() {
        return Err(LoadError::Unbounded);
    }
    if let Some(cpus) = &opts.cpus {
        pin_to(cpus).map_err(|source| LoadError::Pin {
            cpus: crate::cpulist::Display(cpus).to_string(),
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
    let shared = Arc::new(Shared {
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
        expect: opts.request.expect(),
    });
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
    let mut tids = shared.tids.lock().map(|t| t.clone()).unwrap_or_default();
    tids.sort_unstable();
    let gen = report::Generator {
        threads,
        tids,
        dispatcher_tid,
        cpus: opts
            .cpus
            .as_ref()
            .map(|c| crate::cpulist::Display(c).to_string()),
        allowed_cpus: allowed_cpus(),
        cpu_user_s: cpu1.0 - cpu0.0,
        cpu_sys_s: cpu1.1 - cpu0.1,
        wall_s: wall,
        record_write_errors: shared.record_errors.load(Ordering::Relaxed),
        warnings: Vec::new(),
    };
    Ok(report::build(
        opts,
        &stats,
        gen,
        shared.halt.load(Ordering::Relaxed),
    ))
}
