//! `tailprobe serve`: the built-in OpenAI-compatible inference server.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use clap::Args;

use crate::{
    serve::{ServeOptions, Server},
    signals,
};

/// Run the built-in OpenAI-compatible inference server.
///
/// Serves POST /v1/completions and /v1/chat/completions (streamed with
/// "stream": true, or not), GET /health, /metrics (Prometheus text),
/// /v1/models and /debug/requests (which worker thread, by tid, served each
/// request, and when, in CLOCK_MONOTONIC ns). The "model" does real CPU
/// work: a prefill pass per prompt word and a decode pass per output token,
/// each --layers dense --hidden x --hidden matrix-vector products, in
/// --workers named threads (tp-serve-wN) behind a bounded queue.
///
/// Limits shed abuse: --header-timeout, --body-timeout, --max-body,
/// --max-prompt-tokens, --max-tokens-limit, --queue; accept backs off when
/// out of file descriptors; a client that leaves stops its work
/// (docs/load.md).
///
/// Stops at --duration or on Ctrl-C.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to bind (loopback by default; anything else exposes it).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on (0 picks a free one; the address is printed).
    #[arg(long, short, default_value_t = 8000)]
    pub port: u16,
    /// Model worker threads [default: the online CPUs].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,
    /// Threads that parse HTTP (tokio workers).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub http_threads: u16,
    /// Model width: each layer is a hidden x hidden matrix.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u32).range(8..=8192))]
    pub hidden: u32,
    /// Model depth: matrix-vector products per token.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub layers: u32,
    /// Requests that may wait for a worker; beyond it, 503.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub queue: u32,
    /// Largest request body in bytes; larger ones get 413.
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(64..=(1 << 30)))]
    pub max_body: u64,
    /// Largest max_tokens accepted.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_tokens_limit: u32,
    /// Longest prompt in tokens (whitespace-separated words); longer ones
    /// get 400 stating the limit (prefill costs CPU per prompt token).
    #[arg(long, default_value_t = 8192, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub max_prompt_tokens: u32,
    /// A connection that has not sent a whole request head this long after
    /// connecting (or after its previous answer) is closed.
    #[arg(long, default_value = "10s", value_parser = parse_timeout)]
    pub header_timeout: Duration,
    /// A request body that has not arrived this long after its head gets
    /// 408.
    #[arg(long, default_value = "30s", value_parser = parse_timeout)]
    pub body_timeout: Duration,
    /// Model name reported when the request names none (any name is
    /// accepted unless --served-model-name is given).
    #[arg(long, default_value = "tailprobe-sim")]
    pub model_name: String,
    /// Serve only these model names, like vLLM's --served-model-name
    /// (repeatable): GET /v1/models lists them, and a request naming
    /// another model gets 404 with an OpenAI-style error.
    #[arg(long)]
    pub served_model_name: Vec<String>,
    /// Also write every served request (worker, tid, CLOCK_MONOTONIC times)
    /// to this file, JSON Lines.
    #[arg(long)]
    pub requests_out: Option<PathBuf>,
    /// Stop after this long [default: until Ctrl-C].
    #[arg(long, short, value_parser = super::parse_duration)]
    pub duration: Option<Duration>,
}

/// A timeout from 1 ms to 1 hour.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = super::parse_duration(s)?;
    if d < Duration::from_millis(1) || d > Duration::from_secs(3600) {
        return Err(format!("{s:?}: expected from 1ms to 1h"));
    }
    Ok(d)
}

impl ServeArgs {
    pub fn options(&self) -> ServeOptions {
        let d = ServeOptions::default();
        ServeOptions {
            addr: SocketAddr::new(self.host, self.port),
            workers: self.workers.map(usize::from).unwrap_or(d.workers),
            http_threads: usize::from(self.http_threads),
            hidden: self.hidden as usize,
            layers: self.layers as usize,
            queue: self.queue as usize,
            max_body: self.max_body as usize,
            max_tokens_limit: self.max_tokens_limit,
            max_prompt_tokens: self.max_prompt_tokens as usize,
            header_timeout: self.header_timeout,
            body_timeout: self.body_timeout,
            model_name: self.model_name.clone(),
            served_model_names: self.served_model_name.clone(),
            requests_out: self.requests_out.clone(),
            ..d
        }
    }
}

pub fn main(args: &ServeArgs) -> Result<i32> {
    signals::install().context("installing the Ctrl-C handler")?;
    let opts = args.options();
    let server = Server::start(opts.clone()).context("starting the server")?;
    let workers = server
        .state()
        .pool
        .workers
        .lock()
        .map(|w| {
            w.iter()
                .map(|w| w.tid.to_string())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    eprintln!(
        "tailprobe serve: listening on http://{} (pid {}, {} workers tids {workers}, hidden {}, layers {})",
        server.addr(),
        std::process::id(),
        opts.workers,
        opts.hidden,
        opts.layers
    );
    let start = Instant::now();
    while !signals::stop_requested() && args.duration.is_none_or(|d| start.elapsed() < d) {
        std::thread::sleep(Duration::from_millis(50));
    }
    server.stop();
    eprintln!("tailprobe serve: stopped");
    Ok(super::exit::OK)
}
