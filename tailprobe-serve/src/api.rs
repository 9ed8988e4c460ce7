//! The OpenAI-compatible request and response shapes (pure: JSON in, JSON
//! out, errors with the message a client sees).

use serde_json::{json, Value};

use super::pool::Tok;

/// Which endpoint a model request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Completions,
    Chat,
}

impl Endpoint {
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Completions => "completions",
            Endpoint::Chat => "chat_completions",
        }
    }
}

/// A validated model request.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub model: String,
    /// The request named its model (else `model` is the default).
    pub model_given: bool,
    pub prompt: String,
    pub max_tokens: u32,
    pub stream: bool,
    pub include_usage: bool,
}

/// Parse and validate a request body; the error is the message for a 400.
pub fn parse(
    ep: Endpoint,
    body: &[u8],
    default_model: &str,
    max_tokens_limit: u32,
) -> Result<Parsed, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| format!("request body is not valid JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| "request body must be a JSON object".to_string())?;
    let (model, model_given) = match obj.get("model") {
        None | Some(Value::Null) => (default_model.to_string(), false),
        Some(Value::String(s)) => (s.clone(), true),
        Some(_) => return Err("'model' must be a string".into()),
    };
    let prompt = match ep {
        Endpoint::Completions => match obj.get("prompt") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(a)) => {
                let mut parts = Vec::new();
                for p in a {
                    match p {
                        Value::String(s) => parts.push(s.clone()),
                        // Token ids: one word each.
                        Value::Number(n) => parts.push(format!("t{n}")),
                        _ => return Err("'prompt' array must hold strings or token ids".into()),
                    }
                }
                parts.join(" ")
            }
            None => return Err("'prompt' is required".into()),
            Some(_) => return Err("'prompt' must be a string or an array".into()),
        },
        Endpoint::Chat => {
            let msgs = obj
                .get("messages")
                .and_then(Value::as_array)
                .ok_or_else(|| "'messages' must be a non-empty array".to_string())?;
            if msgs.is_empty() {
                return Err("'messages' must be a non-empty array".into());
            }
            let mut parts = Vec::new();
            for m in msgs {
                let Some(m) = m.as_object() else {
                    return Err("each message must be an object".into());
                };
                if !m.get("role").is_some_and(Value::is_string) {
                    return Err("each message needs a string 'role'".into());
                }
                match m.get("content") {
                    Some(Value::String(s)) => parts.push(s.clone()),
                    Some(Value::Array(a)) => {
                        for p in a {
                            if let Some(t) = p.get("text").and_then(Value::as_str) {
                                parts.push(t.to_string());
                            }
                        }
                    }
                    None | Some(Value::Null) => {}
                    Some(_) => return Err("message 'content' must be a string or parts".into()),
                }
            }
            parts.join(" ")
        }
    };
    let max_tokens = match obj
        .get("max_tokens")
        .or_else(|| obj.get("max_completion_tokens"))
    {
        None | Some(Value::Null) => 16,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 && n <= u64::from(max_tokens_limit) => n as u32,
            _ => {
                return Err(format!(
                    "'max_tokens' must be an integer from 1 to {max_tokens_limit}"
                ))
            }
        },
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("'stream' must be a boolean".into()),
    };
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok(Parsed {
        model,
        model_given,
        prompt,
        max_tokens,
        stream,
        include_usage,
    })
}

/// A JSON error body, OpenAI style.
pub fn error_body(status: u16, message: &str) -> String {
    let kind = match status {
        400 | 404 | 405 | 413 | 415 => "invalid_request_error",
        503 => "overloaded_error",
        _ => "server_error",
    };
    json!({"error": {"message": message, "type": kind, "code": status}}).to_string()
}

/// The answer to a request for a model the server does not serve: 404 with
/// the body vLLM gives (`NotFoundError`, `param: "model"`).
pub fn model_not_found_body(model: &str) -> String {
    json!({"error": {
        "message": format!("The model `{model}` does not exist."),
        "type": "NotFoundError", "param": "model", "code": 404,
    }})
    .to_string()
}

/// The model a request names, checked against the served names: `None`
/// when the server serves named models and this is not one of them. A
/// request that names none gets the first served name.
pub fn check_model<'a>(asked: Option<&'a str>, served: &'a [String]) -> Option<&'a str> {
    match (asked, served.first()) {
        (None, Some(first)) => Some(first),
        (Some(m), Some(_)) if !served.iter().any(|s| s == m) => None,
        (Some(m), _) => Some(m),
        (None, None) => None,
    }
}

/// Formats the chunks of one streamed answer.
#[derive(Debug, Clone)]
pub struct Chunker {
    pub ep: Endpoint,
    pub id: String,
    pub model: String,
    pub created: u64,
    pub include_usage: bool,
}

impl Chunker {
    fn base(&self, choice: Value, usage: Option<Value>) -> String {
        let object = match self.ep {
            Endpoint::Completions => "text_completion",
            Endpoint::Chat => "chat.completion.chunk",
        };
        let mut v = json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model,
            "choices": if choice.is_null() { json!([]) } else { json!([choice]) },
        });
        if let Some(u) = usage {
            v["usage"] = u;
        }
        format!("data: {v}\n\n")
    }

    /// The role-only first chunk of a chat stream (none for completions).
    pub fn start(&self) -> Option<String> {
        (self.ep == Endpoint::Chat).then(|| {
            self.base(
                json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}),
                None,
            )
        })
    }

    pub fn token(&self, text: &str) -> String {
        let choice = match self.ep {
            Endpoint::Completions => json!({"index": 0, "text": text, "finish_reason": null}),
            Endpoint::Chat => {
                json!({"index": 0, "delta": {"content": text}, "finish_reason": null})
            }
        };
        self.base(choice, None)
    }

    /// Finish chunk, the usage chunk if asked for, and `[DONE]`.
    pub fn end(&self, prompt_tokens: u64, completion_tokens: u64) -> String {
        let choice = match self.ep {
            Endpoint::Completions => json!({"index": 0, "text": "", "finish_reason": "length"}),
            Endpoint::Chat => json!({"index": 0, "delta": {}, "finish_reason": "length"}),
        };
        let mut s = self.base(choice, None);
        if self.include_usage {
            s.push_str(&self.base(Value::Null, Some(usage(prompt_tokens, completion_tokens))));
        }
        s.push_str("data: [DONE]\n\n");
        s
    }

    /// An in-band error (the worker stopped without finishing).
    pub fn error(&self, message: &str) -> String {
        format!("data: {}\n\n", error_body(500, message))
    }

    /// The whole non-streamed answer.
    pub fn complete(&self, text: &str, prompt_tokens: u64, completion_tokens: u64) -> String {
        let (object, choice) = match self.ep {
            Endpoint::Completions => (
                "text_completion",
                json!({"index": 0, "text": text, "finish_reason": "length"}),
            ),
            Endpoint::Chat => (
                "chat.completion",
                json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}),
            ),
        };
        json!({
            "id": self.id, "object": object, "created": self.created, "model": self.model,
            "choices": [choice], "usage": usage(prompt_tokens, completion_tokens),
        })
        .to_string()
    }
}

fn usage(p: u64, c: u64) -> Value {
    json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c})
}

/// Text of a finished token stream (used by the non-streamed path).
pub fn collect_text(toks: &[Tok]) -> String {
    toks.iter()
        .filter_map(|t| match t {
            Tok::Token(id) => Some(super::model::detokenize(*id)),
            Tok::Done { .. } => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tailprobe_load::sse::{classify, Chunk};

    #[test]
    fn served_model_names_are_checked_like_vllm() {
        let served = vec!["a".to_string(), "b".to_string()];
        assert_eq!(check_model(Some("b"), &served), Some("b"));
        assert_eq!(check_model(None, &served), Some("a"));
        assert_eq!(check_model(Some("c"), &served), None);
        assert_eq!(check_model(Some("c"), &[]), Some("c"));
        let v: Value = serde_json::from_str(&model_not_found_body("c")).unwrap();
        assert_eq!(v["error"]["message"], "The model `c` does not exist.");
        assert_eq!(v["error"]["type"], "NotFoundError");
        assert_eq!(v["error"]["code"], 404);
    }

    #[test]
    fn validates_requests() {
        let p = parse(
            Endpoint::Completions,
            br#"{"prompt":"a b c","max_tokens":5,"stream":true}"#,
            "m",
            100,
        )
        .unwrap();
        assert_eq!(
            (p.prompt.as_str(), p.max_tokens, p.stream, p.model.as_str()),
            ("a b c", 5, true, "m")
        );
        let p = parse(Endpoint::Chat, br#"{"messages":[{"role":"user","content":"hi"}],"stream_options":{"include_usage":true}}"#, "m", 100).unwrap();
        assert_eq!(
            (p.prompt.as_str(), p.max_tokens, p.include_usage),
            ("hi", 16, true)
        );
        for bad in [
            &b"{"[..],
            b"[]",
            b"{}",
            br#"{"prompt":1}"#,
            br#"{"prompt":"x","max_tokens":0}"#,
            br#"{"prompt":"x","max_tokens":101}"#,
            br#"{"prompt":"x","max_tokens":"5"}"#,
            br#"{"prompt":"x","stream":"yes"}"#,
            br#"{"prompt":"x","model":3}"#,
        ] {
            assert!(
                parse(Endpoint::Completions, bad, "m", 100).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(parse(Endpoint::Chat, br#"{"messages":[]}"#, "m", 100).is_err());
        assert!(parse(
            Endpoint::Chat,
            br#"{"messages":[{"content":"x"}]}"#,
            "m",
            100
        )
        .is_err());
    }

    #[test]
    fn chunks_are_what_the_load_generator_understands() {
        let c = Chunker {
            ep: Endpoint::Chat,
            id: "x".into(),
            model: "m".into(),
            created: 0,
            include_usage: true,
        };
        let data = |s: String| s.trim_start_matches("data: ").trim_end().to_string();
        assert_eq!(
            classify(&data(c.start().unwrap())),
            Chunk::Data {
                tokens: 0,
                usage: None,
                finish: None
            }
        );
        assert_eq!(
            classify(&data(c.token(" hi"))),
            Chunk::Data {
                tokens: 1,
                usage: None,
                finish: None
            }
        );
        let end = c.end(3, 7);
        let parts: Vec<&str> = end.split("\n\n").filter(|s| !s.is_empty()).collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(
            classify(parts[0].trim_start_matches("data: ")),
            Chunk::Data {
                tokens: 0,
                usage: None,
                finish: Some("length".into())
            }
        );
        assert_eq!(
            classify(parts[1].trim_start_matches("data: ")),
            Chunk::Data {
                tokens: 0,
                usage: Some(7),
                finish: None
            }
        );
        assert_eq!(parts[2], "data: [DONE]");
        let v: Value = serde_json::from_str(&c.complete("ab", 1, 2)).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "ab");
        assert_eq!(v["usage"]["total_tokens"], 3);
        assert!(matches!(classify(&data(c.error("boom"))), Chunk::Error(_)));
    }
}
