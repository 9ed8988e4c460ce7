//! Streaming (SSE) parsing against a scripted server: a comment line, a
//! role-only first chunk, an event split across two TCP writes, usage, and
//! then [DONE], a missing [DONE], or an in-band error.
//!
//! Timing: the role-only chunk comes at once, the first token 120 ms later,
//! then one token every 60 ms, the middle one split over two writes 40 ms
//! apart (timed by its first byte, its gaps are 60 and 60 ms; by its last
//! byte they would be 100 and 20). Tolerances: TTFT 120..250 ms (so not
//! the role-only chunk at ~0 ms); TPOT 55..95 ms; every ITL gap 45..95 ms.

mod load_support;

use std::{io::Write as _, net::TcpStream, sync::Arc, time::Duration};

use load_support::{sse_head, TestServer};
use tailprobe::load::{self, target::Target, LoadOptions, Mode, Slo};

#[derive(Clone, Copy, PartialEq)]
enum End {
    Done,
    NoDone,
    Error,
}

fn script(s: &mut TcpStream, end: End) -> std::io::Result<()> {
    let pause = |ms| std::thread::sleep(Duration::from_millis(ms));
    sse_head(s)?;
    s.write_all(b": keep-alive\n\n")?;
    s.write_all(
        b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
    )?;
    pause(120);
    s.write_all(b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n")?;
    pause(60);
    // Token b split across two writes 40 ms apart: timed by its first byte.
    s.write_all(b"data: {\"choices\":[{\"delta\":{\"con")?;
    pause(40);
    s.write_all(b"tent\":\"b\"}}]}\r\n\r\n")?;
    pause(20);
    s.write_all(b"data: {\"choices\":[{\"delta\":{\"content\":\"c\"}}]}\n\n")?;
    match end {
        End::Error => s.write_all(b"data: {\"error\":{\"message\":\"overloaded\"}}\n\n")?,
        _ => s.write_all(b"data: {\"choices\":[],\"usage\":{\"completion_tokens\":3}}\n\n")?,
    }
    if end == End::Done {
        s.write_all(b"data: [DONE]\n\n")?;
    }
    s.flush()?;
    // Close: the body ends here.
    s.shutdown(std::net::Shutdown::Both)
}

fn run(end: End) -> load::report::LoadReport {
    let server = TestServer::start(Arc::new(move |_, _, s| script(s, end)));
    let opts = LoadOptions {
        target: Target::new(&server.url("/v1/chat/completions"), "POST", &[], None)
            .expect("target"),
        mode: Mode::Closed { concurrency: 1 },
        n_requests: Some(3),
        duration: None,
        warmup: 0,
        timeout: Duration::from_secs(10),
        request: load::RequestSpec {
            api: load::target::Api::Chat,
            // The script sends usage.completion_tokens = 3.
            max_tokens: 3,
            ..load::RequestSpec::default()
        },
        slo: Slo::default(),
        threads: 1,
        cpus: None,
        requests_out: None,
        progress: false,
        stop: None,
    };
    load::run(&opts).expect("run")
}

#[test]
fn token_metrics_skip_role_only_chunks_and_comments() {
    let r = run(End::Done);
    assert_eq!((r.ok, r.errors), (3, 0));
    assert_eq!(r.streams_without_done, 0);
    assert_eq!(
        r.output_tokens, 9,
        "usage.completion_tokens = 3 per request"
    );
    let l = &r.latency_ms;
    let ttft = l.ttft.as_ref().expect("ttft");
    assert!((120.0..250.0).contains(&ttft.min), "ttft min {}", ttft.min);
    assert!(ttft.max < 250.0, "ttft max {}", ttft.max);
    let tpot = l.tpot.as_ref().expect("tpot");
    assert!((55.0..95.0).contains(&tpot.avg), "tpot {}", tpot.avg);
    let itl = l.itl.as_ref().expect("itl");
    assert_eq!(itl.count, 6, "two gaps per request");
    assert!(itl.min >= 45.0 && itl.max < 95.0, "itl {itl:?}");
    let e2e = l.e2e.as_ref().expect("e2e");
    assert!(e2e.min >= 240.0, "e2e {}", e2e.min);
}

#[test]
fn missing_done_is_counted_not_failed() {
    let r = run(End::NoDone);
    assert_eq!((r.ok, r.errors), (3, 0));
    assert_eq!(r.streams_without_done, 3);
    assert_eq!(r.output_tokens, 9);
}

#[test]
fn in_band_error_is_an_error() {
    let r = run(End::Error);
    assert_eq!(r.ok, 0);
    assert_eq!(r.error_kinds.get("stream_error"), Some(&3));
    assert!(
        r.latency_ms.e2e.is_none(),
        "failed requests stay out of latency"
    );
}
