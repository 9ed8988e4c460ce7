//! `tailprobe load` against servers that check what they are asked and
//! answer what they answer: a server that serves one model name (the
//! built-in server with --served-model-name, which rejects other names the
//! way vLLM does; no installable OpenAI-compatible server runs here
//! without downloading weights), a fixture that cuts running streams when
//! a new request arrives, an endless SSE line, and absurd usage counts.

mod load_support;

use load_support::{cutting, load_json, ServeProc};

fn serve() -> ServeProc {
    ServeProc::start(
        &[
            "--served-model-name",
            "org/real",
            "--workers",
            "2",
            "--hidden",
            "64",
            "--layers",
            "2",
        ],
        None,
    )
}

#[test]
fn a_wrong_model_gets_the_servers_error_quoted() {
    let s = serve();
    let url = format!("{}/v1/completions", s.url);
    let (ok, r, err, _) = load_json(&[&url, "--model", "wrong", "-n", "4", "-c", "1"]);
    assert!(!ok, "no request can succeed");
    assert_eq!(r["error_kinds"]["http_404"], 4, "{r}");
    assert_eq!(r["ok"], 0);
    let quote = "The model `wrong` does not exist.";
    assert!(err.contains(quote), "stderr: {err}");
    assert!(
        r["error_sample"].as_str().unwrap_or("").contains(quote),
        "{r}"
    );
}

#[test]
fn discovery_finds_the_model_and_complete_streams_have_the_asked_tokens() {
    let s = serve();
    for (path, n) in [("/v1/chat/completions", 12), ("/v1/completions", 8)] {
        let url = format!("{}{path}", s.url);
        let (ok, r, err, _) =
            load_json(&[&url, "-n", &n.to_string(), "-c", "2", "--max-tokens", "8"]);
        assert!(ok, "{err}");
        assert!(err.contains("org/real"), "discovery is said: {err}");
        assert_eq!(r["config"]["model"]["source"], "discovered");
        assert_eq!(r["config"]["model"]["name"], "org/real");
        assert_eq!(
            (r["ok"].as_u64(), r["incomplete"].as_u64()),
            (Some(n), Some(0)),
            "{r}"
        );
        let t = &r["output_tokens_per_request"];
        assert_eq!(
            (t["min"].as_f64(), t["max"].as_f64()),
            (Some(8.0), Some(8.0)),
            "{t}"
        );
        assert_eq!(r["output_tokens"], 8 * n);
        assert!(r["output_tokens_per_s"].as_f64().unwrap_or(0.0) > 0.0);
    }
}

#[test]
fn cut_streams_are_incomplete_warned_about_and_never_successes() {
    let srv = cutting::cutting(8, 20, 5);
    let url = srv.url("/v1/chat/completions");
    let records = load_support::temp_path("cut.jsonl");
    let rec = records.to_string_lossy().to_string();
    let (_, r, err, _) = load_json(&[
        &url,
        "--model",
        "m",
        "--max-tokens",
        "8",
        "-c",
        "3",
        "-n",
        "30",
        "--requests-out",
        &rec,
    ]);
    let incomplete = r["incomplete"]
        .as_u64()
        .unwrap_or_else(|| panic!("no report: {err}"));
    assert!(incomplete >= 10, "{r}");
    let warnings = r["warnings"].to_string();
    assert!(warnings.contains("try --concurrency 1"), "{warnings}");
    let lines = load_support::jsonl(&records);
    let _ = std::fs::remove_file(&records);
    let ok: Vec<_> = lines.iter().filter(|l| l["outcome"] == "ok").collect();
    assert_eq!(ok.len() as u64, r["ok"].as_u64().unwrap_or(0));
    for l in &ok {
        assert_eq!(
            l["output_tokens"], 8,
            "a success must be a whole answer: {l}"
        );
    }
    let cut = lines
        .iter()
        .filter(|l| l["outcome"] == "incomplete")
        .count();
    assert_eq!(cut as u64, incomplete);
    // Only whole answers are in the latency histograms.
    let e2e = r["latency_ms"]["e2e"]["count"].as_u64().unwrap_or(0);
    assert_eq!(e2e, r["ok"].as_u64().unwrap_or(0), "{r}");
    // One at a time, the same server completes every stream.
    let (ok, r, err, _) = load_json(&[
        &url,
        "--model",
        "m",
        "--max-tokens",
        "8",
        "-c",
        "1",
        "-n",
        "10",
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        (r["ok"].as_u64(), r["incomplete"].as_u64()),
        (Some(10), Some(0)),
        "{r}"
    );
    assert_eq!(r["warnings"].as_array().map(Vec::len), Some(0), "{r}");
}

#[test]
fn a_huge_sse_line_is_response_too_large_with_bounded_memory() {
    // 64 MiB on one line: the parser gives up at 1 MiB.
    let srv = cutting::endless_line(64 << 20);
    let url = srv.url("/v1/chat/completions");
    let (_, r, err, maxrss_kib) = load_json(&[&url, "--model", "m", "-n", "1", "-c", "1"]);
    assert_eq!(r["error_kinds"]["response_too_large"], 1, "{r} {err}");
    assert!(
        maxrss_kib < 48 * 1024,
        "tailprobe load peaked at {} MiB for a 64 MiB line",
        maxrss_kib / 1024
    );
}

#[test]
fn token_sums_saturate_instead_of_wrapping() {
    let srv = cutting::huge_usage();
    let url = srv.url("/v1/completions");
    // A template without max_tokens: nothing to hold the count against.
    let (ok, r, err, _) = load_json(&[&url, "--data", r#"{"prompt":"x"}"#, "-n", "3", "-c", "1"]);
    assert!(ok, "{err}");
    assert_eq!(r["ok"], 3, "{r}");
    assert_eq!(r["output_tokens"].as_u64(), Some(u64::MAX), "{r}");
}
