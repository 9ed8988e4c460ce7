//! End to end through the binary: `tailprobe serve` on a free port, then
//! `tailprobe load URL --n-requests 50 --concurrency 4 --json` (the lab's
//! measurement) and a rate-mode run with --requests-out.

mod load_support;

use std::{process::Command, time::Duration};

use load_support::{jsonl, temp_path, ServeProc};
use serde_json::Value;
use tailprobe_tests::tailprobe_bin;

/// The built-in server on a free port: 2 workers of a small model.
fn serve() -> (ServeProc, String) {
    let s = ServeProc::start(
        &["--workers", "2", "--hidden", "128", "--layers", "2"],
        None,
    );
    let url = s.url.clone();
    (s, url)
}

fn load(args: &[&str]) -> Value {
    let out = Command::new(tailprobe_bin())
        .arg("load")
        .args(args)
        .arg("--json")
        .output()
        .expect("run tailprobe load");
    assert!(
        out.status.success(),
        "tailprobe load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON report")
}

#[test]
fn lab_measurement_closed_loop_concurrency_4() {
    let (_s, base) = serve();
    let r = load(&[
        &format!("{base}/v1/completions"),
        "--n-requests",
        "50",
        "--concurrency",
        "4",
        "--max-tokens",
        "16",
        "--prompt-tokens",
        "32",
    ]);
    assert_eq!(r["ok"], 50);
    assert_eq!(r["errors"], 0);
    assert_eq!(r["config"]["mode"], "closed");
    assert_eq!(r["output_tokens"], 50 * 16);
    let e2e = &r["latency_ms"]["e2e"];
    assert_eq!(e2e["count"], 50);
    assert_eq!(e2e["p95"]["samples"], 3);
    let (avg, p95) = (
        e2e["avg"].as_f64().expect("avg"),
        e2e["p95"]["value"].as_f64().expect("p95"),
    );
    let (min, p50, max) = (
        e2e["min"].as_f64().expect("min"),
        e2e["p50"]["value"].as_f64().expect("p50"),
        e2e["max"].as_f64().expect("max"),
    );
    assert!(
        0.0 < min && min <= p50 && p50 <= p95 && p95 <= max,
        "order of min {min}, p50 {p50}, p95 {p95}, max {max}"
    );
    assert!(min <= avg && avg <= max, "avg {avg} outside {min}..{max}");
    // Little's law: requests in flight on average = throughput x mean
    // latency. A closed loop of 4 connections never has more than 4 in
    // flight (2% for histogram rounding), and keeps more than one in flight
    // unless the concurrency is not applied.
    let rps = r["throughput_rps"].as_f64().expect("rps");
    let in_flight = rps * avg / 1000.0;
    eprintln!("closed loop: {rps:.1} req/s x {avg:.2} ms = {in_flight:.2} in flight");
    assert!(
        (1.0..=4.0 * 1.02).contains(&in_flight),
        "{rps} req/s x {avg} ms = {in_flight} requests in flight with 4 connections"
    );
    assert!(r["latency_ms"]["ttft"]["count"] == 50);
    assert_eq!(r["generator"]["tids"].as_array().map(Vec::len), Some(2));
}

#[test]
fn rate_mode_with_records() {
    let (_s, base) = serve();
    let out = temp_path("cli-records.jsonl");
    let r = load(&[
        &format!("{base}/health"),
        "--rate",
        "100",
        "--arrival",
        "poisson",
        "--seed",
        "3",
        "--duration",
        "2s",
        "--requests-out",
        out.to_str().expect("utf-8 path"),
    ]);
    let recs = jsonl(&out);
    let _ = std::fs::remove_file(&out);
    assert_eq!(r["config"]["mode"], "rate");
    assert_eq!(r["headline"], "e2e_sched");
    assert!(
        r["latency_ms"]["e2e_sched"]["count"]
            .as_u64()
            .expect("count")
            > 100
    );
    assert_eq!(recs.len() as u64, r["ok"].as_u64().expect("ok"));
    for rec in &recs {
        let i = rec["intended_ns"].as_u64().expect("intended");
        let s = rec["sent_ns"].as_u64().expect("sent");
        let e = rec["end_ns"].as_u64().expect("end");
        assert!(i <= s && s <= e, "{rec}");
        assert_eq!(rec["outcome"], "ok");
    }
    // The records are on CLOCK_MONOTONIC: close to our own clock now.
    let now = tailprobe::record::monotonic_ns();
    let last = recs
        .iter()
        .filter_map(|r| r["end_ns"].as_u64())
        .max()
        .expect("records");
    assert!(now >= last && now - last < Duration::from_secs(60).as_nanos() as u64);
}

#[test]
fn bad_arguments_are_refused() {
    for args in [
        vec!["load", "http://127.0.0.1:1/", "--rate", "0"],
        vec![
            "load",
            "http://127.0.0.1:1/",
            "--rate",
            "5",
            "--arrival",
            "gamma:-1",
        ],
        vec!["load", "http://127.0.0.1:1/", "--slo", "ttft=fast"],
        vec!["load", "http://127.0.0.1:1/", "--arrival", "poisson"],
    ] {
        let st = Command::new(tailprobe_bin())
            .args(&args)
            .output()
            .expect("run");
        assert_eq!(st.status.code(), Some(2), "{args:?}");
    }
    // Nothing listening: an error exit with the reason.
    let out = Command::new(tailprobe_bin())
        .args([
            "load",
            "http://127.0.0.1:1/",
            "--n-requests",
            "3",
            "--timeout",
            "2s",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("connect"));
}
