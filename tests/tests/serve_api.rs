//! The built-in server: concurrent requests, streaming through the load
//! generator, malformed and oversized requests, a client that disconnects
//! mid-stream or mid-prefill, the per-request worker records, and the
//! limits that shed abuse (header timeout, accept at the fd limit, prompt
//! cap, served model names).

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

fn hardened(opts: ServeOptions) -> Server {
    Server::start(ServeOptions {
        addr: "127.0.0.1:0".parse().expect("addr"),
        ..opts
    })
    .expect("server starts")
}

/// Whether the server has closed `c` (EOF or reset), without waiting.
fn closed_by_server(c: &mut TcpStream) -> bool {
    c.set_nonblocking(true).expect("nonblocking");
    let mut buf = [0u8; 512];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return true,
            // An error answer before the close is fine; keep reading.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn half_open_connections_are_closed_after_the_header_timeout() {
    let s = hardened(ServeOptions {
        workers: 1,
        hidden: 16,
        layers: 1,
        header_timeout: Duration::from_millis(500),
        ..ServeOptions::default()
    });
    let a = s.addr();
    let t = Instant::now();
    let mut conns: Vec<TcpStream> = (0..300)
        .map(|i| {
            let mut c = TcpStream::connect(a).expect("connect");
            if i % 2 == 1 {
                // Half a request head, never finished.
                c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                    .expect("partial head");
            }
            c
        })
        .collect();
    // Others are still served meanwhile.
    assert_eq!(get(a, "/health").0, 200);
    // Closed within the timeout plus slack for a loaded machine.
    let open = loop {
        let mut open = 0;
        for c in conns.iter_mut() {
            open += usize::from(!closed_by_server(c));
        }
        if open == 0 || t.elapsed() > Duration::from_secs(4) {
            break open;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        open,
        0,
        "idle connections still open {:?} after connecting, with a 500 ms header timeout",
        t.elapsed()
    );
    assert_eq!(get(a, "/health").0, 200);
    s.stop();
}

#[test]
fn health_is_answered_at_the_fd_limit_and_accept_does_not_spin() {
    // 48 descriptors: the server's own (runtime, threads, stdio) plus a few
    // connections; 120 idle connections exhaust them.
    let srv = load_support::ServeProc::start(
        &[
            "--workers",
            "1",
            "--hidden",
            "16",
            "--layers",
            "1",
            "--header-timeout",
            "1s",
        ],
        Some(48),
    );
    let a = srv.addr();
    let idle: Vec<TcpStream> = (0..120)
        .map(|_| TcpStream::connect(a).expect("connect (kernel backlog)"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let pid = srv.child.id();
    let cpu0 = load_support::cpu_seconds(pid);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    let share = (load_support::cpu_seconds(pid) - cpu0) / t0.elapsed().as_secs_f64();
    // /health queues behind the idle connections; the header timeout
    // frees descriptors and accept picks it up.
    let t = Instant::now();
    let (status, body) = get(a, "/health");
    assert_eq!(status, 200, "{body}");
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    let (_, m) = get(a, "/metrics");
    let backoffs: f64 = m
        .lines()
        .find_map(|l| l.strip_prefix("tailprobe_serve_accept_backoffs_total "))
        .and_then(|v| v.parse().ok())
        .expect("backoff counter");
    assert!(backoffs >= 1.0, "the fd limit was never reached:\n{m}");
    assert!(
        share < 0.3,
        "the server used {:.0}% of a CPU while out of descriptors (spinning accept)",
        share * 100.0
    );
    drop(idle);
}

#[test]
fn prompts_over_the_cap_get_400_stating_the_limit() {
    let s = hardened(ServeOptions {
        workers: 1,
        hidden: 16,
        layers: 1,
        max_prompt_tokens: 100,
        ..ServeOptions::default()
    });
    let a = s.addr();
    let words = |n: usize| vec!["w"; n].join(" ");
    let (status, body) = post(
        a,
        "/v1/completions",
        &format!(r#"{{"prompt":"{}","max_tokens":2}}"#, words(101)),
    );
    assert_eq!(status, 400, "{body}");
    let msg = json(&body)["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        msg.contains("101 tokens") && msg.contains("limit is 100"),
        "{msg}"
    );
    let (status, body) = post(
        a,
        "/v1/completions",
        &format!(r#"{{"prompt":"{}","max_tokens":2}}"#, words(100)),
    );
    assert_eq!(status, 200, "{body}");
    s.stop();
}

#[test]
fn a_client_that_leaves_during_prefill_frees_the_worker() {
    // 20,000 prompt tokens x 8 layers of 512x512: tens of seconds of
    // prefill (far more in a debug build); the client leaves after 300 ms.
    let s = hardened(ServeOptions {
        workers: 1,
        hidden: 512,
        layers: 8,
        max_body: 1 << 20,
        max_prompt_tokens: 100_000,
        ..ServeOptions::default()
    });
    let a = s.addr();
    let prompt = vec!["w"; 20_000].join(" ");
    let body = format!(r#"{{"prompt":"{prompt}","max_tokens":4,"stream":true}}"#);
    let mut c = TcpStream::connect(a).expect("connect");
    write!(
        c,
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    std::thread::sleep(Duration::from_millis(300));
    drop(c);
    let left = Instant::now();
    let rec = loop {
        let (_, b) = get(a, "/debug/requests");
        if let Some(r) = json(&b)["requests"]
            .as_array()
            .and_then(|r| r.first())
            .cloned()
        {
            break r;
        }
        // A debug build takes minutes for the whole prefill; 10 s leaves
        // room for a loaded machine.
        if left.elapsed() > Duration::from_secs(10 * tailprobe_tests::time_scale()) {
            // Stopping would wait for the worker to finish the prefill.
            std::mem::forget(s);
            panic!("the worker was still prefilling 10 s after the client left");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(rec["outcome"], "cancelled", "{rec}");
    assert_eq!(rec["output_tokens"], 0, "{rec}");
    s.stop();
}

#[test]
fn unknown_models_get_404_like_vllm() {
    let s = hardened(ServeOptions {
        workers: 1,
        hidden: 16,
        layers: 1,
        served_model_names: vec!["org/real".into()],
        ..ServeOptions::default()
    });
    let a = s.addr();
    let (status, body) = get(a, "/v1/models");
    assert_eq!(status, 200);
    assert_eq!(json(&body)["data"][0]["id"], "org/real");
    let (status, body) = post(
        a,
        "/v1/completions",
        r#"{"model":"nope","prompt":"a","max_tokens":2}"#,
    );
    assert_eq!(status, 404, "{body}");
    let e = &json(&body)["error"];
    assert_eq!(e["message"], "The model `nope` does not exist.");
    assert_eq!(e["type"], "NotFoundError");
    for req in [
        r#"{"model":"org/real","prompt":"a","max_tokens":2}"#,
        r#"{"prompt":"a","max_tokens":2}"#,
    ] {
        let (status, body) = post(a, "/v1/completions", req);
        assert_eq!(status, 200, "{body}");
        assert_eq!(json(&body)["model"], "org/real");
    }
    s.stop();
}
