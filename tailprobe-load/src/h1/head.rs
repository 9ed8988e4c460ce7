//! The response head: status line and headers through `httparse`, and the
//! body framing they announce.

use super::MAX_HEAD;

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

pub(super) fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r'] = s {
        s = rest;
    }
    s
}

pub(super) fn parse_u64(s: &[u8], radix: u32) -> Option<u64> {
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
pub(super) const MAX_HEADERS: usize = 64;

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
