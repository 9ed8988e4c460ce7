//! Test fixtures, not servers to use: OpenAI-style streaming servers that
//! misbehave the way real ones were seen to.
//!
//! `cutting`: serves one stream at a time; when a new request arrives it
//! ends the running stream at once with `data: [DONE]` (no further content,
//! no finish_reason), as an LLM server we measured did. Each stream sends
//! the role chunk, waits `first_token_ms`, then `tokens` content chunks
//! `step_ms` apart, a finish chunk (`finish_reason: "length"`), a usage
//! chunk and `[DONE]`. `GET /v1/models` lists `m`.

use std::{
    io::Write as _,
    net::TcpStream,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use super::{sse_head, TestServer};

pub fn models(s: &mut TcpStream) -> std::io::Result<()> {
    let body = r#"{"object":"list","data":[{"id":"m","object":"model"}]}"#;
    write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

pub fn cutting(tokens: u32, first_token_ms: u64, step_ms: u64) -> TestServer {
    let running = Arc::new(AtomicU64::new(0));
    TestServer::start(Arc::new(move |_, line, s| {
        if line.starts_with("GET /v1/models") {
            return models(s);
        }
        // A new request: whatever runs is cut.
        let me = running.fetch_add(1, Ordering::SeqCst) + 1;
        let cut = || running.load(Ordering::SeqCst) != me;
        sse_head(s)?;
        s.write_all(
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
        )?;
        std::thread::sleep(Duration::from_millis(first_token_ms));
        for i in 0..tokens {
            if cut() {
                s.write_all(b"data: [DONE]\n\n")?;
                return s.shutdown(std::net::Shutdown::Both);
            }
            if i > 0 {
                std::thread::sleep(Duration::from_millis(step_ms));
            }
            s.write_all(
                b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" tok\"},\"finish_reason\":null}]}\n\n",
            )?;
        }
        write!(
            s,
            "data: {{\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"length\"}}]}}\n\n\
             data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":4,\"completion_tokens\":{tokens}}}}}\n\n\
             data: [DONE]\n\n"
        )?;
        s.shutdown(std::net::Shutdown::Both)
    }))
}

/// A stream whose first line never ends: `data: ` then `bytes` of `a`.
pub fn endless_line(bytes: usize) -> TestServer {
    TestServer::start(Arc::new(move |_, _, s| {
        sse_head(s)?;
        s.write_all(b"data: ")?;
        let piece = vec![b'a'; 64 * 1024];
        let mut sent = 0;
        while sent < bytes {
            s.write_all(&piece)?;
            sent += piece.len();
        }
        s.shutdown(std::net::Shutdown::Both)
    }))
}

/// Non-streamed completions whose usage count is near u64::MAX.
pub fn huge_usage() -> TestServer {
    TestServer::start(Arc::new(|_, _, s| {
        let body = r#"{"choices":[{"index":0,"text":"x","finish_reason":"length"}],"usage":{"prompt_tokens":1,"completion_tokens":18446744073709551613}}"#;
        write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }))
}
