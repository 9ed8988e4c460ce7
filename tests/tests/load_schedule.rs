//! Schedule accuracy: in rate mode every request carries its intended send
//! time from the seeded schedule, and goes out close to it.
//!
//! Tolerances (a loaded 2-CPU machine, debug build): intended times match
//! the schedule to 1 ns; the median lag (sent - intended) is under 1 ms and
//! its p99 under 10 ms plus the longest stall the machine itself showed
//! meanwhile (a thread sleeping 1 ms at a time, measured alongside: a 38 ms
//! stall of this VM failed the p99 once, 2026-12-03, while the generator
//! kept its schedule); the run sends exactly the scheduled requests.

mod load_support;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use load_support::{jsonl, ok, temp_path, TestServer};
use tailprobe::load::{
    self,
    schedule::{Arrival, Schedule},
    target::Target,
    LoadOptions, Mode, Slo,
};

fn rate_opts(
    url: &str,
    rate: f64,
    arrival: Arrival,
    seed: u64,
    out: &std::path::Path,
) -> LoadOptions {
    LoadOptions {
        target: Target::new(url, "GET", &[], None).expect("target"),
        mode: Mode::Open {
            rate,
            arrival,
            seed,
            connections: 4,
            max_in_flight: 64,
        },
        n_requests: None,
        duration: Some(Duration::from_secs(2)),
        warmup: 0,
        timeout: Duration::from_secs(5),
        request: load::RequestSpec {
            api: load::target::Api::Plain,
            ..load::RequestSpec::default()
        },
        slo: Slo::default(),
        threads: 1,
        cpus: None,
        requests_out: Some(out.to_path_buf()),
        progress: false,
        stop: None,
    }
}

/// The longest oversleep of a thread that sleeps 1 ms at a time until
/// `stop`: how long the machine kept a ready thread off the CPU.
fn stall_monitor(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Duration> {
    std::thread::spawn(move || {
        let mut worst = Duration::ZERO;
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            std::thread::sleep(Duration::from_millis(1));
            worst = worst.max(t.elapsed().saturating_sub(Duration::from_millis(1)));
        }
        worst
    })
}

fn check(arrival: Arrival, seed: u64) {
    let server = TestServer::start(Arc::new(|_, _, s| ok(s)));
    let out = temp_path(&format!("schedule-{arrival}.jsonl"));
    let rate = 400.0;
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = stall_monitor(stop.clone());
    let report = load::run(&rate_opts(&server.url("/"), rate, arrival, seed, &out)).expect("run");
    stop.store(true, Ordering::Relaxed);
    let stall = monitor.join().expect("stall monitor");
    let expected: Vec<u64> = Schedule::new(rate, arrival, seed)
        .map(|(_, t)| t)
        .take_while(|&t| t < 2_000_000_000)
        .collect();
    let mut recs = jsonl(&out);
    let _ = std::fs::remove_file(&out);
    recs.sort_by_key(|r| r["id"].as_u64().unwrap_or(0));
    assert_eq!(
        recs.len(),
        expected.len(),
        "{arrival}: every scheduled request was sent"
    );
    assert_eq!(
        report.ok as usize,
        expected.len(),
        "{arrival}: all succeeded"
    );
    let t0 = recs[0]["intended_ns"].as_u64().expect("intended");
    let mut lags = Vec::new();
    for (r, want) in recs.iter().zip(&expected) {
        let intended = r["intended_ns"].as_u64().expect("intended");
        let sent = r["sent_ns"].as_u64().expect("sent");
        assert!(
            (intended - t0).abs_diff(*want) <= 1,
            "{arrival}: request {} intended at +{} ns, schedule says +{want}",
            r["id"],
            intended - t0
        );
        assert!(sent >= intended, "{arrival}: sent before its time");
        assert!(r["end_ns"].as_u64().unwrap_or(0) >= sent);
        lags.push(sent - intended);
    }
    lags.sort_unstable();
    let p50 = lags[lags.len() / 2];
    let p99 = lags[lags.len() * 99 / 100];
    let stall_ns = stall.as_nanos() as u64;
    eprintln!(
        "{arrival}: {} requests, lag p50 {p50} ns, p99 {p99} ns; longest machine stall {stall_ns} ns",
        lags.len()
    );
    assert!(p50 < 1_000_000, "{arrival}: median lag {p50} ns");
    let p99_bound = 10_000_000 + stall_ns;
    assert!(
        p99 < p99_bound,
        "{arrival}: p99 lag {p99} ns (bound 10 ms + the machine's stall {stall_ns} ns)"
    );
    // The report's own lag summary agrees with the records.
    let lag = report.latency_ms.schedule_lag.expect("lag summary");
    assert_eq!(lag.count as usize, recs.len());
    assert!(lag.p99.value < p99_bound as f64 / 1e6, "{lag:?}");
    // Throughput over the window is close to the offered rate.
    let offered = expected.len() as f64 / 2.0;
    assert!(
        (report.throughput_rps - offered).abs() < offered * 0.1,
        "{arrival}: throughput {} vs offered {offered}",
        report.throughput_rps
    );
}

#[test]
fn constant_rate_follows_the_schedule() {
    check(Arrival::Constant, 1);
}

#[test]
fn poisson_rate_follows_the_seeded_schedule() {
    check(Arrival::Poisson, 7);
}
