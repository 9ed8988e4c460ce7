//! Property tests (proptest) for what reads a server's bytes: the SSE
//! parser and the HTTP/1.1 response reader (`h1`). Any input: no panic and
//! bounded memory; valid input split or merged anywhere: the same result as
//! read whole. Case counts are bounded so the whole file runs in seconds.
//! (Test-only: its parent declares it under `#[cfg(test)]`.)

use proptest::prelude::*;

use super::{
    h1::{parse_head, Chunked, Framing, H1Error},
    sse::{SseEvent, SseParser, TooLarge},
};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

/// Cut `bytes` at the given points (taken modulo its length, sorted).
fn split<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    at.sort_unstable();
    at.dedup();
    let mut parts = Vec::new();
    let mut start = 0;
    for c in at {
        parts.push(&bytes[start..c]);
        start = c;
    }
    parts.push(&bytes[start..]);
    parts
}

/// Parse `parts` in order, each stamped with its index.
fn parse_parts(parts: &[&[u8]], limit: usize) -> Result<Vec<SseEvent>, TooLarge> {
    let mut p = SseParser::with_limit(limit);
    let mut out = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        p.feed(part, i as u64, &mut out)?;
        assert!(
            p.held() <= 2 * limit + part.len(),
            "held {} with limit {limit}",
            p.held()
        );
    }
    p.finish(&mut out);
    Ok(out)
}

/// Text of an event-stream: events of data lines, with comments and the
/// given line ending.
fn stream_text(events: &[Vec<String>], crlf: bool) -> Vec<u8> {
    let nl = if crlf { "\r\n" } else { "\n" };
    let mut s = String::new();
    for ev in events {
        s.push_str(": keep-alive");
        s.push_str(nl);
        for line in ev {
            s.push_str("data: ");
            s.push_str(line);
            s.push_str(nl);
        }
        s.push_str(nl);
    }
    s.into_bytes()
}

fn data_line() -> impl Strategy<Value = String> {
    // No CR/LF inside a line; anything else, multi-byte included.
    "[^\r\n]{0,40}"
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn sse_any_bytes_no_panic_bounded(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
        cuts in proptest::collection::vec(any::<usize>(), 0..16),
        limit in 1usize..512,
    ) {
        // Either events or TooLarge; never a panic or unbounded buffer.
        let _ = parse_parts(&split(&bytes, &cuts), limit);
    }

    #[test]
    fn sse_split_anywhere_gives_the_same_events(
        events in proptest::collection::vec(
            proptest::collection::vec(data_line(), 1..4), 0..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..24),
        crlf in any::<bool>(),
    ) {
        let text = stream_text(&events, crlf);
        let whole = parse_parts(&[&text], 1 << 20).expect("within the limit");
        let parts = split(&text, &cuts);
        let pieces = parse_parts(&parts, 1 << 20).expect("within the limit");
        let data = |v: &[SseEvent]| v.iter().map(|e| e.data.clone()).collect::<Vec<_>>();
        prop_assert_eq!(data(&whole), data(&pieces));
        let want: Vec<String> = events.iter().map(|e| e.join("\n")).collect();
        prop_assert_eq!(data(&whole), want);
    }

    #[test]
    fn sse_lines_over_the_limit_are_refused(
        len in 65usize..4096,
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut text = b"data: ".to_vec();
        text.extend(std::iter::repeat_n(b'x', len));
        text.extend_from_slice(b"\n\n");
        prop_assert_eq!(parse_parts(&split(&text, &cuts), 64), Err(TooLarge(64)));
    }

    #[test]
    fn h1_head_any_bytes_no_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(Some((_, n))) = parse_head(&bytes, false) {
            prop_assert!(n <= bytes.len());
        }
    }

    #[test]
    fn h1_head_is_found_only_when_complete(
        status in 200u16..600,
        len in 0u64..100_000,
        extra in proptest::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,12}", "[ -~]{0,20}"), 0..6),
        cut in any::<usize>(),
    ) {
        let mut head = format!("HTTP/1.1 {status} X\r\ncontent-length: {len}\r\n");
        for (k, v) in &extra {
            let k = k.to_ascii_lowercase();
            if matches!(k.as_str(), "content-length" | "transfer-encoding" | "connection") {
                continue;
            }
            head.push_str(&format!("{k}: {}\r\n", v.trim()));
        }
        head.push_str("\r\n");
        let bytes = head.as_bytes();
        let (h, n) = parse_head(bytes, false).expect("valid").expect("complete");
        prop_assert_eq!(n, bytes.len());
        prop_assert_eq!(h.status, status);
        let framing = if matches!(status, 204 | 304) {
            Framing::Empty
        } else {
            Framing::Length(len)
        };
        prop_assert_eq!(h.framing, framing);
        let cut = cut % bytes.len();
        prop_assert!(parse_head(&bytes[..cut], false).expect("a valid prefix").is_none());
    }

    #[test]
    fn chunked_any_bytes_no_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut dec = Chunked::default();
        let mut got = 0usize;
        if let Ok(n) = dec.decode(&bytes, |d| {
            got += d.len();
            Ok(())
        }) {
            prop_assert!(n <= bytes.len());
            prop_assert!(got <= bytes.len());
        }
    }

    #[test]
    fn chunked_split_anywhere_gives_the_body(
        body in proptest::collection::vec(any::<u8>(), 0..3000),
        sizes in proptest::collection::vec(1usize..700, 1..10),
        cuts in proptest::collection::vec(any::<usize>(), 0..16),
    ) {
        let mut wire = Vec::new();
        let mut rest = &body[..];
        let mut i = 0;
        while !rest.is_empty() {
            let k = sizes[i % sizes.len()].min(rest.len());
            wire.extend_from_slice(format!("{k:x}\r\n").as_bytes());
            wire.extend_from_slice(&rest[..k]);
            wire.extend_from_slice(b"\r\n");
            rest = &rest[k..];
            i += 1;
        }
        wire.extend_from_slice(b"0\r\n\r\n");
        let mut dec = Chunked::default();
        let mut out = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for part in split(&wire, &cuts) {
            pending.extend_from_slice(part);
            let n = dec
                .decode(&pending, |d| {
                    out.extend_from_slice(d);
                    Ok(())
                })
                .expect("valid chunked body");
            pending.drain(..n);
        }
        prop_assert!(dec.done());
        prop_assert_eq!(out, body);
    }

    #[test]
    fn chunked_sink_errors_stop_the_decoding(
        body in proptest::collection::vec(any::<u8>(), 1..500),
    ) {
        let mut wire = format!("{:x}\r\n", body.len()).into_bytes();
        wire.extend_from_slice(&body);
        wire.extend_from_slice(b"\r\n0\r\n\r\n");
        let mut dec = Chunked::default();
        let r = dec.decode(&wire, |_| Err(H1Error::TooLarge("test".into())));
        prop_assert!(matches!(r, Err(H1Error::TooLarge(_))));
    }
}
