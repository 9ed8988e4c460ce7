//! The result of a load run: a serialisable model (`--json`, schema in
//! docs/load.md) and its text rendering (`text`). No I/O.

use std::collections::BTreeMap;

use serde::Serialize;

use super::{
    spec::{Expect, ModelChoice},
    stats::Stats,
    stats::Summary,
    target::Api,
    LoadOptions, Mode,
};

mod text;
pub use text::text;

fn ignore_eos(opts: &LoadOptions) -> bool {
    let r = &opts.request;
    r.ignore_eos && r.body.is_none() && r.api.generates()
}

/// The generator watching itself.
#[derive(Debug, Clone, Serialize)]
pub struct Generator {
    pub threads: usize,
    /// Thread ids of the generator threads (`tp-load-N`).
    pub tids: Vec<u32>,
    /// Thread id of the rate-mode dispatcher (`tp-load-sched`).
    pub dispatcher_tid: Option<u32>,
    /// `--cpus`, when pinned.
    pub cpus: Option<String>,
    pub allowed_cpus: usize,
    pub cpu_user_s: f64,
    pub cpu_sys_s: f64,
    pub wall_s: f64,
    pub record_write_errors: u64,
    pub warnings: Vec<String>,
}

impl Generator {
    /// CPU used as a share of the CPUs the generator may use (0..=1).
    pub fn cpu_share(&self) -> f64 {
        let avail = self.allowed_cpus.min(self.threads + 1).max(1) as f64;
        (self.cpu_user_s + self.cpu_sys_s) / self.wall_s.max(1e-9) / avail
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// `closed` or `rate`.
    pub mode: &'static str,
    pub concurrency: Option<usize>,
    pub rate: Option<f64>,
    pub arrival: Option<String>,
    pub seed: Option<u64>,
    pub max_in_flight: Option<usize>,
    pub n_requests: Option<u64>,
    pub duration_s: Option<f64>,
    pub warmup: u64,
    pub timeout_s: f64,
    /// An OpenAI-compatible API (token metrics, completeness checks).
    pub openai: bool,
    pub api: Api,
    /// The model asked for, and where its name came from (`given`,
    /// `discovered` from GET /v1/models; null name for a template body).
    pub model: ModelChoice,
    /// What a complete answer holds (asked output tokens, streaming).
    pub expect: Expect,
    /// `ignore_eos`/`min_tokens` were sent.
    pub ignore_eos: bool,
    pub slo_ms: BTreeMap<&'static str, f64>,
}

/// Latency distributions, in ms. Absent when nothing was measured.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Latency {
    /// end - send (uncorrected in rate mode).
    pub e2e: Option<Summary>,
    /// end - intended (rate mode's headline).
    pub e2e_sched: Option<Summary>,
    /// send - intended.
    pub schedule_lag: Option<Summary>,
    pub ttft: Option<Summary>,
    pub ttft_sched: Option<Summary>,
    pub tpot: Option<Summary>,
    pub itl: Option<Summary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub version: u32,
    pub url: String,
    pub config: Config,
    /// Stopped early (Ctrl-C).
    pub interrupted: bool,
    pub ok: u64,
    pub timeouts: u64,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    /// 2xx answers that were not what was asked (streams that ended early
    /// or empty, bodies without the expected fields): not successes, not in
    /// the latency histograms.
    pub incomplete: u64,
    /// Incomplete answers by reason (`empty_stream`, `no_finish_reason`,
    /// `fewer_tokens_than_asked`, `more_tokens_than_asked`,
    /// `unparsable_body`, `no_content`).
    pub incomplete_kinds: BTreeMap<String, u64>,
    /// Complete answers the model ended itself (`finish_reason: "stop"`)
    /// before the asked tokens.
    pub stopped_early: u64,
    /// The first error answer the server gave, quoted.
    pub error_sample: Option<String>,
    pub warmup_excluded: u64,
    pub streams_without_done: u64,
    /// last end - first intended (closed loop: first send), seconds.
    pub window_s: f64,
    /// Successful requests per second over the window.
    pub throughput_rps: f64,
    /// Requests per second that met every SLO; null without `--slo`.
    pub goodput_rps: Option<f64>,
    pub good: Option<u64>,
    pub output_tokens: u64,
    pub output_tokens_per_s: f64,
    /// Output tokens per request (counts, not ms).
    pub output_tokens_per_request: Option<Summary>,
    /// Which latency is the headline: `e2e` or `e2e_sched`.
    pub headline: &'static str,
    pub latency_ms: Latency,
    /// About the server's answers (incomplete answers and their likely
    /// cause; ignored `ignore_eos`).
    pub warnings: Vec<String>,
    pub generator: Generator,
}

/// Share of incomplete answers above which `load` warns and an experiment
/// refuses a configuration: 1%.
pub const INCOMPLETE_THRESHOLD: f64 = 0.01;

impl LoadReport {
    /// Measured requests that got an answer or failed (warm-up excluded).
    pub fn attempted(&self) -> u64 {
        self.ok
            .saturating_add(self.incomplete)
            .saturating_add(self.errors)
            .saturating_add(self.timeouts)
    }

    /// Incomplete answers as a share of the measured requests (0 when
    /// none were sent).
    pub fn incomplete_share(&self) -> f64 {
        match self.attempted() {
            0 => 0.0,
            n => self.incomplete as f64 / n as f64,
        }
    }

    /// Whether incomplete answers are above `threshold` (a share, e.g.
    /// `INCOMPLETE_THRESHOLD`).
    pub fn too_incomplete(&self, threshold: f64) -> bool {
        self.incomplete > 0 && self.incomplete_share() > threshold
    }
}

/// The likely cause of incomplete answers, from their main reason and the
/// concurrency.
pub fn incomplete_cause(kinds: &BTreeMap<String, u64>, concurrent: bool) -> &'static str {
    let main = kinds
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(k, _)| k.as_str())
        .unwrap_or("");
    use super::complete::*;
    match main {
        k if (k == EMPTY_STREAM || k == NO_FINISH) && concurrent => {
            "the server ends running streams early under concurrency (some serve one \
             stream at a time and cut the running one when a new request arrives); \
             try --concurrency 1"
        }
        k if k == EMPTY_STREAM || k == NO_FINISH => {
            "the server ends streams early even one at a time; check its logs and limits"
        }
        k if k == FEWER_TOKENS => {
            "the server stops before max_tokens (a context-length limit?); \
             lower --max-tokens or --prompt-tokens"
        }
        k if k == MORE_TOKENS => "the server reports more output tokens than were asked",
        _ => "the answers are not the expected JSON: is --api right for this endpoint?",
    }
}

fn answer_warnings(opts: &LoadOptions, s: &Stats) -> Vec<String> {
    let mut w = Vec::new();
    let incomplete = s.incomplete_total();
    let attempted =
        s.ok.saturating_add(incomplete)
            .saturating_add(s.errors_total())
            .saturating_add(s.timeouts);
    if incomplete > 0 && incomplete as f64 > INCOMPLETE_THRESHOLD * attempted as f64 {
        let concurrent = match opts.mode {
            Mode::Closed { concurrency } => concurrency > 1,
            Mode::Open { .. } => true,
        };
        w.push(format!(
            "{incomplete} of {attempted} answers ({:.1}%) were incomplete (above {:.0}%): {}",
            100.0 * incomplete as f64 / attempted.max(1) as f64,
            INCOMPLETE_THRESHOLD * 100.0,
            incomplete_cause(&s.incomplete, concurrent)
        ));
    }
    let rejects_extensions = s.error_sample.as_deref().is_some_and(|e| {
        e.starts_with("HTTP 4") && (e.contains("ignore_eos") || e.contains("min_tokens"))
    });
    if rejects_extensions && ignore_eos(opts) {
        w.push(
            "the server rejects ignore_eos/min_tokens (see the first error answer): \
             try --no-ignore-eos"
                .into(),
        );
    }
    if s.stopped_early > 0 {
        w.push(format!(
            "{} answers ended at the model's end of sequence before max_tokens: {}",
            s.stopped_early,
            if ignore_eos(opts) {
                "the server does not honour ignore_eos/min_tokens"
            } else {
                "ignore_eos/min_tokens were not sent"
            }
        ));
    }
    w
}

/// What the run was asked to do, as the report states it.
fn config(opts: &LoadOptions) -> Config {
    let mut slo_ms = BTreeMap::new();
    for (k, v) in [
        ("ttft", opts.slo.ttft),
        ("tpot", opts.slo.tpot),
        ("e2e", opts.slo.e2e),
    ] {
        if let Some(v) = v {
            slo_ms.insert(k, v.as_secs_f64() * 1e3);
        }
    }
    let mut c = Config {
        mode: "closed",
        concurrency: None,
        rate: None,
        arrival: None,
        seed: None,
        max_in_flight: None,
        n_requests: opts.n_requests,
        duration_s: opts.duration.map(|d| d.as_secs_f64()),
        warmup: opts.warmup,
        timeout_s: opts.timeout.as_secs_f64(),
        openai: opts.request.api.is_openai(),
        api: opts.request.api,
        model: opts.request.model.clone(),
        expect: opts.request.expectation(),
        ignore_eos: ignore_eos(opts),
        slo_ms,
    };
    match &opts.mode {
        Mode::Closed { concurrency } => c.concurrency = Some(*concurrency),
        Mode::Open {
            rate,
            arrival,
            seed,
            connections,
            max_in_flight,
        } => {
            c.mode = "rate";
            c.concurrency = Some(*connections);
            c.rate = Some(*rate);
            c.arrival = Some(arrival.to_string());
            c.seed = Some(*seed);
            c.max_in_flight = Some(*max_in_flight);
        }
    }
    c
}

/// Warnings about the generator itself: it may be the bottleneck (CPU,
/// schedule lag), or records were lost.
fn generator_warnings(opts: &LoadOptions, gen: &mut Generator, lag: &Option<Summary>) {
    let share = gen.cpu_share();
    if share > 0.8 {
        gen.warnings.push(format!(
            "the generator used {:.0}% of its {} CPU(s): it may be the bottleneck; \
             give it more CPUs (--cpus, --threads) or lower the load",
            share * 100.0,
            gen.allowed_cpus.min(gen.threads + 1)
        ));
    }
    if let (Mode::Open { rate, .. }, Some(l)) = (&opts.mode, lag) {
        let gap_ms = 1e3 / rate;
        if l.p99.value > gap_ms.max(1.0) {
            gen.warnings.push(format!(
                "schedule lag p99 is {:.3} ms (mean gap {:.3} ms): requests left late, \
                 so the generator or the in-flight cap limited the offered load",
                l.p99.value, gap_ms
            ));
        }
    }
    if gen.record_write_errors > 0 {
        gen.warnings.push(format!(
            "{} per-request records could not be written",
            gen.record_write_errors
        ));
    }
}

pub fn build(opts: &LoadOptions, s: &Stats, mut gen: Generator, interrupted: bool) -> LoadReport {
    let rate_mode = matches!(opts.mode, Mode::Open { .. });
    let window_s = match (s.first_start_ns, s.last_end_ns) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
        _ => 0.0,
    };
    let per_s = |n: u64| {
        if window_s > 0.0 {
            n as f64 / window_s
        } else {
            0.0
        }
    };
    let ms = |h: &super::stats::Hist| h.summary(1e6);
    let config = config(opts);
    let lag = ms(&s.lag);
    generator_warnings(opts, &mut gen, &lag);
    let slo_set = opts.slo.is_set();
    LoadReport {
        version: 1,
        url: opts.target.url.clone(),
        config,
        interrupted,
        ok: s.ok,
        timeouts: s.timeouts,
        errors: s.errors_total(),
        error_kinds: s.errors.clone(),
        incomplete: s.incomplete_total(),
        incomplete_kinds: s.incomplete.clone(),
        stopped_early: s.stopped_early,
        error_sample: s.error_sample.clone(),
        warmup_excluded: s.warmup,
        streams_without_done: s.streams_without_done,
        window_s,
        throughput_rps: per_s(s.ok),
        goodput_rps: slo_set.then(|| per_s(s.good)),
        good: slo_set.then_some(s.good),
        output_tokens: s.output_tokens,
        output_tokens_per_s: per_s(s.output_tokens),
        output_tokens_per_request: s.tokens.summary(1.0),
        headline: if rate_mode { "e2e_sched" } else { "e2e" },
        latency_ms: Latency {
            e2e: ms(&s.e2e),
            e2e_sched: ms(&s.e2e_sched),
            schedule_lag: lag,
            ttft: ms(&s.ttft),
            ttft_sched: ms(&s.ttft_sched),
            tpot: ms(&s.tpot),
            itl: ms(&s.itl),
        },
        warnings: answer_warnings(opts, s),
        generator: gen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_main_reason_and_the_concurrency_name_the_cause() {
        let kinds = |k: &[(&str, u64)]| {
            k.iter()
                .map(|(a, b)| (a.to_string(), *b))
                .collect::<BTreeMap<_, _>>()
        };
        let cut = kinds(&[("empty_stream", 9), ("no_finish_reason", 2)]);
        assert!(incomplete_cause(&cut, true).contains("try --concurrency 1"));
        assert!(!incomplete_cause(&cut, false).contains("--concurrency 1"));
        let short = kinds(&[("fewer_tokens_than_asked", 3), ("empty_stream", 1)]);
        assert!(incomplete_cause(&short, true).contains("--max-tokens"));
        let bad = kinds(&[("unparsable_body", 1)]);
        assert!(incomplete_cause(&bad, true).contains("--api"));
    }
}
