//! The HTTP side: routing, limits, JSON errors, and the streamed body.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt as _, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use tokio::sync::mpsc::{self, UnboundedReceiver};

use super::{
    api::{self, Chunker, Endpoint},
    model::{detokenize, tokenize},
    pool::{Job, SubmitError, Tok},
    State,
};
use tailprobe_system::clock::monotonic_ns;

pub type RespBody = UnsyncBoxBody<Bytes, Infallible>;

fn full(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<RespBody> {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(ctype),
    );
    r
}

fn json(status: StatusCode, body: String) -> Response<RespBody> {
    full(status, "application/json", body)
}

fn error(status: StatusCode, msg: &str) -> Response<RespBody> {
    json(status, api::error_body(status.as_u16(), msg))
}

/// Handle one request. Never fails: every problem is an HTTP answer.
pub async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let path = req.uri().path().to_string();
    let (endpoint, resp) = match (req.method(), path.as_str()) {
        (&Method::GET, "/health") => ("health", json(StatusCode::OK, r#"{"status":"ok"}"#.into())),
        (&Method::GET, "/metrics") => (
            "metrics",
            full(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                state.metrics.render(state.pool.size),
            ),
        ),
        (&Method::GET, "/debug/requests") => ("debug", debug_requests(&state, req.uri().query())),
        (&Method::GET, "/v1/models") => ("models", models(&state)),
        (&Method::POST, "/v1/completions") => (
            "completions",
            model(&state, Endpoint::Completions, req).await,
        ),
        (&Method::POST, "/v1/chat/completions") => {
            ("chat_completions", model(&state, Endpoint::Chat, req).await)
        }
        (
            _,
            "/health"
            | "/metrics"
            | "/debug/requests"
            | "/v1/models"
            | "/v1/completions"
            | "/v1/chat/completions",
        ) => (
            "other",
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this path",
            ),
        ),
        _ => (
            "other",
            error(StatusCode::NOT_FOUND, &format!("no such endpoint: {path}")),
        ),
    };
    state.metrics.request(endpoint, resp.status().as_u16());
    Ok(resp)
}

/// `GET /v1/models`: the served names, else the default name.
fn models(state: &State) -> Response<RespBody> {
    let names = match state.opts.served_model_names.as_slice() {
        [] => std::slice::from_ref(&state.opts.model_name),
        n => n,
    };
    let data: Vec<serde_json::Value> = names
        .iter()
        .map(|n| serde_json::json!({"id": n, "object": "model", "owned_by": "tailprobe"}))
        .collect();
    json(
        StatusCode::OK,
        serde_json::json!({"object": "list", "data": data}).to_string(),
    )
}

fn debug_requests(state: &State, query: Option<&str>) -> Response<RespBody> {
    let after = query.and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("after="))
            .and_then(|v| v.parse().ok())
    });
    let workers = state
        .pool
        .workers
        .lock()
        .map(|w| w.clone())
        .unwrap_or_default();
    let body = serde_json::json!({
        "pid": std::process::id(),
        "clock": "CLOCK_MONOTONIC ns",
        "workers": workers,
        "requests": state.pool.journal.recent(after),
    });
    json(StatusCode::OK, body.to_string())
}

/// The request body, within the size and time limits, or the error
/// answer.
async fn read_body(state: &State, req: Request<Incoming>) -> Result<Bytes, Response<RespBody>> {
    let max = state.opts.max_body;
    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > max as u64 {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body of {len} bytes is over the limit of {max} bytes"),
            ));
        }
    }
    let read = Limited::new(req.into_body(), max).collect();
    match tokio::time::timeout(state.opts.body_timeout, read).await {
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            &format!(
                "the request body did not arrive within {:?}",
                state.opts.body_timeout
            ),
        )),
        Ok(Ok(b)) => Ok(b.to_bytes()),
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return Err(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("request body is over the limit of {max} bytes"),
                ));
            }
            Err(error(
                StatusCode::BAD_REQUEST,
                "could not read the request body",
            ))
        }
    }
}

async fn model(state: &Arc<State>, ep: Endpoint, req: Request<Incoming>) -> Response<RespBody> {
    let arrived = monotonic_ns();
    let body = match read_body(state, req).await {
        Ok(b) => b,
        Err(answer) => return answer,
    };
    let served = &state.opts.served_model_names;
    let default_model = served.first().unwrap_or(&state.opts.model_name);
    let mut p = match api::parse(ep, &body, default_model, state.opts.max_tokens_limit) {
        Ok(p) => p,
        Err(m) => return error(StatusCode::BAD_REQUEST, &m),
    };
    if !served.is_empty() {
        match api::check_model(p.model_given.then_some(p.model.as_str()), served) {
            Some(m) => p.model = m.to_string(),
            None => {
                return json(StatusCode::NOT_FOUND, api::model_not_found_body(&p.model));
            }
        }
    }
    let prompt = tokenize(&p.prompt);
    let cap = state.opts.max_prompt_tokens;
    if prompt.len() > cap {
        return error(
            StatusCode::BAD_REQUEST,
            &format!(
                "the prompt has {} tokens; the limit is {cap} (tailprobe serve --max-prompt-tokens)",
                prompt.len()
            ),
        );
    }
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::unbounded_channel();
    let job = Job {
        id,
        endpoint: ep.name(),
        stream: p.stream,
        prompt,
        max_tokens: p.max_tokens,
        queued_ns: arrived,
        tx,
    };
    match state.pool.submit(job) {
        Ok(()) => {}
        Err(SubmitError::Full) => {
            state
                .metrics
                .rejected_queue_full
                .fetch_add(1, Ordering::Relaxed);
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the request queue is full; retry later",
            );
        }
        Err(SubmitError::Closed) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down",
            )
        }
    }
    let chunker = Chunker {
        ep,
        id: format!("cmpl-{id}"),
        model: p.model.clone(),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        include_usage: p.include_usage,
    };
    let guard = InFlight::new(state.clone(), arrived);
    answer(p.stream, chunker, rx, guard).await
}

/// The answer to a submitted job: a token stream (SSE) or, when the job is
/// done, one JSON body.
async fn answer(
    stream: bool,
    chunker: Chunker,
    mut rx: mpsc::UnboundedReceiver<Tok>,
    guard: InFlight,
) -> Response<RespBody> {
    if stream {
        let mut r = Response::new(
            SseBody {
                rx,
                pending: chunker.start().map(Bytes::from),
                chunker,
                done: false,
                _guard: guard,
            }
            .boxed_unsync(),
        );
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/event-stream"),
        );
        h.insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-cache"),
        );
        return r;
    }
    let mut toks = Vec::new();
    let mut usage = None;
    while let Some(t) = rx.recv().await {
        if let Tok::Done {
            prompt_tokens,
            completion_tokens,
        } = t
        {
            usage = Some((prompt_tokens, completion_tokens));
        } else {
            toks.push(t);
        }
    }
    drop(guard);
    match usage {
        Some((pt, ct)) => json(
            StatusCode::OK,
            chunker.complete(&api::collect_text(&toks), pt, ct),
        ),
        None => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the model stopped before finishing",
        ),
    }
}

/// Counts a model request in flight and its latency when it ends (dropped
/// with the response body, so a stream counts until its last byte).
struct InFlight {
    state: Arc<State>,
    arrived: u64,
}

impl InFlight {
    fn new(state: Arc<State>, arrived: u64) -> Self {
        state.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight { state, arrived }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.state
            .metrics
            .latency(monotonic_ns().saturating_sub(self.arrived));
    }
}

/// The streamed answer: one SSE event per token, as the worker makes them.
/// Dropping it (client gone) closes the channel, and the worker stops.
struct SseBody {
    rx: UnboundedReceiver<Tok>,
    chunker: Chunker,
    pending: Option<Bytes>,
    done: bool,
    _guard: InFlight,
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(b) = this.pending.take() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        if this.done {
            return Poll::Ready(None);
        }
        // Batch every token already made into one frame.
        let mut out = String::new();
        loop {
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(Tok::Token(t))) => {
                    out.push_str(&this.chunker.token(detokenize(t)))
                }
                Poll::Ready(Some(Tok::Done {
                    prompt_tokens,
                    completion_tokens,
                })) => {
                    out.push_str(&this.chunker.end(prompt_tokens, completion_tokens));
                    this.done = true;
                    break;
                }
                Poll::Ready(None) => {
                    out.push_str(&this.chunker.error("the model stopped before finishing"));
                    this.done = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        if out.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))))
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_none()
    }
}
