//! One HTTP/1.1 keep-alive connection (hyper) and the timing of one request
//! on it: sent, first byte, every streamed event, end, all CLOCK_MONOTONIC.

use std::{
    future::Future,
    net::SocketAddr,
    pin::{pin, Pin},
    task::{Context, Poll, Waker},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{
    sse::{SseEvent, SseParser, TokenTimes},
    target::Target,
};
use crate::record::monotonic_ns;

/// One keep-alive connection: the request handle and the connection's
/// driver, polled by whichever task sends a request on it (no separate
/// driver task, no cross-task wake-ups; dropping it closes the socket).
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    driver: Pin<Box<Connection<TokioIo<TcpStream>, Full<Bytes>>>>,
    closed: bool,
}

impl Conn {
    /// Whether a request can be sent on it: lets the driver notice a close
    /// by the server since the last request (one poll, no waiting).
    pub fn usable(&mut self) -> bool {
        if !self.closed {
            let mut cx = Context::from_waker(Waker::noop());
            if self.driver.as_mut().poll(&mut cx).is_ready() {
                self.closed = true;
            }
        }
        !self.closed && !self.sender.is_closed()
    }
}

/// Why a request failed; `kind()` is the key it is counted under.
#[derive(Debug, thiserror::Error)]
pub enum ReqError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("handshake: {0}")]
    Handshake(hyper::Error),
    #[error("building the request: {0}")]
    Build(http::Error),
    #[error("send: {0}")]
    Send(hyper::Error),
    #[error("reading the body: {0}")]
    Body(hyper::Error),
    #[error("the connection ended before the answer")]
    Closed,
}

impl ReqError {
    pub fn kind(&self) -> &'static str {
        match self {
            ReqError::Connect(_) => "connect",
            ReqError::Handshake(_) => "handshake",
            ReqError::Build(_) => "build",
            ReqError::Send(_) | ReqError::Closed => "send",
            ReqError::Body(_) => "body",
        }
    }
}

/// Open a connection.
pub async fn connect(addr: SocketAddr) -> Result<Conn, ReqError> {
    let stream = TcpStream::connect(addr).await.map_err(ReqError::Connect)?;
    let _ = stream.set_nodelay(true);
    let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(ReqError::Handshake)?;
    Ok(Conn {
        sender,
        driver: Box::pin(driver),
        closed: false,
    })
}

/// Everything measured about one response.
#[derive(Debug, Default, Clone)]
pub struct Timing {
    pub status: u16,
    /// Response headers parsed.
    pub first_byte_ns: u64,
    /// First body bytes (non-streamed answers: the first token).
    pub first_body_ns: Option<u64>,
    pub end_ns: u64,
    pub bytes: u64,
    /// Set when the response was an event stream.
    pub stream: Option<TokenTimes>,
    /// Inter-token gaps, ns.
    pub itl: Vec<u64>,
    /// `usage.completion_tokens` of a non-streamed OpenAI answer.
    pub usage_tokens: Option<u64>,
}

/// Send one request on `conn` and read the whole response. `parse_json`
/// asks for the body of a non-streamed answer to be kept and read for usage.
pub async fn exchange(
    conn: &mut Conn,
    target: &Target,
    id: u64,
    parse_json: bool,
) -> Result<Timing, ReqError> {
    let Conn {
        sender,
        driver,
        closed,
    } = conn;
    let mut ex = pin!(exchange_on(sender, target, id, parse_json));
    // The request and the connection in one task: poll the request, let the
    // driver write or read what it can, then the request again.
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = ex.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        if !*closed && driver.as_mut().poll(cx).is_ready() {
            *closed = true;
        }
        match ex.as_mut().poll(cx) {
            // Nothing left to drive it: the connection has ended under it.
            Poll::Pending if *closed => Poll::Ready(Err(ReqError::Closed)),
            p => p,
        }
    })
    .await
}

async fn exchange_on(
    conn: &mut SendRequest<Full<Bytes>>,
    target: &Target,
    id: u64,
    parse_json: bool,
) -> Result<Timing, ReqError> {
    let req = target.request(id).map_err(ReqError::Build)?;
    conn.ready().await.map_err(ReqError::Send)?;
    let resp = conn.send_request(req).await.map_err(ReqError::Send)?;
    let mut t = Timing {
        status: resp.status().as_u16(),
        first_byte_ns: monotonic_ns(),
        ..Timing::default()
    };
    let is_sse = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let mut body = resp.into_body();
    let mut parser = is_sse.then(SseParser::new);
    let mut tokens = TokenTimes::default();
    let mut events: Vec<SseEvent> = Vec::new();
    let mut kept: Vec<u8> = Vec::new();
    let mut itl = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(ReqError::Body)?;
        let now = monotonic_ns();
        if let Ok(data) = frame.into_data() {
            if data.is_empty() {
                continue;
            }
            if t.first_body_ns.is_none() {
                t.first_body_ns = Some(now);
            }
            t.bytes += data.len() as u64;
            if let Some(p) = parser.as_mut() {
                p.feed(&data, now, &mut events);
                for ev in events.drain(..) {
                    tokens.event(&ev, |g| itl.push(g));
                }
            } else if parse_json && kept.len() < (1 << 20) {
                kept.extend_from_slice(&data);
            }
        }
    }
    t.end_ns = monotonic_ns();
    if let Some(mut p) = parser {
        p.finish(&mut events);
        for ev in events.drain(..) {
            tokens.event(&ev, |g| itl.push(g));
        }
        t.stream = Some(tokens);
        t.itl = itl;
    } else if parse_json {
        t.usage_tokens = serde_json::from_slice::<serde_json::Value>(&kept)
            .ok()
            .and_then(|v| v.get("usage")?.get("completion_tokens")?.as_u64());
    }
    Ok(t)
}
