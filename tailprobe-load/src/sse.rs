//! Server-Sent Events as OpenAI-compatible servers stream them, and the
//! meaning of each event for the inference metrics. No I/O: bytes in, timed
//! events out.
//!
//! Each event is stamped with the arrival time of its first byte (the chunk
//! that brought it), so an event split across reads is timed by its start.

/// One complete event: its `data` lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// CLOCK_MONOTONIC ns when the event's first byte arrived.
    pub at_ns: u64,
    pub data: String,
}

/// Largest line, and largest event (its `data` lines together), accepted by
/// default: 1 MiB. A longer one stops the parse (`TooLarge`): memory stays
/// bounded whatever the server sends.
pub const MAX_EVENT: usize = 1 << 20;

/// A line or an event over the parser's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an event-stream line or event over {0} bytes")]
pub struct TooLarge(pub usize);

/// Incremental SSE parser (the WHATWG event-stream format, `data` field only:
/// `event`, `id` and `retry` are accepted and ignored).
#[derive(Debug)]
pub struct SseParser {
    /// Largest line or event, bytes.
    max: usize,
    buf: Vec<u8>,
    /// Arrival time of the first byte of the partial line in `buf`.
    line_start: Option<u64>,
    /// Arrival time of the first line of the event being assembled.
    event_start: Option<u64>,
    data: String,
    has_data: bool,
    /// Comment lines seen (`:` keep-alives).
    pub comments: u64,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::with_limit(MAX_EVENT)
    }
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// A parser that refuses lines and events over `max` bytes.
    pub fn with_limit(max: usize) -> Self {
        SseParser {
            max,
            buf: Vec::new(),
            line_start: None,
            event_start: None,
            data: String::new(),
            has_data: false,
            comments: 0,
        }
    }

    /// Bytes held for partial lines and events (bounded by about twice the
    /// limit plus one chunk).
    pub fn held(&self) -> usize {
        self.buf.len() + self.data.len()
    }

    /// Feed bytes that arrived at `at_ns`; complete events go to `out`. A
    /// line or event over the limit is an error (the stream should be
    /// abandoned: the parser's state is cleared).
    pub fn feed(
        &mut self,
        chunk: &[u8],
        at_ns: u64,
        out: &mut Vec<SseEvent>,
    ) -> Result<(), TooLarge> {
        let r = self.feed_inner(chunk, at_ns, out);
        if r.is_err() {
            self.buf = Vec::new();
            self.data = String::new();
            self.has_data = false;
        }
        r
    }

    fn feed_inner(
        &mut self,
        chunk: &[u8],
        at_ns: u64,
        out: &mut Vec<SseEvent>,
    ) -> Result<(), TooLarge> {
        if chunk.is_empty() {
            return Ok(());
        }
        if self.buf.is_empty() {
            self.line_start = Some(at_ns);
        }
        let scan_from = self.buf.len();
        self.buf.extend_from_slice(chunk);
        let mut consumed = 0;
        let mut search = scan_from;
        while let Some(pos) = self.buf[search..].iter().position(|&b| b == b'\n') {
            let end = search + pos;
            let start_ns = self.line_start.unwrap_or(at_ns);
            let mut line_end = end;
            if line_end > consumed && self.buf[line_end - 1] == b'\r' {
                line_end -= 1;
            }
            if line_end - consumed > self.max {
                return Err(TooLarge(self.max));
            }
            let line = std::mem::take(&mut self.buf);
            self.line(&line[consumed..line_end], start_ns, out);
            self.buf = line;
            if self.data.len() > self.max {
                return Err(TooLarge(self.max));
            }
            consumed = end + 1;
            search = consumed;
            // Whatever follows in this buffer arrived with this chunk.
            self.line_start = Some(at_ns);
        }
        if consumed > 0 {
            self.buf.drain(..consumed);
        }
        if self.buf.len() > self.max {
            return Err(TooLarge(self.max));
        }
        if self.buf.is_empty() {
            self.line_start = None;
        }
        Ok(())
    }

    /// The stream ended: an event left without its closing blank line is
    /// still delivered (lenient: some servers omit it).
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            let start = self.line_start.unwrap_or(0);
            let trimmed = line.strip_suffix(b"\r").unwrap_or(&line);
            self.line(trimmed, start, out);
        }
        self.dispatch(out);
    }

    fn line(&mut self, line: &[u8], start_ns: u64, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            self.comments += 1;
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        if field == b"data" {
            if self.event_start.is_none() {
                self.event_start = Some(start_ns);
            }
            if self.has_data {
                self.data.push('\n');
            }
            self.data.push_str(&String::from_utf8_lossy(value));
            self.has_data = true;
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        if self.has_data {
            out.push(SseEvent {
                at_ns: self.event_start.unwrap_or(0),
                data: std::mem::take(&mut self.data),
            });
        }
        self.has_data = false;
        self.data.clear();
        self.event_start = None;
    }
}

/// What one OpenAI-style streamed event means.
#[derive(Debug, Clone, PartialEq)]
pub enum Chunk {
    /// `data: [DONE]`.
    Done,
    /// An in-band `{"error": ...}`; the message.
    Error(String),
    /// A normal chunk. `tokens` is 1 when it carries generated text (a
    /// role-only or empty delta carries none); `usage` is
    /// `usage.completion_tokens` when present; `finish` is a choice's
    /// `finish_reason` when set.
    Data {
        tokens: u32,
        usage: Option<u64>,
        finish: Option<String>,
    },
    /// Not JSON: counted, otherwise ignored.
    Unparsable,
}

/// Interpret one event's data as a completions or chat-completions chunk.
pub fn classify(data: &str) -> Chunk {
    let data = data.trim();
    if data == "[DONE]" {
        return Chunk::Done;
    }
    let v: serde_json::Value = match serde_json::from_str(data) {
        Ok(v) => v,
        Err(_) => return Chunk::Unparsable,
    };
    if let Some(e) = v.get("error") {
        let msg = e
            .get("message")
            .and_then(|m| m.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| e.to_string());
        return Chunk::Error(msg);
    }
    let has_text = v
        .get("choices")
        .and_then(|c| c.as_array())
        .is_some_and(|choices| {
            choices.iter().any(|c| {
                let text = c.get("text").and_then(|t| t.as_str());
                let delta = c.get("delta");
                let content = delta
                    .and_then(|d| d.get("content"))
                    .and_then(|t| t.as_str());
                let reasoning = delta
                    .and_then(|d| d.get("reasoning_content"))
                    .and_then(|t| t.as_str());
                [text, content, reasoning]
                    .iter()
                    .any(|s| s.is_some_and(|s| !s.is_empty()))
            })
        });
    let usage = v
        .get("usage")
        .and_then(|u| u.get("completion_tokens"))
        .and_then(|t| t.as_u64());
    let finish = v
        .get("choices")
        .and_then(|c| c.as_array())
        .and_then(|choices| {
            choices
                .iter()
                .find_map(|c| c.get("finish_reason")?.as_str().map(str::to_string))
        });
    Chunk::Data {
        tokens: u32::from(has_text),
        usage,
        finish,
    }
}

/// Per-request token timing, folded from the classified events.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TokenTimes {
    pub first_token_ns: Option<u64>,
    pub last_token_ns: Option<u64>,
    /// Token-carrying events seen.
    pub token_events: u64,
    /// `usage.completion_tokens` if the server sent it.
    pub usage_tokens: Option<u64>,
    pub done: bool,
    pub error: Option<String>,
    pub unparsable: u64,
    /// The last `finish_reason` the server sent (`length`, `stop`, ...).
    pub finish_reason: Option<String>,
}

impl TokenTimes {
    /// Fold one event; `gap` receives each inter-token gap (ns).
    pub fn event(&mut self, ev: &SseEvent, mut gap: impl FnMut(u64)) {
        match classify(&ev.data) {
            Chunk::Done => self.done = true,
            Chunk::Error(m) => {
                if self.error.is_none() {
                    self.error = Some(m);
                }
            }
            Chunk::Unparsable => self.unparsable += 1,
            Chunk::Data {
                tokens,
                usage,
                finish,
            } => {
                if usage.is_some() {
                    self.usage_tokens = usage;
                }
                if finish.is_some() {
                    self.finish_reason = finish;
                }
                if tokens > 0 {
                    if let Some(last) = self.last_token_ns {
                        gap(ev.at_ns.saturating_sub(last));
                    }
                    if self.first_token_ns.is_none() {
                        self.first_token_ns = Some(ev.at_ns);
                    }
                    self.last_token_ns = Some(ev.at_ns);
                    self.token_events = self.token_events.saturating_add(u64::from(tokens));
                }
            }
        }
    }

    /// Output tokens: the server's usage count when given, else the events.
    pub fn output_tokens(&self) -> u64 {
        self.usage_tokens.unwrap_or(self.token_events)
    }

    /// Time per output token after the first, ns: (last - first) / (n - 1).
    pub fn tpot_ns(&self) -> Option<u64> {
        let n = self.output_tokens();
        match (self.first_token_ns, self.last_token_ns) {
            (Some(f), Some(l)) if n > 1 => Some(l.saturating_sub(f) / (n - 1)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[(&str, u64)]) -> (Vec<SseEvent>, u64) {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for (c, t) in chunks {
            p.feed(c.as_bytes(), *t, &mut out).unwrap();
        }
        p.finish(&mut out);
        (out, p.comments)
    }

    #[test]
    fn whole_events() {
        let (ev, _) = parse_all(&[("data: a\n\ndata: b\r\n\r\n", 5)]);
        assert_eq!(
            ev,
            vec![
                SseEvent {
                    at_ns: 5,
                    data: "a".into()
                },
                SseEvent {
                    at_ns: 5,
                    data: "b".into()
                }
            ]
        );
    }

    #[test]
    fn split_across_reads_is_timed_by_its_first_byte() {
        let (ev, _) = parse_all(&[
            ("da", 10),
            ("ta: {\"x\"", 20),
            (":1}\n", 30),
            ("\nda", 40),
            ("ta: two\n\n", 50),
        ]);
        assert_eq!(ev.len(), 2);
        assert_eq!(
            ev[0],
            SseEvent {
                at_ns: 10,
                data: "{\"x\":1}".into()
            }
        );
        assert_eq!(
            ev[1],
            SseEvent {
                at_ns: 40,
                data: "two".into()
            }
        );
    }

    #[test]
    fn split_between_cr_and_lf_and_byte_by_byte() {
        let text = "data: hello\r\n\r\n: ping\r\ndata: [DONE]\r\n\r\n";
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for (i, b) in text.as_bytes().iter().enumerate() {
            p.feed(&[*b], i as u64, &mut out).unwrap();
        }
        p.finish(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].data, "hello");
        assert_eq!(out[0].at_ns, 0);
        assert_eq!(out[1].data, "[DONE]");
        assert_eq!(out[1].at_ns, 23);
        assert_eq!(p.comments, 1);
    }

    #[test]
    fn comments_other_fields_and_multiline_data() {
        let (ev, comments) = parse_all(&[(
            ": keep-alive\n\nevent: x\nid: 3\ndata: l1\ndata:l2\nretry: 5\n\n",
            1,
        )]);
        assert_eq!(comments, 1);
        assert_eq!(
            ev,
            vec![SseEvent {
                at_ns: 1,
                data: "l1\nl2".into()
            }]
        );
    }

    #[test]
    fn missing_final_blank_line_is_still_delivered() {
        let (ev, _) = parse_all(&[("data: {\"a\":1}\n\ndata: last", 1)]);
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[1].data, "last");
    }

    #[test]
    fn classifies_openai_chunks() {
        assert_eq!(classify("[DONE]"), Chunk::Done);
        assert_eq!(
            classify(r#"{"choices":[{"delta":{"role":"assistant"}}]}"#),
            Chunk::Data {
                tokens: 0,
                usage: None,
                finish: None
            }
        );
        assert_eq!(
            classify(r#"{"choices":[{"delta":{"content":""}}]}"#),
            Chunk::Data {
                tokens: 0,
                usage: None,
                finish: None
            }
        );
        assert_eq!(
            classify(r#"{"choices":[{"delta":{"content":"Hi"}}]}"#),
            Chunk::Data {
                tokens: 1,
                usage: None,
                finish: None
            }
        );
        assert_eq!(
            classify(r#"{"choices":[{"text":" the","index":0}]}"#),
            Chunk::Data {
                tokens: 1,
                usage: None,
                finish: None
            }
        );
        assert_eq!(
            classify(r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":9}}"#),
            Chunk::Data {
                tokens: 0,
                usage: Some(9),
                finish: None
            }
        );
        assert_eq!(
            classify(r#"{"error":{"message":"overloaded","code":503}}"#),
            Chunk::Error("overloaded".into())
        );
        assert_eq!(classify("not json"), Chunk::Unparsable);
    }

    fn fold(events: &[(&str, u64)]) -> (TokenTimes, Vec<u64>) {
        let mut t = TokenTimes::default();
        let mut gaps = Vec::new();
        for (d, at) in events {
            let ev = SseEvent {
                at_ns: *at,
                data: d.to_string(),
            };
            t.event(&ev, |g| gaps.push(g));
        }
        (t, gaps)
    }

    #[test]
    fn role_only_first_chunk_is_not_the_first_token() {
        let (t, gaps) = fold(&[
            (r#"{"choices":[{"delta":{"role":"assistant"}}]}"#, 100),
            (r#"{"choices":[{"delta":{"content":"a"}}]}"#, 250),
            (r#"{"choices":[{"delta":{"content":"b"}}]}"#, 300),
            (r#"{"choices":[{"delta":{"content":"c"}}]}"#, 450),
            ("[DONE]", 460),
        ]);
        assert_eq!(t.first_token_ns, Some(250));
        assert_eq!(t.last_token_ns, Some(450));
        assert_eq!(t.output_tokens(), 3);
        assert_eq!(t.tpot_ns(), Some(100));
        assert_eq!(gaps, vec![50, 150]);
        assert!(t.done);
        assert!(t.error.is_none());
    }

    #[test]
    fn usage_overrides_event_count_and_in_band_error_is_kept() {
        let (t, _) = fold(&[
            (r#"{"choices":[{"text":"ab"}]}"#, 10),
            (r#"{"choices":[{"text":"cd"}]}"#, 40),
            (r#"{"choices":[],"usage":{"completion_tokens":4}}"#, 41),
            (r#"{"error":{"message":"boom"}}"#, 50),
        ]);
        assert_eq!(t.output_tokens(), 4);
        assert_eq!(t.tpot_ns(), Some(10));
        assert_eq!(t.error.as_deref(), Some("boom"));
        assert!(!t.done, "no [DONE] was sent");
    }

    #[test]
    fn single_token_has_no_tpot() {
        let (t, gaps) = fold(&[(r#"{"choices":[{"text":"x"}]}"#, 10)]);
        assert_eq!(t.tpot_ns(), None);
        assert!(gaps.is_empty());
    }
}
