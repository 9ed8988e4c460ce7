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
};

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
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
    pub model_name: String,
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
            model_name: "tailprobe-sim".into(),
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
        let (tx, mut rx) = watch::channel(false);
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("tp-serve-accept".into())
            .spawn(move || {
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    loop {
                        tokio::select! {
                            _ = rx.changed() => break,
                            acc = listener.accept() => {
                                let Ok((stream, _)) = acc else { continue };
                                let _ = stream.set_nodelay(true);
                                let st = st.clone();
                                let mut stop = rx.clone();
                                tokio::spawn(async move {
                                    let svc = service_fn(move |req| http::handle(st.clone(), req));
                                    let conn = hyper::server::conn::http1::Builder::new()
                                        .serve_connection(TokioIo::new(stream), svc);
                                    tokio::pin!(conn);
                                    tokio::select! {
                                        _ = conn.as_mut() => {}
                                        _ = stop.changed() => {}
                                    }
                                });
                            }
                        }
                    }
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

impl Drop for Server {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.shutdown_now();
        }
    }
}
