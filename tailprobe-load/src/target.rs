//! What to send: the parsed URL, method, headers and body (from a file, a
//! template with `{{id}}`, or the OpenAI-style default).

use std::net::{SocketAddr, ToSocketAddrs};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::Full;

/// Error in what to send, naming the part at fault.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("bad URL {0:?}: expected http://HOST[:PORT]/PATH")]
    BadUrl(String),
    #[error("{0:?} uses https, which tailprobe load does not speak; use http://")]
    Https(String),
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("bad header {0:?}: expected \"Name: value\"")]
    BadHeader(String),
    #[error("bad method {0:?}")]
    BadMethod(String),
}

/// Which API the requests speak: an OpenAI-compatible endpoint, or plain
/// HTTP (latency and status only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    Completions,
    Chat,
    Embeddings,
    Plain,
}

impl Api {
    /// Recognise the OpenAI endpoint from the URL path (`None`: not one).
    pub fn from_path(path: &str) -> Option<Api> {
        let p = path.split('?').next().unwrap_or(path).trim_end_matches('/');
        if p.ends_with("/chat/completions") {
            Some(Api::Chat)
        } else if p.ends_with("/completions") {
            Some(Api::Completions)
        } else if p.ends_with("/embeddings") {
            Some(Api::Embeddings)
        } else {
            None
        }
    }

    /// An OpenAI-compatible endpoint (token metrics, completeness checks).
    pub fn is_openai(self) -> bool {
        self != Api::Plain
    }

    /// Whether answers carry generated tokens (completions and chat).
    pub fn generates(self) -> bool {
        matches!(self, Api::Completions | Api::Chat)
    }

    /// The endpoint's usual path, used when the URL names none.
    pub fn default_path(self) -> Option<&'static str> {
        match self {
            Api::Completions => Some("/v1/completions"),
            Api::Chat => Some("/v1/chat/completions"),
            Api::Embeddings => Some("/v1/embeddings"),
            Api::Plain => None,
        }
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Api::Completions => "completions",
            Api::Chat => "chat",
            Api::Embeddings => "embeddings",
            Api::Plain => "plain",
        })
    }
}

/// The body of an OpenAI-style request when none is given.
pub fn openai_body(
    api: Api,
    model: &str,
    prompt_tokens: u32,
    max_tokens: u32,
    stream: bool,
) -> String {
    openai_body_with(api, model, prompt_tokens, max_tokens, stream, false)
}

/// `openai_body`, and with `ignore_eos` also `"ignore_eos": true` and
/// `"min_tokens": max_tokens` (vLLM's extensions that make the model
/// generate exactly `max_tokens`; servers without them may reject or
/// ignore them).
pub fn openai_body_with(
    api: Api,
    model: &str,
    prompt_tokens: u32,
    max_tokens: u32,
    stream: bool,
    ignore_eos: bool,
) -> String {
    // A deterministic prompt of `prompt_tokens` whitespace-separated words.
    const WORDS: [&str; 8] = [
        "the",
        "quick",
        "model",
        "reads",
        "every",
        "token",
        "before",
        "answering",
    ];
    let prompt: Vec<&str> = (0..prompt_tokens as usize)
        .map(|i| WORDS[i % WORDS.len()])
        .collect();
    let prompt = prompt.join(" ");
    let mut v = match api {
        Api::Completions => serde_json::json!({
            "model": model, "prompt": prompt, "max_tokens": max_tokens, "stream": stream,
        }),
        Api::Chat => serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "stream": stream,
        }),
        Api::Embeddings => return serde_json::json!({"model": model, "input": prompt}).to_string(),
        Api::Plain => return String::new(),
    };
    if ignore_eos {
        v["ignore_eos"] = serde_json::json!(true);
        v["min_tokens"] = serde_json::json!(max_tokens);
    }
    if stream {
        v["stream_options"] = serde_json::json!({"include_usage": true});
    }
    v.to_string()
}

/// A body with `{{id}}` placeholders, split once so each request only
/// concatenates.
#[derive(Debug, Clone)]
pub struct BodyTemplate {
    parts: Vec<Bytes>,
}

impl BodyTemplate {
    pub fn new(text: &[u8]) -> Self {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(i) = find(rest, b"{{id}}") {
            parts.push(Bytes::copy_from_slice(&rest[..i]));
            rest = &rest[i + 6..];
        }
        parts.push(Bytes::copy_from_slice(rest));
        BodyTemplate { parts }
    }

    pub fn render(&self, id: u64) -> Bytes {
        if self.parts.len() == 1 {
            return self.parts[0].clone();
        }
        let id = id.to_string();
        let mut b = BytesMut::new();
        for (i, p) in self.parts.iter().enumerate() {
            if i > 0 {
                b.extend_from_slice(id.as_bytes());
            }
            b.extend_from_slice(p);
        }
        b.freeze()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parse a `Name: value` header argument.
pub fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), TargetError> {
    let (n, v) = s
        .split_once(':')
        .ok_or_else(|| TargetError::BadHeader(s.to_string()))?;
    let name = HeaderName::from_bytes(n.trim().as_bytes())
        .map_err(|_| TargetError::BadHeader(s.to_string()))?;
    let value =
        HeaderValue::from_str(v.trim()).map_err(|_| TargetError::BadHeader(s.to_string()))?;
    Ok((name, value))
}

/// The request every worker sends (cheap to clone).
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
    pub path: Uri,
    pub method: Method,
    pub headers: http::HeaderMap,
    pub body: Option<BodyTemplate>,
}

impl Target {
    pub fn new(
        url: &str,
        method: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Option<BodyTemplate>,
    ) -> Result<Target, TargetError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| TargetError::BadUrl(url.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(TargetError::Https(url.to_string())),
            _ => return Err(TargetError::BadUrl(url.to_string())),
        }
        let auth = uri
            .authority()
            .ok_or_else(|| TargetError::BadUrl(url.to_string()))?
            .clone();
        let host = auth.host().trim_start_matches('[').trim_end_matches(']');
        let port = auth.port_u16().unwrap_or(80);
        let addr = (host, port)
            .to_socket_addrs()
            .map_err(|source| TargetError::Resolve {
                host: host.to_string(),
                source,
            })?
            .next()
            .ok_or_else(|| TargetError::Resolve {
                host: host.to_string(),
                source: std::io::Error::other("no address"),
            })?;
        let path: Uri = uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .parse()
            .map_err(|_| TargetError::BadUrl(url.to_string()))?;
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| TargetError::BadMethod(method.into()))?;
        let mut map = http::HeaderMap::new();
        let host_value = HeaderValue::from_str(auth.as_str())
            .map_err(|_| TargetError::BadUrl(url.to_string()))?;
        map.insert(header::HOST, host_value);
        if body.is_some() {
            map.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        for (n, v) in headers {
            map.insert(n.clone(), v.clone());
        }
        Ok(Target {
            url: url.to_string(),
            addr,
            path,
            method,
            headers: map,
            body,
        })
    }

    /// The request for request number `id`.
    pub fn request(&self, id: u64) -> Result<Request<Full<Bytes>>, http::Error> {
        let body = self.body.as_ref().map(|b| b.render(id)).unwrap_or_default();
        let mut req = Request::builder()
            .method(self.method.clone())
            .uri(self.path.clone())
            .body(Full::new(body))?;
        *req.headers_mut() = self.headers.clone();
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_substitute_the_id() {
        let t = BodyTemplate::new(br#"{"user":"u{{id}}","n":{{id}}}"#);
        assert_eq!(&t.render(7)[..], br#"{"user":"u7","n":7}"#);
        let plain = BodyTemplate::new(b"{}");
        assert_eq!(&plain.render(7)[..], b"{}");
    }

    #[test]
    fn recognises_openai_paths() {
        assert_eq!(Api::from_path("/v1/completions"), Some(Api::Completions));
        assert_eq!(Api::from_path("/v1/chat/completions/"), Some(Api::Chat));
        assert_eq!(Api::from_path("/health"), None);
    }

    #[test]
    fn default_bodies_are_valid_json() {
        let b = openai_body(Api::Chat, "m", 4, 8, true);
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["messages"][0]["content"], "the quick model reads");
        assert_eq!(v["stream_options"]["include_usage"], true);
        let b = openai_body(Api::Completions, "m", 2, 8, false);
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["prompt"], "the quick");
        assert!(v.get("stream_options").is_none());
    }

    #[test]
    fn targets_and_headers() {
        let t = Target::new("http://127.0.0.1:8080/v1/x?a=1", "POST", &[], None).unwrap();
        assert_eq!(t.addr.port(), 8080);
        assert_eq!(t.path, "/v1/x?a=1");
        assert_eq!(t.headers[header::HOST], "127.0.0.1:8080");
        assert!(matches!(
            Target::new("https://127.0.0.1/", "GET", &[], None),
            Err(TargetError::Https(_))
        ));
        assert!(Target::new("127.0.0.1", "GET", &[], None).is_err());
        let (n, v) = parse_header("Authorization: Bearer x").unwrap();
        assert_eq!(
            (n.as_str(), v.to_str().unwrap()),
            ("authorization", "Bearer x")
        );
        assert!(parse_header("nocolon").is_err());
    }
}
