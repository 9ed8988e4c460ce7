//! `tailprobe serve`: the built-in OpenAI-compatible inference server, the
//! default target of every command, so everything works on any Linux box.
//!
//! - `model`: the deterministic CPU "model" (prefill + decode steps of dense
//!   matrix-vector products).
//! - `pool`: the named worker threads behind a bounded queue, and the
//!   journal of which thread served which request, when.
//! - `api`: OpenAI request validation and response/chunk shapes (pure).
//! - `http`: routing, limits, errors, the streamed body (hyper).
//! - `metrics`: Prometheus text.
//!
//! Threads: `tp-serve-http` (tokio, accepts and parses HTTP) and
//! `tp-serve-wN` (the model). `GET /debug/requests` lists the workers' tids
//! and, per request, the worker, its tid and CLOCK_MONOTONIC times (queued,
//! start, first token, end), so a profile can attribute a slow request to
//! what the kernel did to that thread.

pub mod api;
pub mod http;
pub mod metrics;
pub mod model;
pub mod pool;

use std::{
    net::{SocketAddr, TcpListener as StdListener},
    path::PathBuf,
    sync::{atomic::AtomicU64, Arc},
    thread::JoinHandle,
    time::Duration,
};

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::watch;

use self::{
    metrics::Metrics,
    model::Model,
    pool::{Journal, Pool},
};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("binding {addr}: {source} (is another server on that port? try --port 0)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("creating the requests file {path}: {source}")]
    Records {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("starting threads: {0}")]
    Threads(std::io::Error),
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub addr: SocketAddr,
    /// Model worker threads.
    pub workers: usize,
    /// HTTP threads (tokio workers).
    pub http_threads: usize,
    pub hidden: usize,
    pub layers: usize,
    /// Requests waiting for a worker before 503s.
    pub queue: usize,
    /// Largest accepted request body, bytes.
    pub max_body: usize,
    pub max_tokens_limit: u32,
    /// Longest prompt, in tokens (words); longer ones get 400.
    pub max_prompt_tokens: usize,
    /// Time a connection may take to send a request head (from connect, or
    /// from the end of the previous answer); then it is closed.
    pub header_timeout: Duration,
    /// Time a request body may take to arrive; then 408.
    pub body_timeout: Duration,
    /// Model name reported when the request names none (and listed when no
    /// served names are given).
    pub model_name: String,
    /// The names the server answers to, like vLLM's
    /// `--served-model-name`: when set, a request naming another model
    /// gets 404 with an OpenAI-style error (empty: any name is accepted).
    pub served_model_names: Vec<String>,
    /// Served-request records, JSON Lines.
    pub requests_out: Option<PathBuf>,
    /// Served-request records kept for `/debug/requests`.
    pub journal: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 8000)),
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            http_threads: 1,
            hidden: 512,
            layers: 4,
            queue: 1024,
            max_body: 1 << 20,
            max_tokens_limit: 4096,
            max_prompt_tokens: 8192,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            model_name: "tailprobe-sim".into(),
            served_model_names: Vec::new(),
            requests_out: None,
            journal: 10_000,
        }
    }
}

/// Shared by every handler.
pub struct State {
    pub opts: ServeOptions,
    pub pool: Arc<Pool>,
    pub metrics: Arc<Metrics>,
    pub next_id: AtomicU64,
}

/// A running server; `stop` (or drop) shuts it down.
pub struct Server {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Bind, start the workers and the HTTP threads, and return.
    pub fn start(opts: ServeOptions) -> Result<Server, ServeError> {
        let listener = StdListener::bind(opts.addr).map_err(|source| ServeError::Bind {
            addr: opts.addr,
            source,
        })?;
        let addr = listener.local_addr().map_err(ServeError::Threads)?;
        listener
            .set_nonblocking(true)
            .map_err(ServeError::Threads)?;
        let file = match &opts.requests_out {
            Some(p) => Some(
                std::fs::File::create(p).map_err(|source| ServeError::Records {
                    path: p.clone(),
                    source,
                })?,
            ),
            None => None,
        };
        let metrics = Arc::new(Metrics::default());
        let model = Arc::new(Model::new(opts.hidden, opts.layers));
        let journal = Arc::new(Journal::new(opts.journal.max(1), file));
        let pool = Pool::start(opts.workers, opts.queue, model, metrics.clone(), journal)
            .map_err(ServeError::Threads)?;
        let state = Arc::new(State {
            opts: opts.clone(),
            pool,
            metrics,
            next_id: AtomicU64::new(0),
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.http_threads.max(1))
            .thread_name("tp-serve-http")
            .enable_all()
            .build()
            .map_err(ServeError::Threads)?;
        let (tx, rx) = watch::channel(false);
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("tp-serve-accept".into())
            .spawn(move || {
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    accept_loop(listener, st, rx).await;
                });
                rt.shutdown_timeout(std::time::Duration::from_secs(1));
            })
            .map_err(ServeError::Threads)?;
        Ok(Server {
            addr,
            state,
            shutdown: tx,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Stop accepting, end the connections, and let the workers finish.
    pub fn stop(mut self) {
        self.shutdown_now();
    }

    fn shutdown_now(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.state.pool.shutdown();
    }
}

/// How long accept waits after running out of file descriptors (or
/// memory) before trying again: the pending connection stays in the
/// backlog, so trying at once would spin a CPU.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Whether an accept error means "out of resources" (back off), rather
/// than a connection that failed before we took it (try the next one).
fn resource_exhausted(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    st: Arc<State>,
    mut rx: watch::Receiver<bool>,
) {
    loop {
        let acc = tokio::select! {
            _ = rx.changed() => break,
            acc = listener.accept() => acc,
        };
        let stream = match acc {
            Ok((stream, _)) => stream,
            Err(e) if resource_exhausted(&e) => {
                st.metrics
                    .accept_backoffs
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::select! {
                    _ = rx.changed() => break,
                    _ = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                }
            }
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        let st = st.clone();
        let mut stop = rx.clone();
        tokio::spawn(async move {
            let header_timeout = st.opts.header_timeout;
            let svc = service_fn(move |req| http::handle(st.clone(), req));
            // The timer makes the header timeout work: a connection that
            // sends no (or a partial) request head is closed after it.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.changed() => {}
            }
        });
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shutdown_now();
        }
    }
}
