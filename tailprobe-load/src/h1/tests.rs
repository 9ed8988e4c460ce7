//! Tests of `h1`: heads, framing, chunked bodies, limits.
//! (Test-only: its parent declares it under `#[cfg(test)]`.)
use super::head::MAX_HEADERS;
use super::*;

fn head(s: &str) -> Head {
    parse_head(s.as_bytes(), false).unwrap().unwrap().0
}

#[test]
fn heads_and_framing() {
    let h =
        head("HTTP/1.1 200 OK\r\nContent-Length: 15\r\nContent-Type: application/json\r\n\r\n{}");
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
