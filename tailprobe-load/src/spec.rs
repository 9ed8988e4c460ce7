//! What to ask a server: one `RequestSpec` (API, model, body, headers,
//! prompt and output lengths, streaming) that `tailprobe load`, calibration
//! and every experiment cell turn into the same request, and model
//! discovery through `GET /v1/models`.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use http::{HeaderName, HeaderValue};
use serde::Serialize;

use super::{
    h1::{self, Framing},
    target::{openai_body_with, Api, BodyTemplate, Target, TargetError},
};

/// Which model the requests name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "source", content = "name", rename_all = "snake_case")]
pub enum ModelChoice {
    /// Ask the server (`GET /v1/models`, first id) before the run.
    Discover,
    /// Given by the user.
    Given(String),
    /// Found by discovery.
    Discovered(String),
}

impl ModelChoice {
    pub fn name(&self) -> Option<&str> {
        match self {
            ModelChoice::Discover => None,
            ModelChoice::Given(m) | ModelChoice::Discovered(m) => Some(m),
        }
    }
}

/// The request every worker sends, before it is bound to a URL.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestSpec {
    pub api: Api,
    pub model: ModelChoice,
    /// A body template (`{{id}}` is the request number); replaces the
    /// generated OpenAI body (then prompt/output lengths, streaming and
    /// the model are whatever the template says).
    pub body: Option<Vec<u8>>,
    /// HTTP method; `None`: POST with a body, else GET.
    pub method: Option<String>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Prompt length in words (generated body only).
    pub prompt_tokens: u32,
    /// `max_tokens` of each request (generated body only).
    pub max_tokens: u32,
    pub stream: bool,
    /// Send `ignore_eos` and `min_tokens` so the model generates exactly
    /// `max_tokens` (vLLM's extensions; others may ignore them).
    pub ignore_eos: bool,
}

impl Default for RequestSpec {
    fn default() -> Self {
        RequestSpec {
            api: Api::Completions,
            model: ModelChoice::Discover,
            body: None,
            method: None,
            headers: Vec::new(),
            prompt_tokens: 64,
            max_tokens: 32,
            stream: true,
            ignore_eos: true,
        }
    }
}

/// What a complete answer must hold, as far as the request tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Expect {
    pub api: Api,
    /// Output tokens asked for (`None`: not known, e.g. a template without
    /// `max_tokens`).
    pub max_tokens: Option<u32>,
    /// A stream was asked for (`None`: not known).
    pub stream: Option<bool>,
}

impl RequestSpec {
    /// Whether the model must be discovered before the body can be built.
    pub fn needs_discovery(&self) -> bool {
        self.api.is_openai() && self.body.is_none() && self.model == ModelChoice::Discover
    }

    /// The body to send (`None`: no body), for the chosen model.
    pub fn body_bytes(&self) -> Option<Vec<u8>> {
        if let Some(b) = &self.body {
            return Some(b.clone());
        }
        if !self.api.is_openai() {
            return None;
        }
        let model = self.model.name().unwrap_or("");
        Some(
            openai_body_with(
                self.api,
                model,
                self.prompt_tokens,
                self.max_tokens,
                self.stream,
                self.ignore_eos && self.api.generates(),
            )
            .into_bytes(),
        )
    }

    /// The request bound to `url` (a URL without a path gets the API's
    /// usual path).
    pub fn target(&self, url: &str) -> Result<Target, TargetError> {
        let url = endpoint_url(url, self.api);
        let body = self.body_bytes().map(|b| BodyTemplate::new(&b));
        let method = self
            .method
            .clone()
            .unwrap_or_else(|| if body.is_some() { "POST" } else { "GET" }.into());
        Target::new(&url, &method, &self.headers, body)
    }

    /// What a complete answer holds: from the spec, or read from the
    /// template (`max_tokens` / `max_completion_tokens`, `stream`).
    pub fn expectation(&self) -> Expect {
        match &self.body {
            None => Expect {
                api: self.api,
                max_tokens: self.api.generates().then_some(self.max_tokens),
                stream: Some(self.stream && self.api.generates()),
            },
            Some(b) => {
                let text = BodyTemplate::new(b).render(0);
                let v: Option<serde_json::Value> = serde_json::from_slice(&text).ok();
                let get = |k: &str| v.as_ref().and_then(|v| v.get(k));
                Expect {
                    api: self.api,
                    max_tokens: get("max_tokens")
                        .or_else(|| get("max_completion_tokens"))
                        .and_then(|m| m.as_u64())
                        .and_then(|m| u32::try_from(m).ok()),
                    stream: v
                        .as_ref()
                        .map(|_| get("stream").and_then(|s| s.as_bool()).unwrap_or(false)),
                }
            }
        }
    }

    /// Discover the model when needed (`GET /v1/models` on `url`'s server).
    pub fn resolve(&mut self, url: &str, timeout: Duration) -> Result<(), DiscoverError> {
        if self.needs_discovery() {
            let m = discover_model(url, &self.headers, timeout)?;
            self.model = ModelChoice::Discovered(m);
        }
        Ok(())
    }
}

/// `url`, or `url` with `api`'s usual path when it has no path.
pub fn endpoint_url(url: &str, api: Api) -> String {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return url.to_string();
    };
    match (uri.path(), api.default_path()) {
        ("" | "/", Some(p)) if uri.query().is_none() => {
            format!("{}{p}", url.trim_end_matches('/'))
        }
        _ => url.to_string(),
    }
}

/// The models URL of the server behind `url`: the path up to and including
/// `/v1`, then `/models` (`/v1/models` when the path has no `/v1`).
pub fn models_url(url: &str) -> Result<String, TargetError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| TargetError::BadUrl(url.to_string()))?;
    let (Some(scheme), Some(auth)) = (uri.scheme_str(), uri.authority()) else {
        return Err(TargetError::BadUrl(url.to_string()));
    };
    let path = uri.path();
    let prefix = match path
        .find("/v1/")
        .or_else(|| path.strip_suffix("/v1").map(|p| p.len()))
    {
        Some(i) => &path[..i + 3],
        None => "/v1",
    };
    Ok(format!("{scheme}://{auth}{prefix}/models"))
}

/// Why the model could not be discovered.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error(transparent)]
    Url(#[from] TargetError),
    #[error("cannot reach {url}: {cause}; is the server up? (give --model to skip discovery)")]
    Unreachable { url: String, cause: std::io::Error },
    #[error("GET {url} answered HTTP {status}: {answer}; give the model with --model")]
    Status {
        url: String,
        status: u16,
        answer: String,
    },
    #[error("GET {url} did not answer a model list ({why}); give the model with --model")]
    BadAnswer { url: String, why: String },
    #[error("the server at {url} lists no models; give the model with --model")]
    NoModels { url: String },
}

/// Largest `/v1/models` answer read.
const MAX_MODELS_ANSWER: usize = 4 << 20;

/// The first model id `GET /v1/models` lists on `url`'s server.
pub fn discover_model(
    url: &str,
    headers: &[(HeaderName, HeaderValue)],
    timeout: Duration,
) -> Result<String, DiscoverError> {
    let murl = models_url(url)?;
    let t = Target::new(&murl, "GET", headers, None)?;
    let (status, body) = get(&t, timeout).map_err(|cause| DiscoverError::Unreachable {
        url: murl.clone(),
        cause,
    })?;
    if !(200..300).contains(&status) {
        return Err(DiscoverError::Status {
            url: murl,
            status,
            answer: quote_answer(&body),
        });
    }
    let bad = |why: &str| DiscoverError::BadAnswer {
        url: murl.clone(),
        why: why.to_string(),
    };
    let v: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| bad(&format!("not JSON: {e}")))?;
    let data = v
        .get("data")
        .and_then(|d| d.as_array())
        .ok_or_else(|| bad("no \"data\" array"))?;
    match data.first() {
        None => Err(DiscoverError::NoModels { url: murl }),
        Some(m) => m
            .get("id")
            .and_then(|i| i.as_str())
            .map(str::to_string)
            .ok_or_else(|| bad("the first entry has no string \"id\"")),
    }
}

/// A server's answer, shortened for a message: an OpenAI-style error's
/// message, else the body's start.
pub fn quote_answer(body: &[u8]) -> String {
    let msg = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let e = v.get("error")?;
            e.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
                .or_else(|| e.as_str().map(str::to_string))
        })
        .or_else(|| {
            serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("message")?.as_str().map(str::to_string))
        });
    let text = msg.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    let mut short: String = text.chars().take(300).collect();
    if short.len() < text.len() {
        short.push_str("...");
    }
    format!("{short:?}")
}

/// One blocking GET with `Connection: close`: (status, body).
pub fn get(t: &Target, timeout: Duration) -> std::io::Result<(u16, Vec<u8>)> {
    let deadline = Instant::now() + timeout;
    let mut s = TcpStream::connect_timeout(&t.addr, timeout)?;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))
    };
    s.set_write_timeout(Some(left()?))?;
    let mut req = format!("GET {} HTTP/1.1\r\n", t.path);
    for (n, v) in &t.headers {
        req.push_str(n.as_str());
        req.push_str(": ");
        req.push_str(&String::from_utf8_lossy(v.as_bytes()));
        req.push_str("\r\n");
    }
    req.push_str("connection: close\r\naccept: application/json\r\n\r\n");
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        s.set_read_timeout(Some(left()?))?;
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if raw.len() > MAX_MODELS_ANSWER {
            return Err(std::io::Error::other("the answer is too large"));
        }
        if complete(&raw) {
            break;
        }
    }
    decode(&raw)
}

/// Whether `raw` holds a whole answer (head and framed body).
fn complete(raw: &[u8]) -> bool {
    decode_framed(raw).is_some_and(|r| r.is_ok())
}

fn decode(raw: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    match decode_framed(raw) {
        Some(r) => r,
        // Read to the close: whatever came is the body.
        None => match h1::parse_head(raw, false) {
            Ok(Some((h, n))) if h.framing == Framing::UntilClose => {
                Ok((h.status, raw[n..].to_vec()))
            }
            Ok(_) => Err(std::io::Error::other("the answer ended early")),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        },
    }
}

/// `None` while incomplete (or read-until-close).
fn decode_framed(raw: &[u8]) -> Option<std::io::Result<(u16, Vec<u8>)>> {
    let (head, n) = match h1::parse_head(raw, false) {
        Ok(Some(x)) => x,
        Ok(None) => return None,
        Err(e) => return Some(Err(std::io::Error::other(e.to_string()))),
    };
    let rest = &raw[n..];
    match head.framing {
        Framing::Empty => Some(Ok((head.status, Vec::new()))),
        Framing::Length(l) => {
            (rest.len() as u64 >= l).then(|| Ok((head.status, rest[..l as usize].to_vec())))
        }
        Framing::Chunked => {
            let mut dec = h1::Chunked::default();
            let mut body = Vec::new();
            match dec.decode(rest, |d| {
                body.extend_from_slice(d);
                Ok(())
            }) {
                Err(e) => Some(Err(std::io::Error::other(e.to_string()))),
                Ok(_) => dec.done().then_some(Ok((head.status, body))),
            }
        }
        Framing::UntilClose => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_url_from_any_endpoint() {
        let m = |u| models_url(u).unwrap();
        assert_eq!(m("http://h:8000/v1/completions"), "http://h:8000/v1/models");
        assert_eq!(
            m("http://h:8000/v1/chat/completions"),
            "http://h:8000/v1/models"
        );
        assert_eq!(
            m("http://h:8000/api/v1/embeddings"),
            "http://h:8000/api/v1/models"
        );
        assert_eq!(m("http://h:8000/v1"), "http://h:8000/v1/models");
        assert_eq!(m("http://h:8000"), "http://h:8000/v1/models");
        assert_eq!(m("http://h/generate"), "http://h/v1/models");
        assert!(models_url("h:8000").is_err());
    }

    #[test]
    fn endpoint_url_fills_a_missing_path() {
        assert_eq!(
            endpoint_url("http://h:1", Api::Chat),
            "http://h:1/v1/chat/completions"
        );
        assert_eq!(
            endpoint_url("http://h:1/", Api::Completions),
            "http://h:1/v1/completions"
        );
        assert_eq!(
            endpoint_url("http://h:1/x", Api::Completions),
            "http://h:1/x"
        );
        assert_eq!(endpoint_url("http://h:1/", Api::Plain), "http://h:1/");
    }

    #[test]
    fn generated_bodies_and_expectations() {
        let mut s = RequestSpec {
            model: ModelChoice::Given("m1".into()),
            max_tokens: 7,
            prompt_tokens: 3,
            ..RequestSpec::default()
        };
        assert!(!s.needs_discovery());
        let v: serde_json::Value = serde_json::from_slice(&s.body_bytes().unwrap()).unwrap();
        assert_eq!(v["model"], "m1");
        assert_eq!(v["max_tokens"], 7);
        assert_eq!(v["min_tokens"], 7);
        assert_eq!(v["ignore_eos"], true);
        assert_eq!(v["stream"], true);
        assert_eq!(
            s.expectation(),
            Expect {
                api: Api::Completions,
                max_tokens: Some(7),
                stream: Some(true)
            }
        );
        s.ignore_eos = false;
        s.api = Api::Embeddings;
        let v: serde_json::Value = serde_json::from_slice(&s.body_bytes().unwrap()).unwrap();
        assert_eq!(v["input"], "the quick model");
        assert!(v.get("ignore_eos").is_none());
        assert_eq!(s.expectation().max_tokens, None);
        s.api = Api::Plain;
        assert!(s.body_bytes().is_none());
        let t = s.target("http://127.0.0.1:9/health").unwrap();
        assert_eq!(t.method, http::Method::GET);
        s.model = ModelChoice::Discover;
        assert!(!s.needs_discovery(), "plain requests name no model");
        s.api = Api::Chat;
        assert!(s.needs_discovery());
    }

    #[test]
    fn template_expectations() {
        let s = RequestSpec {
            body: Some(
                br#"{"model":"x","max_completion_tokens":5,"stream":true,"user":"{{id}}"}"#
                    .to_vec(),
            ),
            ..RequestSpec::default()
        };
        assert!(!s.needs_discovery());
        assert_eq!(
            (s.expectation().max_tokens, s.expectation().stream),
            (Some(5), Some(true))
        );
        let s = RequestSpec {
            body: Some(b"not json".to_vec()),
            ..RequestSpec::default()
        };
        assert_eq!(
            (s.expectation().max_tokens, s.expectation().stream),
            (None, None)
        );
    }

    #[test]
    fn quoting_answers() {
        assert_eq!(
            quote_answer(br#"{"error":{"message":"The model `x` does not exist.","code":404}}"#),
            "\"The model `x` does not exist.\""
        );
        assert_eq!(
            quote_answer(br#"{"object":"error","message":"nope"}"#),
            "\"nope\""
        );
        assert_eq!(quote_answer(b"  plain text\n"), "\"plain text\"");
        assert!(quote_answer(&[b'a'; 1000]).ends_with("...\""));
    }

    #[test]
    fn decoding_answers() {
        let r = decode(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert_eq!(r, (200, b"{}".to_vec()));
        let r =
            decode(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
                .unwrap();
        assert_eq!(r, (200, b"{}".to_vec()));
        let r = decode(b"HTTP/1.1 404 x\r\n\r\nnone").unwrap();
        assert_eq!(r, (404, b"none".to_vec()));
        assert!(decode(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}").is_err());
        assert!(!complete(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}"));
    }

    /// Discovery against a one-shot loopback server.
    fn serve_once(answer: &'static [u8]) -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(answer);
        });
        format!("http://{addr}/v1/completions")
    }

    #[test]
    fn discovery() {
        let t = Duration::from_secs(5);
        let url = serve_once(
            b"HTTP/1.1 200 OK\r\ncontent-length: 48\r\n\r\n{\"object\":\"list\",\"data\":[{\"id\":\"m\"},{\"id\":\"n\"}]}",
        );
        assert_eq!(discover_model(&url, &[], t).unwrap(), "m");
        let url = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"data\":[]}");
        assert!(matches!(
            discover_model(&url, &[], t),
            Err(DiscoverError::NoModels { .. })
        ));
        let url = serve_once(
            b"HTTP/1.1 401 x\r\ncontent-length: 30\r\n\r\n{\"error\":{\"message\":\"no key\"}}",
        );
        let e = discover_model(&url, &[], t).unwrap_err().to_string();
        assert!(e.contains("401") && e.contains("no key"), "{e}");
        // Nothing listening.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let e = discover_model(&format!("http://{addr}/v1/completions"), &[], t).unwrap_err();
        assert!(matches!(e, DiscoverError::Unreachable { .. }), "{e}");
    }
}
