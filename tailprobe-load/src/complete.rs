//! Whether an answer is what was asked for (pure). A 2xx answer is
//! complete only when:
//! - a stream carried content tokens and ended with a `finish_reason` or a
//!   usage block, with no more tokens than asked, and, when the server
//!   counted them (usage), as many as asked unless the model stopped by
//!   itself (`finish_reason: "stop"`, counted as `stopped_early`);
//! - a non-streamed completion or chat answer is JSON with the text and a
//!   `finish_reason` or usage; an embeddings answer holds a vector.
//!
//! Anything else is `incomplete`, with a reason: it is counted apart from
//! successes, errors and timeouts, and never enters the latency histograms.

use super::{spec::Expect, sse::TokenTimes, target::Api};

/// The verdict on one 2xx answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Complete {
        /// Output tokens (usage when given, else token events).
        tokens: Option<u64>,
        /// Ended by the model (`finish_reason: "stop"`) before the asked
        /// tokens: complete, but the server did not honour `ignore_eos`.
        stopped_early: bool,
    },
    Incomplete(&'static str),
}

/// Reasons, as counted (`incomplete_kinds`).
pub const EMPTY_STREAM: &str = "empty_stream";
pub const NO_FINISH: &str = "no_finish_reason";
pub const FEWER_TOKENS: &str = "fewer_tokens_than_asked";
pub const MORE_TOKENS: &str = "more_tokens_than_asked";
pub const NOT_JSON: &str = "unparsable_body";
pub const NO_CONTENT: &str = "no_content";

/// Judge a streamed answer.
pub fn judge_stream(t: &TokenTimes, expect: &Expect) -> Verdict {
    if !expect.api.generates() {
        // A stream from an endpoint that generates nothing: content-free.
        return Verdict::Complete {
            tokens: t.usage_tokens,
            stopped_early: false,
        };
    }
    let tokens = t.output_tokens();
    if t.token_events == 0 && t.usage_tokens.unwrap_or(0) == 0 {
        return Verdict::Incomplete(EMPTY_STREAM);
    }
    if t.finish_reason.is_none() && t.usage_tokens.is_none() {
        return Verdict::Incomplete(NO_FINISH);
    }
    check_count(
        tokens,
        t.usage_tokens.is_some(),
        t.finish_reason.as_deref(),
        expect,
    )
}

/// Tokens against `max_tokens`. `exact`: the count is the server's own
/// (usage), not a count of events (one event may carry several tokens).
fn check_count(tokens: u64, exact: bool, finish: Option<&str>, expect: &Expect) -> Verdict {
    let Some(max) = expect.max_tokens.map(u64::from) else {
        return Verdict::Complete {
            tokens: Some(tokens),
            stopped_early: false,
        };
    };
    if tokens > max {
        return Verdict::Incomplete(MORE_TOKENS);
    }
    let stopped_early = tokens < max && finish.is_some_and(|f| f != "length");
    if tokens < max && !stopped_early && exact {
        // The server's own count is short of the ask, and the model did
        // not stop by itself: cut (e.g. at a context limit). A count of
        // events is not held against "length": one event may carry
        // several tokens.
        return Verdict::Incomplete(FEWER_TOKENS);
    }
    Verdict::Complete {
        tokens: Some(tokens),
        stopped_early,
    }
}

/// Judge a non-streamed answer's body.
pub fn judge_body(body: &[u8], expect: &Expect) -> Verdict {
    if expect.api == Api::Plain {
        return Verdict::Complete {
            tokens: None,
            stopped_early: false,
        };
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Verdict::Incomplete(NOT_JSON);
    };
    if expect.api == Api::Embeddings {
        let has_vector = v
            .get("data")
            .and_then(|d| d.as_array())
            .and_then(|d| d.first())
            .and_then(|e| e.get("embedding"))
            .is_some_and(|e| e.as_array().is_some_and(|a| !a.is_empty()) || e.is_string());
        return if has_vector {
            Verdict::Complete {
                tokens: None,
                stopped_early: false,
            }
        } else {
            Verdict::Incomplete(NO_CONTENT)
        };
    }
    let choice = v
        .get("choices")
        .and_then(|c| c.as_array())
        .and_then(|c| c.first());
    let text = choice.and_then(|c| {
        c.get("text")
            .or_else(|| c.get("message").and_then(|m| m.get("content")))
            .and_then(|t| t.as_str())
    });
    let usage = v
        .get("usage")
        .and_then(|u| u.get("completion_tokens"))
        .and_then(|t| t.as_u64());
    let finish = choice
        .and_then(|c| c.get("finish_reason"))
        .and_then(|f| f.as_str());
    if text.is_none_or(str::is_empty) {
        return Verdict::Incomplete(NO_CONTENT);
    }
    if finish.is_none() && usage.is_none() {
        return Verdict::Incomplete(NO_FINISH);
    }
    match usage {
        Some(n) => check_count(n, true, finish, expect),
        // Only the text: no count to check.
        None => Verdict::Complete {
            tokens: None,
            stopped_early: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::{SseEvent, TokenTimes};

    fn exp(max: Option<u32>) -> Expect {
        Expect {
            api: Api::Chat,
            max_tokens: max,
            stream: Some(true),
        }
    }

    fn stream(events: &[&str]) -> TokenTimes {
        let mut t = TokenTimes::default();
        for (i, d) in events.iter().enumerate() {
            let ev = SseEvent {
                at_ns: i as u64,
                data: d.to_string(),
            };
            t.event(&ev, |_| {});
        }
        t
    }

    const ROLE: &str =
        r#"{"choices":[{"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#;
    const TOK: &str = r#"{"choices":[{"delta":{"content":"x"},"finish_reason":null}]}"#;
    const END: &str = r#"{"choices":[{"delta":{},"finish_reason":"length"}]}"#;
    const STOP: &str = r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#;

    #[test]
    fn the_cut_stream_is_incomplete() {
        // What the real server sent to a request it interrupted.
        let t = stream(&[ROLE, "[DONE]"]);
        assert_eq!(
            judge_stream(&t, &exp(Some(3))),
            Verdict::Incomplete(EMPTY_STREAM)
        );
        // Cut after some content, without a finish_reason.
        let t = stream(&[ROLE, TOK, "[DONE]"]);
        assert_eq!(
            judge_stream(&t, &exp(Some(3))),
            Verdict::Incomplete(NO_FINISH)
        );
    }

    #[test]
    fn whole_streams_are_complete() {
        let t = stream(&[ROLE, TOK, TOK, TOK, END, "[DONE]"]);
        assert_eq!(
            judge_stream(&t, &exp(Some(3))),
            Verdict::Complete {
                tokens: Some(3),
                stopped_early: false
            }
        );
        // Usage alone closes a stream; its count is exact.
        let usage = r#"{"choices":[],"usage":{"completion_tokens":3}}"#;
        let t = stream(&[TOK, TOK, usage, "[DONE]"]);
        assert!(matches!(
            judge_stream(&t, &exp(Some(3))),
            Verdict::Complete {
                tokens: Some(3),
                ..
            }
        ));
        let short = r#"{"choices":[],"usage":{"completion_tokens":2}}"#;
        let t = stream(&[TOK, TOK, short]);
        assert_eq!(
            judge_stream(&t, &exp(Some(3))),
            Verdict::Incomplete(FEWER_TOKENS)
        );
        // finish_reason "length" after fewer events than asked: events may
        // batch tokens, so no exact count to hold against it.
        let t = stream(&[TOK, END]);
        assert!(matches!(
            judge_stream(&t, &exp(Some(3))),
            Verdict::Complete {
                stopped_early: false,
                ..
            }
        ));
        // The model stopped by itself: complete, flagged.
        let t = stream(&[TOK, STOP]);
        assert_eq!(
            judge_stream(&t, &exp(Some(3))),
            Verdict::Complete {
                tokens: Some(1),
                stopped_early: true
            }
        );
        // A wrapped-around count from a broken server.
        let huge = r#"{"choices":[],"usage":{"completion_tokens":18446744073709551613}}"#;
        let t = stream(&[TOK, huge]);
        assert_eq!(
            judge_stream(&t, &exp(Some(3))),
            Verdict::Incomplete(MORE_TOKENS)
        );
        // Nothing asked: any finished stream with content.
        let t = stream(&[TOK, huge]);
        assert!(matches!(
            judge_stream(&t, &exp(None)),
            Verdict::Complete { .. }
        ));
    }

    #[test]
    fn bodies() {
        let e = exp(Some(2));
        let ok = br#"{"choices":[{"message":{"role":"assistant","content":"a b"},"finish_reason":"length"}],"usage":{"completion_tokens":2}}"#;
        assert_eq!(
            judge_body(ok, &e),
            Verdict::Complete {
                tokens: Some(2),
                stopped_early: false
            }
        );
        let text = br#"{"choices":[{"text":"a b","finish_reason":"length"}]}"#;
        assert!(matches!(
            judge_body(text, &e),
            Verdict::Complete { tokens: None, .. }
        ));
        assert_eq!(judge_body(b"{oops", &e), Verdict::Incomplete(NOT_JSON));
        assert_eq!(
            judge_body(br#"{"choices":[{"text":"","finish_reason":"length"}]}"#, &e),
            Verdict::Incomplete(NO_CONTENT)
        );
        assert_eq!(
            judge_body(br#"{"choices":[{"text":"a"}]}"#, &e),
            Verdict::Incomplete(NO_FINISH)
        );
        let emb = Expect {
            api: Api::Embeddings,
            max_tokens: None,
            stream: Some(false),
        };
        assert!(matches!(
            judge_body(br#"{"data":[{"embedding":[0.1,0.2]}]}"#, &emb),
            Verdict::Complete { .. }
        ));
        assert_eq!(
            judge_body(br#"{"data":[]}"#, &emb),
            Verdict::Incomplete(NO_CONTENT)
        );
        let plain = Expect {
            api: Api::Plain,
            max_tokens: None,
            stream: None,
        };
        assert!(matches!(
            judge_body(b"anything", &plain),
            Verdict::Complete { .. }
        ));
    }
}
