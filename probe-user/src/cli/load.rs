//! `tailprobe load`: the load generator.

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};

use crate::{
    load::{
        self,
        schedule::Arrival,
        target::{parse_header, Api},
        LoadOptions, Mode, ModelChoice, RequestSpec, Slo,
    },
    signals,
};

/// Which API the requests speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ApiMode {
    /// From the URL: .../chat/completions, .../completions, .../embeddings;
    /// anything else is plain.
    Auto,
    /// OpenAI /v1/completions (a URL without a path gets that path).
    Completions,
    /// OpenAI /v1/chat/completions.
    Chat,
    /// OpenAI /v1/embeddings.
    Embeddings,
    /// Plain HTTP: latency and status only.
    Plain,
}

/// Send HTTP load and report latency percentiles, throughput and, for
/// OpenAI-compatible servers, TTFT, TPOT, ITL and goodput.
///
/// Closed loop (default): --concurrency connections each send the next
/// request when the previous one ends. Rate mode (--rate): requests go out
/// at intended times from a seeded schedule, and the headline latency runs
/// from the intended time (coordinated-omission safe), with the uncorrected
/// latency and the schedule lag beside it.
///
/// OpenAI answers count as ok only when complete (content and a
/// finish_reason or usage consistent with max_tokens); cut or empty ones
/// are "incomplete", counted apart and kept out of the latency figures.
///
/// Stops after --n-requests, at --duration (10s when neither is given), or
/// on Ctrl-C. Timestamps in --requests-out are CLOCK_MONOTONIC ns, the clock
/// of kernel events. JSON schemas: docs/load.md.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Where to send requests (http:// only).
    #[arg(default_value = "http://127.0.0.1:8000/v1/completions")]
    pub url: String,
    /// Measured requests to send (warm-up not included).
    #[arg(long, short, value_parser = clap::value_parser!(u64).range(1..))]
    pub n_requests: Option<u64>,
    /// How long to send [default: 10s when --n-requests is not given].
    #[arg(long, short, value_parser = super::parse_duration)]
    pub duration: Option<Duration>,
    /// Closed loop: connections, each with one request in flight. Rate mode:
    /// connections opened before the start (more open on demand).
    #[arg(long, short, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,
    /// Open loop: requests per second, sent on an absolute schedule.
    #[arg(long, short, value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Gaps of the rate schedule: constant, poisson, or gamma:K (K < 1 is
    /// burstier than Poisson).
    #[arg(long, default_value = "constant", requires = "rate")]
    pub arrival: Arrival,
    /// Seed of the rate schedule (same seed, same schedule).
    #[arg(long, default_value_t = 1, requires = "rate")]
    pub seed: u64,
    /// Rate mode: most requests in flight; later ones wait, and the wait
    /// counts in their latency.
    #[arg(long, default_value_t = 10_000, requires = "rate", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_in_flight: u32,
    /// Requests sent first and left out of the statistics.
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    /// Per-request timeout; a timed-out request is recorded at this value
    /// and counted.
    #[arg(long, default_value = "30s", value_parser = super::parse_duration)]
    pub timeout: Duration,
    /// HTTP method [default: POST with a body, else GET].
    #[arg(long, short = 'X')]
    pub method: Option<String>,
    /// Extra header, "Name: value" (repeatable).
    #[arg(long = "header", short = 'H')]
    pub headers: Vec<String>,
    /// Request body from a file; "{{id}}" is replaced by the request number.
    #[arg(long, conflicts_with = "data")]
    pub body: Option<PathBuf>,
    /// Request body given inline; "{{id}}" is replaced by the request number.
    #[arg(long)]
    pub data: Option<String>,
    /// The API: token metrics and completeness checks for the OpenAI ones.
    #[arg(long, value_enum, default_value_t = ApiMode::Auto)]
    pub api: ApiMode,
    /// OpenAI API without --body: model name to ask for [default: the
    /// first id GET /v1/models lists].
    #[arg(long)]
    pub model: Option<String>,
    /// OpenAI mode without --body: prompt length in words.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub prompt_tokens: u32,
    /// OpenAI mode without --body: max_tokens of each request.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_tokens: u32,
    /// OpenAI API without --body: ask for a non-streamed answer.
    #[arg(long)]
    pub no_stream: bool,
    /// OpenAI API without --body: do not send "ignore_eos": true and
    /// "min_tokens" (vLLM's extensions that make every answer max_tokens
    /// long; a server that rejects unknown fields needs this).
    #[arg(long)]
    pub no_ignore_eos: bool,
    /// Goodput objectives, e.g. ttft=200ms,tpot=50ms,e2e=2s (in rate mode
    /// measured from the intended time).
    #[arg(long)]
    pub slo: Option<Slo>,
    /// Generator threads [default: the CPUs it may run on].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
    /// Pin the generator to these CPUs (e.g. 2-3), away from the server's.
    #[arg(long)]
    pub cpus: Option<String>,
    /// Write one JSON line per request (CLOCK_MONOTONIC ns timestamps).
    #[arg(long)]
    pub requests_out: Option<PathBuf>,
    /// Print the report as JSON on stdout (schema: docs/load.md).
    #[arg(long)]
    pub json: bool,
    /// No progress line, even on a terminal.
    #[arg(long)]
    pub no_progress: bool,
    /// Also write a Perfetto trace (protobuf) to FILE: every request as
    /// slices on its own track, the server's threads as the kernel ran them,
    /// flows from requests to the thread that served them (built-in server).
    /// Needs CAP_BPF and CAP_PERFMON; open it at ui.perfetto.dev (docs/timeline.md).
    #[arg(long, value_name = "FILE")]
    pub perfetto: Option<PathBuf>,
    /// With --perfetto: the process whose threads to record [default: the
    /// built-in server's, from its /debug/requests].
    #[arg(long, value_name = "PID", requires = "perfetto")]
    pub record_pid: Option<u32>,
    /// Cap on the trace's size in MB; events past it are left out, counted
    /// and named in a note (stderr and the trace).
    #[arg(long, default_value_t = crate::timeline::DEFAULT_MAX_MB, value_parser = clap::value_parser!(u64).range(1..=1_000_000), requires = "perfetto")]
    pub perfetto_max_mb: u64,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 10_000_000.0 => Ok(r),
        _ => Err("expected requests per second above 0 (at most 1e7)".into()),
    }
}

impl LoadArgs {
    /// The request: the API, model (still to discover when not given),
    /// body, headers, lengths, streaming.
    pub fn request(&self) -> Result<RequestSpec> {
        let api = match self.api {
            ApiMode::Auto => self
                .url
                .parse::<http::Uri>()
                .ok()
                .and_then(|u| Api::from_path(u.path()))
                .unwrap_or(Api::Plain),
            ApiMode::Completions => Api::Completions,
            ApiMode::Chat => Api::Chat,
            ApiMode::Embeddings => Api::Embeddings,
            ApiMode::Plain => Api::Plain,
        };
        let body = if let Some(p) = &self.body {
            Some(
                std::fs::read(p)
                    .with_context(|| format!("reading the body file {}", p.display()))?,
            )
        } else {
            self.data.as_ref().map(|d| d.clone().into_bytes())
        };
        let headers = self
            .headers
            .iter()
            .map(|h| parse_header(h))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RequestSpec {
            api,
            model: match &self.model {
                Some(m) => ModelChoice::Given(m.clone()),
                None => ModelChoice::Discover,
            },
            body,
            method: self.method.clone(),
            headers,
            prompt_tokens: self.prompt_tokens,
            max_tokens: self.max_tokens,
            stream: !self.no_stream,
            ignore_eos: !self.no_ignore_eos,
        })
    }

    /// The run's options for `request` (its model already resolved).
    pub fn options(&self, request: RequestSpec) -> Result<LoadOptions> {
        let target = request.target(&self.url)?;
        let cpus = match &self.cpus {
            Some(c) => Some(crate::cpulist::parse(c).with_context(|| format!("--cpus {c:?}"))?),
            None => None,
        };
        let threads = match (self.threads, &cpus) {
            (Some(t), _) => usize::from(t),
            (None, Some(c)) => c.len(),
            (None, None) => load::allowed_cpus(),
        };
        let mode = match self.rate {
            None => Mode::Closed {
                concurrency: self.concurrency as usize,
            },
            Some(rate) => Mode::Open {
                rate,
                arrival: self.arrival,
                seed: self.seed,
                connections: self.concurrency as usize,
                max_in_flight: self.max_in_flight as usize,
            },
        };
        let duration = match (self.n_requests, self.duration) {
            (None, None) => Some(Duration::from_secs(10)),
            (_, d) => d,
        };
        Ok(LoadOptions {
            target,
            request,
            mode,
            n_requests: self.n_requests,
            duration,
            warmup: self.warmup,
            timeout: self.timeout,
            slo: self.slo.unwrap_or_default(),
            threads,
            cpus,
            requests_out: self.requests_out.clone(),
            progress: !self.no_progress && !self.json && load::progress::wanted(),
            stop: Some(signals::stop_requested),
        })
    }
}

pub fn main(args: &LoadArgs) -> Result<i32> {
    signals::install().context("installing the Ctrl-C handler")?;
    let mut request = args.request()?;
    request
        .resolve(&args.url, args.timeout.min(Duration::from_secs(30)))
        .context("finding the model to ask for")?;
    if let ModelChoice::Discovered(m) = &request.model {
        eprintln!(
            "tailprobe load: model {m:?} (the first GET /v1/models lists; --model to choose)"
        );
    }
    let opts = args.options(request)?;
    let report = match &args.perfetto {
        None => load::run(&opts).with_context(|| format!("load on {}", args.url))?,
        Some(path) => {
            crate::privileges::require_bpf("tailprobe load --perfetto")?;
            let t = crate::timeline::TraceOptions::new(path, args.perfetto_max_mb);
            let (report, summary) =
                crate::timeline::session::load_with_trace(&opts, &args.url, args.record_pid, &t)?;
            eprintln!("tailprobe: {}", summary.line());
            report
        }
    };
    if args.json {
        crate::out::print_json(&report)?;
    } else {
        crate::out::print_str(&load::report::text(&report))?;
    }
    if report.ok == 0 {
        let kinds: Vec<String> = report
            .error_kinds
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        bail!(
            "no request succeeded ({} incomplete, {} timeouts; errors: {}){}; is the server at {} up, and is the request right for it?",
            report.incomplete,
            report.timeouts,
            if kinds.is_empty() {
                "none".into()
            } else {
                kinds.join(", ")
            },
            report
                .error_sample
                .as_ref()
                .map(|e| format!("; the server answered {e}"))
                .unwrap_or_default(),
            args.url
        );
    }
    Ok(super::exit::OK)
}
