//! A small HTTP/1.1 client for the plain (non-OpenAI) fast path: one
//! keep-alive connection, a request head built once, one reusable read
//! buffer, no channels or tasks between the request and the socket.
//!
//! It handles what a response may carry: `Content-Length`, `chunked` and
//! read-until-close bodies, 1xx interim answers, HEAD/204/304 without a
//! body, `Connection: close`, and `text/event-stream` bodies (fed to the same
//! SSE parser as the hyper path). Anything it cannot frame is an error, never
//! a guess. The OpenAI (streaming) path stays on hyper.
//!
//! `head`: the response head (httparse) and its framing; `chunked`: the
//! chunked body decoder; this module: the request and the connection.

use bytes::Bytes;
use http::Method;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use super::target::{BodyTemplate, Target};

mod chunked;
mod head;

pub use chunked::Chunked;
pub use head::{parse_head, Framing, H1Error, Head};

/// Largest response head accepted (status line and headers).
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// Largest chunk-size or trailer line accepted.
pub(super) const MAX_LINE: usize = 4096;
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
mod tests;
