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
    h1::{self, FastConn, FastRequest, H1Error},
    sse::{SseEvent, SseParser, TokenTimes},
    target::Target,
};
use tailprobe_system::clock::monotonic_ns;

/// One keep-alive connection: the request handle and the connection's
/// driver, polled by whichever task sends a request on it (no separate
/// driver task, no cross-task wake-ups; dropping it closes the socket).
pub struct HyperConn {
    sender: SendRequest<Full<Bytes>>,
    driver: Pin<Box<Connection<TokioIo<TcpStream>, Full<Bytes>>>>,
    closed: bool,
}

/// A keep-alive connection: hyper's, or the plain fast path's (`h1`).
pub enum Conn {
    Hyper(HyperConn),
    Fast(FastConn),
}

impl Conn {
    /// Whether a request can be sent on it (closed by the server since the
    /// last request, or left unusable by it: no).
    pub fn usable(&mut self) -> bool {
        match self {
            Conn::Hyper(c) => c.usable(),
            Conn::Fast(c) => c.usable(),
        }
    }
}

impl HyperConn {
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
    #[error("send: {0}")]
    SendH1(H1Error),
    #[error("reading the body: {0}")]
    BodyH1(H1Error),
    #[error("response too large: {0}")]
    TooLarge(String),
}

impl ReqError {
    pub fn kind(&self) -> &'static str {
        match self {
            ReqError::Connect(_) => "connect",
            ReqError::Handshake(_) => "handshake",
            ReqError::Build(_) => "build",
            ReqError::Send(_) | ReqError::Closed | ReqError::SendH1(_) => "send",
            ReqError::TooLarge(_) | ReqError::BodyH1(H1Error::TooLarge(_)) => "response_too_large",
            ReqError::Body(_) | ReqError::BodyH1(_) => "body",
        }
    }
}

/// Open a connection: for the fast path when `fast`, else for hyper.
pub async fn connect(addr: SocketAddr, fast: bool) -> Result<Conn, ReqError> {
    let stream = TcpStream::connect(addr).await.map_err(ReqError::Connect)?;
    let _ = stream.set_nodelay(true);
    if fast {
        return Ok(Conn::Fast(FastConn::new(stream)));
    }
    let (sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(ReqError::Handshake)?;
    Ok(Conn::Hyper(HyperConn {
        sender,
        driver: Box::pin(driver),
        closed: false,
    }))
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
    /// The body of a non-streamed OpenAI answer (at most `MAX_JSON_BODY`),
    /// or the start of a non-2xx answer (at most `ERROR_SAMPLE`), to judge
    /// or quote it.
    pub body: Vec<u8>,
}

/// Largest non-streamed OpenAI answer kept to be judged; a larger one is a
/// "response too large" error.
pub const MAX_JSON_BODY: usize = 16 << 20;
/// Bytes of an error answer kept to quote it.
pub const ERROR_SAMPLE: usize = 2048;

/// Builds the `Timing` of one answer from its head and body pieces (both
/// clients feed it).
struct Collector {
    t: Timing,
    parser: Option<SseParser>,
    tokens: TokenTimes,
    events: Vec<SseEvent>,
    parse_json: bool,
}

impl Collector {
    fn new(parse_json: bool) -> Self {
        Collector {
            t: Timing::default(),
            parser: None,
            tokens: TokenTimes::default(),
            events: Vec::new(),
            parse_json,
        }
    }

    fn head(&mut self, status: u16, sse: bool, at_ns: u64) {
        self.t.status = status;
        self.t.first_byte_ns = at_ns;
        self.parser = sse.then(SseParser::new);
    }

    fn data(&mut self, data: &[u8], at_ns: u64) -> Result<(), H1Error> {
        if data.is_empty() {
            return Ok(());
        }
        if self.t.first_body_ns.is_none() {
            self.t.first_body_ns = Some(at_ns);
        }
        self.t.bytes = self.t.bytes.saturating_add(data.len() as u64);
        let ok = (200..300).contains(&self.t.status);
        if let Some(p) = self.parser.as_mut().filter(|_| ok) {
            p.feed(data, at_ns, &mut self.events)
                .map_err(|e| H1Error::TooLarge(e.to_string()))?;
            let itl = &mut self.t.itl;
            for ev in self.events.drain(..) {
                self.tokens.event(&ev, |g| itl.push(g));
            }
        } else if !ok {
            let room = ERROR_SAMPLE.saturating_sub(self.t.body.len());
            self.t.body.extend_from_slice(&data[..data.len().min(room)]);
        } else if self.parse_json {
            if self.t.body.len() + data.len() > MAX_JSON_BODY {
                self.t.body = Vec::new();
                return Err(H1Error::TooLarge(format!(
                    "a non-streamed answer over {MAX_JSON_BODY} bytes"
                )));
            }
            self.t.body.extend_from_slice(data);
        }
        Ok(())
    }

    fn finish(mut self, end_ns: u64) -> Timing {
        self.t.end_ns = end_ns;
        if let Some(mut p) = self.parser.take() {
            p.finish(&mut self.events);
            let itl = &mut self.t.itl;
            for ev in self.events.drain(..) {
                self.tokens.event(&ev, |g| itl.push(g));
            }
            self.t.stream = Some(self.tokens);
        }
        self.t
    }
}

impl h1::Sink for Collector {
    fn head(&mut self, head: &h1::Head, at_ns: u64) {
        Collector::head(self, head.status, head.sse, at_ns);
    }
    fn data(&mut self, data: &[u8], at_ns: u64) -> Result<(), H1Error> {
        Collector::data(self, data, at_ns)
    }
}

/// Send one request on `conn` and read the whole response. `fast` is the
/// pre-built request of the fast path (used on a fast connection).
/// `parse_json` asks for the body of a non-streamed answer to be kept and
/// read for usage.
pub async fn exchange(
    conn: &mut Conn,
    target: &Target,
    fast: Option<&FastRequest>,
    id: u64,
    parse_json: bool,
) -> Result<Timing, ReqError> {
    match (conn, fast) {
        (Conn::Fast(c), Some(req)) => {
            let mut col = Collector::new(parse_json);
            match c.exchange(req, id, &mut col).await {
                Ok(end) => Ok(col.finish(end)),
                Err(h1::Failure::Send(e)) => Err(ReqError::SendH1(e)),
                Err(h1::Failure::Body(e)) => Err(ReqError::BodyH1(e)),
            }
        }
        (Conn::Hyper(c), _) => exchange_hyper(c, target, id, parse_json).await,
        (Conn::Fast(_), None) => Err(ReqError::SendH1(H1Error::Protocol(
            "no fast request for a fast connection",
        ))),
    }
}

async fn exchange_hyper(
    conn: &mut HyperConn,
    target: &Target,
    id: u64,
    parse_json: bool,
) -> Result<Timing, ReqError> {
    let HyperConn {
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
    let mut col = Collector::new(parse_json);
    let is_sse = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    col.head(resp.status().as_u16(), is_sse, monotonic_ns());
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(ReqError::Body)?;
        let now = monotonic_ns();
        if let Ok(data) = frame.into_data() {
            col.data(&data, now).map_err(|e| match e {
                H1Error::TooLarge(m) => ReqError::TooLarge(m),
                e => ReqError::BodyH1(e),
            })?;
        }
    }
    Ok(col.finish(monotonic_ns()))
}
