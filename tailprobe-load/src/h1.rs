//! A small HTTP/1.1 client for the plain (non-OpenAI) fast path: one
//! keep-alive connection, a request head built once, one reusable read
//! buffer, no channels or tasks between the request and the socket.
//!
//! It handles what a response may carry: `Content-Length`, `chunked` and
//! read-until-close bodies, 1xx interim answers, HEAD/204/304 without a
//! body, `Connection: close`, and `text/event-stream` bodies (fed to the same
//! SSE parser as the hyper path). Anything it cannot frame is an error, never
//! a guess. The OpenAI (streaming) path stays on hyper.

use bytes::Bytes;
use http::Method;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use super::target::{BodyTemplate, Target};

/// Largest response head accepted (status line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// Largest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4096;
const BUF: usize = 16 * 1024;

/// The request, serialised once: the head up to (not including) the
/// `content-length` line, and the body template.
#[derive(Debug, Clone)]
pub struct FastRequest {
    head: Bytes,
    body: Option<BodyTemplate>,
    head_only: bool,
}

impl FastRequest {
    /// The fast form of `target`, or `None` when it needs the full client
    /// (CONNECT, or headers that change the framing or the protocol).
    pub fn new(target: &Target) -> Option<FastRequest> {
        if target.method == Method::CONNECT {
            return None;
        }
        let mut head = Vec::with_capacity(256);
        head.extend_from_slice(target.method.as_str().as_bytes());
        head.push(b' ');
        let path = target.path.path_and_query().map_or("/", |p| p.as_str());
        head.extend_from_slice(path.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in &target.headers {
            if matches!(
                name.as_str(),
                "content-length" | "transfer-encoding" | "expect" | "upgrade" | "te"
            ) {
                return None;
            }
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        Some(FastRequest {
            head: Bytes::from(head),
            body: target.body.clone(),
            head_only: target.method == Method::HEAD,
        })
    }

    /// The bytes of request `id` into `out` (cleared first).
    fn write_to(&self, id: u64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.head);
        match &self.body {
            Some(t) => {
                let body = t.render(id);
                out.extend_from_slice(b"content-length: ");
                out.extend_from_slice(body.len().to_string().as_bytes());
                out.extend_from_slice(b"\r\n\r\n");
                out.extend_from_slice(&body);
            }
            None => out.extend_from_slice(b"\r\n"),
        }
    }
}

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub framing: Framing,
    pub sse: bool,
    /// The connection cannot carry another request after this answer.
    pub close: bool,
}

/// Why a response could not be read.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("malformed response: {0}")]
    Protocol(&'static str),
    #[error("the connection closed before the answer was complete")]
    Eof,
    /// A body (or one event of a stream) over its limit.
    #[error("response too large: {0}")]
    TooLarge(String),
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r'] = s {
        s = rest;
    }
    s
}

fn parse_u64(s: &[u8], radix: u32) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in s {
        let d = (c as char).to_digit(radix)? as u64;
        v = v.checked_mul(radix as u64)?.checked_add(d)?;
    }
    Some(v)
}

/// Most header lines a response head may have.
const MAX_HEADERS: usize = 64;

/// Parse a response head from the start of `buf` (with `httparse`, the
/// parser hyper uses): `Ok(None)` while it is incomplete, else the head and
/// its length in bytes. `head_request` says the request was HEAD (no body
/// whatever the headers say).
pub fn parse_head(buf: &[u8], head_request: bool) -> Result<Option<(Head, usize)>, H1Error> {
    let bad = |m| Err(H1Error::Protocol(m));
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let pos = match res.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return bad("response head too large")
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::Version) => return bad("no HTTP/1.x status line"),
        Err(httparse::Error::Status) => return bad("bad status line"),
        Err(httparse::Error::TooManyHeaders) => return bad("too many header lines"),
        Err(httparse::Error::HeaderName | httparse::Error::HeaderValue) => {
            return bad("bad header line")
        }
        Err(_) => return bad("bad response head"),
    };
    if pos > MAX_HEAD {
        return bad("response head too large");
    }
    let (Some(version), Some(code)) = (res.version, res.code) else {
        return bad("no HTTP/1.x status line");
    };
    let http10 = version == 0;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut has_te = false;
    let mut sse = false;
    let mut close = false;
    let mut keep_alive = false;
    for h in res.headers.iter() {
        let (name, value) = (h.name, trim(h.value));
        if name.eq_ignore_ascii_case("content-length") {
            let n = parse_u64(value, 10).ok_or(H1Error::Protocol("bad content-length"))?;
            if length.is_some_and(|l| l != n) {
                return bad("conflicting content-length");
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            has_te = true;
            let last = value.rsplit(|&b| b == b',').next().map(trim).unwrap_or(b"");
            chunked = last.eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case("content-type") {
            sse = value.len() >= 17 && value[..17].eq_ignore_ascii_case(b"text/event-stream");
        } else if name.eq_ignore_ascii_case("connection") {
            for tok in value.split(|&b| b == b',').map(trim) {
                close |= tok.eq_ignore_ascii_case(b"close");
                keep_alive |= tok.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    if code == 101 {
        return bad("protocol switch is not supported");
    }
    let close = close || (http10 && !keep_alive);
    let framing = if head_request || (100..200).contains(&code) || code == 204 || code == 304 {
        Framing::Empty
    } else if has_te {
        if !chunked {
            // A transfer coding other than chunked last: the body runs to
            // the close.
            Framing::UntilClose
        } else {
            Framing::Chunked
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    let close = close || framing == Framing::UntilClose;
    Ok(Some((
        Head {
            status: code,
            framing,
            sse,
            close,
        },
        pos,
    )))
}

/// Incremental decoder of a `chunked` body.
#[derive(Debug, Default)]
pub struct Chunked {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

impl Chunked {
    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decode from `input`, handing each piece of body data to `data` (an
    /// error from it stops the decoding); returns the bytes consumed (an
    /// incomplete line is left for later).
    pub fn decode(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(&[u8]) -> Result<(), H1Error>,
    ) -> Result<usize, H1Error> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match self.state {
                ChunkState::Done => return Ok(pos),
                ChunkState::Data(n) => {
                    if rest.is_empty() {
                        return Ok(pos);
                    }
                    let k = (n.min(rest.len() as u64)) as usize;
                    data(&rest[..k])?;
                    pos += k;
                    self.state = if n == k as u64 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(n - k as u64)
                    };
                }
                ChunkState::Size | ChunkState::DataEnd | ChunkState::Trailers => {
                    let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                        if rest.len() > MAX_LINE {
                            return Err(H1Error::Protocol("chunk line too long"));
                        }
                        return Ok(pos);
                    };
                    let line = &rest[..nl];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    pos += nl + 1;
                    self.state = match self.state {
                        ChunkState::DataEnd if line.is_empty() => ChunkState::Size,
                        ChunkState::DataEnd => {
                            return Err(H1Error::Protocol("no CRLF after chunk data"))
                        }
                        ChunkState::Trailers if line.is_empty() => ChunkState::Done,
                        ChunkState::Trailers => ChunkState::Trailers,
                        _ => {
                            let size = line.split(|&b| b == b';').next().map(trim).unwrap_or(b"");
                            match parse_u64(size, 16) {
                                Some(0) => ChunkState::Trailers,
                                Some(n) => ChunkState::Data(n),
                                None => return Err(H1Error::Protocol("bad chunk size")),
                            }
                        }
                    };
                }
            }
        }
    }
}

/// What `exchange` reports as it reads the body.
pub trait Sink {
    /// Response head parsed at `at_ns`.
    fn head(&mut self, head: &Head, at_ns: u64);
    /// Body data read at `at_ns`; an error (the answer is over a limit)
    /// ends the exchange.
    fn data(&mut self, data: &[u8], at_ns: u64) -> Result<(), H1Error>;
}

/// Where a request failed: before the response head, or in its body.
#[derive(Debug)]
pub enum Failure {
    Send(H1Error),
    Body(H1Error),
}

/// One keep-alive connection.
pub struct FastConn {
    stream: TcpStream,
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
    out: Vec<u8>,
    reusable: bool,
}

impl FastConn {
    pub fn new(stream: TcpStream) -> FastConn {
        FastConn {
            stream,
            buf: vec![0u8; BUF].into_boxed_slice(),
            pos: 0,
            len: 0,
            out: Vec::with_capacity(512),
            reusable: true,
        }
    }

    /// Whether another request may be sent: the last answer left it open
    /// and the server has not closed it since (no syscall unless the socket
    /// became readable).
    pub fn usable(&mut self) -> bool {
        if !self.reusable {
            return false;
        }
        let mut b = [0u8; 1];
        match self.stream.try_read(&mut b) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            _ => {
                self.reusable = false;
                false
            }
        }
    }

    /// Read more bytes; returns how many (0 at the end of the stream) and
    /// when they were read.
    async fn fill(&mut self) -> Result<(usize, u64), H1Error> {
        if self.pos == self.len {
            self.pos = 0;
            self.len = 0;
        } else if self.len == self.buf.len() {
            if self.pos == 0 {
                return Err(H1Error::Protocol("response head too large"));
            }
            self.buf.copy_within(self.pos..self.len, 0);
            self.len -= self.pos;
            self.pos = 0;
        }
        let n = self.stream.read(&mut self.buf[self.len..]).await?;
        let now = tailprobe_system::clock::monotonic_ns();
        self.len += n;
        Ok((n, now))
    }

    /// Send request `id` and read its whole answer; returns the end time.
    pub async fn exchange(
        &mut self,
        req: &FastRequest,
        id: u64,
        sink: &mut impl Sink,
    ) -> Result<u64, Failure> {
        // Nothing may be pending from an earlier answer (no pipelining).
        self.pos = 0;
        self.len = 0;
        self.reusable = false;
        req.write_to(id, &mut self.out);
        self.stream
            .write_all(&self.out)
            .await
            .map_err(|e| Failure::Send(e.into()))?;
        let mut now = 0;
        let head = loop {
            if self.len > self.pos {
                match parse_head(&self.buf[self.pos..self.len], req.head_only) {
                    Ok(Some((h, n))) => {
                        self.pos += n;
                        if (100..200).contains(&h.status) {
                            continue;
                        }
                        break h;
                    }
                    Ok(None) => {}
                    Err(e) => return Err(Failure::Send(e)),
                }
            }
            match self.fill().await {
                Ok((0, _)) => return Err(Failure::Send(H1Error::Eof)),
                Ok((_, t)) => now = t,
                Err(e) => return Err(Failure::Send(e)),
            }
        };
        sink.head(&head, now);
        let body = |e| Err(Failure::Body(e));
        let end = match head.framing {
            Framing::Empty => now,
            Framing::Length(mut left) => loop {
                let k = ((self.len - self.pos) as u64).min(left) as usize;
                if k > 0 {
                    if let Err(e) = sink.data(&self.buf[self.pos..self.pos + k], now) {
                        return body(e);
                    }
                    self.pos += k;
                    left -= k as u64;
                }
                if left == 0 {
                    break now;
                }
                match self.fill().await {
                    Ok((0, _)) => return body(H1Error::Eof),
                    Ok((_, t)) => now = t,
                    Err(e) => return body(e),
                }
            },
            Framing::Chunked => {
                let mut dec = Chunked::default();
                loop {
                    let at = now;
                    match dec.decode(&self.buf[self.pos..self.len], |d| sink.data(d, at)) {
                        Ok(n) => self.pos += n,
                        Err(e) => return body(e),
                    }
                    if dec.done() {
                        break now;
                    }
                    match self.fill().await {
                        Ok((0, _)) => return body(H1Error::Eof),
                        Ok((_, t)) => now = t,
                        Err(e) => return body(e),
                    }
                }
            }
            Framing::UntilClose => loop {
                if self.len > self.pos {
                    if let Err(e) = sink.data(&self.buf[self.pos..self.len], now) {
                        return body(e);
                    }
                    self.pos = self.len;
                }
                match self.fill().await {
                    Ok((0, t)) => break t,
                    Ok((_, t)) => now = t,
                    Err(e) => return body(e),
                }
            },
        };
        // Reusable only when the answer ended exactly at its framing's end.
        self.reusable = !head.close && self.pos == self.len;
        Ok(end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> Head {
        parse_head(s.as_bytes(), false).unwrap().unwrap().0
    }

    #[test]
    fn heads_and_framing() {
        let h = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 15\r\nContent-Type: application/json\r\n\r\n{}",
        );
        assert_eq!(
            h,
            Head {
                status: 200,
                framing: Framing::Length(15),
                sse: false,
                close: false
            }
        );
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\ncontent-type: text/event-stream; charset=utf-8\r\n\r\n");
        assert_eq!((h.framing, h.sse), (Framing::Chunked, true));
        let h = head(
            "HTTP/1.1 404 Not Found\r\nconnection: keep-alive, Close\r\ncontent-length: 0\r\n\r\n",
        );
        assert_eq!((h.status, h.close), (404, true));
        assert_eq!(
            head("HTTP/1.1 204 No Content\r\n\r\n").framing,
            Framing::Empty
        );
        assert_eq!(
            head("HTTP/1.1 304 x\r\ncontent-length: 9\r\n\r\n").framing,
            Framing::Empty
        );
        let h = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((h.framing, h.close), (Framing::UntilClose, true));
        let h = head("HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n");
        assert!(h.close);
        let h = head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\ncontent-length: 2\r\n\r\n");
        assert!(!h.close);
        // Bare LF line ends are accepted.
        assert_eq!(
            head("HTTP/1.1 200 OK\ncontent-length: 1\n\n").framing,
            Framing::Length(1)
        );
        let (h, n) = parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", true)
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, n), (Framing::Empty, 38));
    }

    #[test]
    fn incomplete_and_bad_heads() {
        assert!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-le", false)
            .unwrap()
            .is_none());
        assert!(parse_head(b"", false).unwrap().is_none());
        for bad in [
            "HTTP/2 200 OK\r\n\r\n",
            "HTTP/1.1 2x0 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 101 Switching\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad name: 1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx: a\x01b\r\n\r\n",
            "HTTP/1.1 20 OK\r\n\r\n",
        ] {
            assert!(parse_head(bad.as_bytes(), false).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn head_limits() {
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        let h = format!("HTTP/1.1 200 OK\r\n{many}content-length: 0\r\n\r\n");
        assert!(parse_head(h.as_bytes(), false).is_err());
        let long = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD));
        assert!(parse_head(long.as_bytes(), false).is_err());
        let ok: String = (1..MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        let h = format!("HTTP/1.1 200 OK\r\n{ok}content-length: 7\r\n\r\n");
        assert_eq!(head(&h).framing, Framing::Length(7));
    }

    #[test]
    fn chunked_bodies_split_anywhere() {
        let wire = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for split in 0..wire.len() {
            let mut dec = Chunked::default();
            let mut out = Vec::new();
            let mut pending: Vec<u8> = Vec::new();
            for part in [&wire[..split], &wire[split..]] {
                pending.extend_from_slice(part);
                let n = dec
                    .decode(&pending, |d| {
                        out.extend_from_slice(d);
                        Ok(())
                    })
                    .unwrap();
                pending.drain(..n);
            }
            assert!(dec.done(), "split {split}");
            assert_eq!(out, b"hello, world", "split {split}");
            assert!(pending.is_empty());
        }
        let mut dec = Chunked::default();
        assert!(dec.decode(b"zz\r\n", |_| Ok(())).is_err());
        let mut dec = Chunked::default();
        assert!(dec.decode(b"2\r\nabX\r\n", |_| Ok(())).is_err());
    }

    #[test]
    fn request_bytes() {
        let t = Target::new(
            "http://127.0.0.1:9/v1/x?a=1",
            "POST",
            &[],
            Some(BodyTemplate::new(b"{\"n\":{{id}}}")),
        )
        .unwrap();
        let r = FastRequest::new(&t).unwrap();
        let mut out = Vec::new();
        r.write_to(42, &mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("POST /v1/x?a=1 HTTP/1.1\r\n"), "{s}");
        assert!(s.contains("host: 127.0.0.1:9\r\n"), "{s}");
        assert!(s.ends_with("content-length: 8\r\n\r\n{\"n\":42}"), "{s}");
        let g = Target::new("http://127.0.0.1:9/health", "GET", &[], None).unwrap();
        let mut out = Vec::new();
        FastRequest::new(&g).unwrap().write_to(0, &mut out);
        assert_eq!(out, b"GET /health HTTP/1.1\r\nhost: 127.0.0.1:9\r\n\r\n");
        let (n, v) = super::super::target::parse_header("Transfer-Encoding: chunked").unwrap();
        let te = Target::new("http://127.0.0.1:9/", "POST", &[(n, v)], None).unwrap();
        assert!(FastRequest::new(&te).is_none());
    }

    struct Collect {
        status: u16,
        body: Vec<u8>,
    }

    impl Sink for Collect {
        fn head(&mut self, head: &Head, _: u64) {
            self.status = head.status;
        }
        fn data(&mut self, data: &[u8], _: u64) -> Result<(), H1Error> {
            self.body.extend_from_slice(data);
            Ok(())
        }
    }

    /// A loopback server that answers each request with the next canned
    /// answer, written in small pieces.
    #[test]
    fn exchanges_over_a_socket() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let answers: Vec<&'static [u8]> = vec![
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
                b"HTTP/1.1 503 busy\r\nconnection: close\r\ncontent-length: 2\r\n\r\nno",
            ];
            let server = tokio::spawn(async move {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                for a in answers {
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        let n = s.read(&mut buf).await.unwrap();
                        got.extend_from_slice(&buf[..n]);
                    }
                    for piece in a.chunks(7) {
                        s.write_all(piece).await.unwrap();
                        s.flush().await.unwrap();
                        tokio::task::yield_now().await;
                    }
                }
                let _ = s.shutdown().await;
            });
            let t = Target::new(&format!("http://{addr}/x"), "GET", &[], None).unwrap();
            let req = FastRequest::new(&t).unwrap();
            let mut c = FastConn::new(TcpStream::connect(addr).await.unwrap());
            let mut expect = vec![(200u16, &b"hello"[..]), (200, b"abc"), (503, b"no")];
            for (i, (status, body)) in expect.drain(..).enumerate() {
                assert!(c.usable(), "request {i}");
                let mut sink = Collect {
                    status: 0,
                    body: Vec::new(),
                };
                c.exchange(&req, i as u64, &mut sink).await.unwrap();
                assert_eq!((sink.status, &sink.body[..]), (status, body));
            }
            // `connection: close` was honoured.
            assert!(!c.usable());
            server.await.unwrap();
        });
    }
}
