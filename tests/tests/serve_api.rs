//! The built-in server: concurrent requests, streaming through the load
//! generator, malformed and oversized requests, a client that disconnects
//! mid-stream, and the per-request worker records.

mod load_support;

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use load_support::{get, post, raw};
use serde_json::Value;
use tailprobe::{
    load::{
        self, target::openai_body, target::Api, target::BodyTemplate, target::Target, LoadOptions,
        Mode,
    },
    serve::{ServeOptions, Server},
};

fn server() -> Server {
    Server::start(ServeOptions {
        addr: "127.0.0.1:0".parse().expect("addr"),
        workers: 2,
        hidden: 64,
        layers: 2,
        max_body: 4096,
        max_tokens_limit: 100_000,
        ..ServeOptions::default()
    })
    .expect("server starts")
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn concurrent_requests_are_answered_and_attributed_to_worker_threads() {
    let s = server();
    let addr = s.addr();
    let handles: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let chat = i % 2 == 0;
                let (path, body) = if chat {
                    ("/v1/chat/completions", r#"{"messages":[{"role":"user","content":"one two three"}],"max_tokens":8}"#)
                } else {
                    ("/v1/completions", r#"{"prompt":"one two three","max_tokens":8}"#)
                };
                (chat, post(addr, path, body))
            })
        })
        .collect();
    let mut texts = Vec::new();
    for h in handles {
        let (chat, (status, body)) = h.join().expect("client thread");
        assert_eq!(status, 200, "{body}");
        let v = json(&body);
        assert_eq!(v["usage"]["completion_tokens"], 8);
        assert_eq!(v["usage"]["prompt_tokens"], 3);
        let text = if chat {
            v["choices"][0]["message"]["content"]
                .as_str()
                .map(str::to_string)
        } else {
            v["choices"][0]["text"].as_str().map(str::to_string)
        };
        texts.push(text.expect("text"));
    }
    // Deterministic: the same prompt gives the same answer.
    assert!(texts.windows(2).all(|w| w[0] == w[1]), "{texts:?}");
    let (status, body) = get(addr, "/debug/requests");
    assert_eq!(status, 200);
    let v = json(&body);
    let tids: Vec<u64> = v["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .map(|w| w["tid"].as_u64().expect("tid"))
        .collect();
    assert_eq!(tids.len(), 2);
    let reqs = v["requests"].as_array().expect("requests");
    assert_eq!(reqs.len(), 8);
    for r in reqs {
        assert!(tids.contains(&r["tid"].as_u64().expect("tid")));
        let (q, st, ft, end) = (
            r["queued_ns"].as_u64().expect("queued"),
            r["start_ns"].as_u64().expect("start"),
            r["first_token_ns"].as_u64().expect("first token"),
            r["end_ns"].as_u64().expect("end"),
        );
        assert!(q <= st && st <= ft && ft <= end, "{r}");
        assert_eq!(r["outcome"], "ok");
        assert!(r["worker"]
            .as_str()
            .is_some_and(|w| w.starts_with("tp-serve-w")));
    }
    // Metrics count them.
    let (_, m) = get(addr, "/metrics");
    assert!(
        m.contains("tailprobe_serve_requests_total{endpoint=\"completions\",code=\"200\"} 4"),
        "{m}"
    );
    assert!(
        m.contains("tailprobe_serve_requests_total{endpoint=\"chat_completions\",code=\"200\"} 4")
    );
    assert!(m.contains("tailprobe_serve_request_duration_seconds_count 8"));
    assert!(m.contains("tailprobe_serve_generated_tokens_total 64"));
    assert!(m.contains("tailprobe_serve_queue_depth 0"));
    s.stop();
}

#[test]
fn bad_requests_get_json_errors_and_the_server_lives_on() {
    let s = server();
    let a = s.addr();
    let cases: Vec<(u16, (u16, String))> = vec![
        (400, post(a, "/v1/completions", "{not json")),
        (400, post(a, "/v1/completions", "[1,2]")),
        (
            400,
            post(a, "/v1/completions", r#"{"prompt":"x","max_tokens":-1}"#),
        ),
        (
            400,
            post(a, "/v1/completions", r#"{"prompt":"x","stream":"yes"}"#),
        ),
        (400, post(a, "/v1/chat/completions", r#"{"messages":"hi"}"#)),
        (400, post(a, "/v1/completions", "\u{0}\u{1}binary")),
        (404, get(a, "/v2/nothing")),
        (405, get(a, "/v1/completions")),
        (
            413,
            post(
                a,
                "/v1/completions",
                &format!(r#"{{"prompt":"{}"}}"#, "x".repeat(5000)),
            ),
        ),
    ];
    for (want, (status, body)) in cases {
        assert_eq!(status, want, "{body}");
        let v = json(&body);
        assert_eq!(v["error"]["code"], want);
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    // Oversized without a Content-Length (chunked): refused while reading.
    let big = "x".repeat(6000);
    let chunked = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    );
    let (status, _) = raw(a, chunked.as_bytes());
    assert_eq!(status, 413);
    // Garbage that is not HTTP at all: the connection is dropped, nothing else.
    let _ = raw(a, b"\x16\x03\x01 this is not http\r\n\r\n");
    assert_eq!(get(a, "/health"), (200, r#"{"status":"ok"}"#.to_string()));
    s.stop();
}

#[test]
fn client_disconnect_mid_stream_cancels_the_work() {
    let s = server();
    let a = s.addr();
    let body = r#"{"prompt":"go","max_tokens":100000,"stream":true}"#;
    let mut c = TcpStream::connect(a).expect("connect");
    write!(
        c,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut buf = [0u8; 4096];
    let n = c.read(&mut buf).expect("first bytes");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("text/event-stream"));
    drop(c);
    let t = Instant::now();
    let rec = loop {
        let (_, b) = get(a, "/debug/requests");
        let v = json(&b);
        if let Some(r) = v["requests"].as_array().and_then(|r| r.first()).cloned() {
            break r;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the worker never stopped"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(rec["outcome"], "cancelled");
    assert!(rec["output_tokens"].as_u64().expect("tokens") < 100_000);
    let (_, m) = get(a, "/metrics");
    assert!(m.contains("tailprobe_serve_cancelled_total 1"), "{m}");
    assert!(m.contains("tailprobe_serve_in_flight 0"), "{m}");
    assert_eq!(get(a, "/health").0, 200);
    s.stop();
}

#[test]
fn the_load_generator_reads_its_streams() {
    let s = server();
    for api in [Api::Completions, Api::Chat] {
        let path = match api {
            Api::Completions => "/v1/completions",
            _ => "/v1/chat/completions",
        };
        let body = openai_body(api, "m", 16, 12, true);
        let opts = LoadOptions {
            target: Target::new(
                &format!("http://{}{path}", s.addr()),
                "POST",
                &[],
                Some(BodyTemplate::new(body.as_bytes())),
            )
            .expect("target"),
            mode: Mode::Closed { concurrency: 4 },
            n_requests: Some(20),
            duration: None,
            warmup: 4,
            timeout: Duration::from_secs(30),
            request: load::RequestSpec {
                api,
                max_tokens: 12,
                ..load::RequestSpec::default()
            },
            slo: "e2e=30s".parse().expect("slo"),
            threads: 2,
            cpus: None,
            requests_out: None,
            progress: false,
            stop: None,
        };
        let r = load::run(&opts).expect("run");
        assert_eq!(
            (r.ok, r.errors, r.timeouts),
            (20, 0, 0),
            "{:?}",
            r.error_kinds
        );
        assert_eq!(r.warmup_excluded, 4);
        assert_eq!(r.output_tokens, 20 * 12);
        assert_eq!(r.streams_without_done, 0);
        assert_eq!(r.good, Some(20));
        let l = &r.latency_ms;
        let (ttft, e2e) = (l.ttft.as_ref().expect("ttft"), l.e2e.as_ref().expect("e2e"));
        assert!(ttft.avg <= e2e.avg);
        assert_eq!(l.itl.as_ref().expect("itl").count, 20 * 11);
        assert_eq!(l.tpot.as_ref().expect("tpot").count, 20);
    }
    s.stop();
}
