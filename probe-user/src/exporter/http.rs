//! A small HTTP/1.1 server for `/metrics`, polled from the exporter's own
//! loop (one thread: the maps are read on the thread that owns them). A
//! scraper gets one response per connection (`Connection: close`); a
//! client that sends nothing is dropped after [`READ_TIMEOUT`].

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use anyhow::{Context as _, Result};

use super::render::Format;

/// How long a connection may take to send its request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest request head we read.
const MAX_HEAD: usize = 16 * 1024;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Metrics(Format),
    Index,
    NotFound,
    BadMethod,
    Bad,
}

/// Parse a request head (pure).
pub fn parse_request(head: &str) -> Request {
    let mut lines = head.split("\r\n");
    let Some(first) = lines.next() else {
        return Request::Bad;
    };
    let mut parts = first.split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Request::Bad;
    };
    if !matches!(parts.next(), Some(v) if v.starts_with("HTTP/1.")) {
        return Request::Bad;
    }
    if method != "GET" && method != "HEAD" {
        return Request::BadMethod;
    }
    let path = target.split('?').next().unwrap_or("");
    let accept = lines.find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case("accept").then(|| v.trim())
    });
    match path {
        "/metrics" => Request::Metrics(Format::from_accept(accept)),
        "/" => Request::Index,
        _ => Request::NotFound,
    }
}

pub struct Server {
    listener: TcpListener,
    pub addr: SocketAddr,
}

impl Server {
    pub fn bind(addr: &str) -> Result<Server> {
        let listener = TcpListener::bind(addr).with_context(|| {
            format!("listening on {addr} (in use by another exporter? give --listen ADDR:PORT)")
        })?;
        listener
            .set_nonblocking(true)
            .context("making the listening socket non-blocking")?;
        let addr = listener.local_addr().context("reading the bound address")?;
        Ok(Server { listener, addr })
    }

    /// Serve every connection waiting now; `metrics` renders a scrape.
    /// Returns how many requests were answered.
    pub fn poll(&self, metrics: &mut dyn FnMut(Format) -> String) -> usize {
        let mut n = 0;
        while let Ok((conn, _)) = self.listener.accept() {
            // An error on one connection is the client's problem, not ours.
            if serve_one(conn, metrics).is_ok() {
                n += 1;
            }
        }
        n
    }
}

fn read_head(conn: &mut TcpStream) -> std::io::Result<String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_HEAD {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

fn serve_one(mut conn: TcpStream, metrics: &mut dyn FnMut(Format) -> String) -> Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(READ_TIMEOUT))?;
    conn.set_write_timeout(Some(READ_TIMEOUT))?;
    let head = read_head(&mut conn)?;
    let head_only = head.starts_with("HEAD ");
    let (status, ctype, body) = match parse_request(&head) {
        Request::Metrics(f) => ("200 OK", f.content_type(), metrics(f)),
        Request::Index => (
            "200 OK",
            "text/plain; charset=utf-8",
            "tailprobe exporter: metrics at /metrics\n".to_string(),
        ),
        Request::NotFound => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found: metrics are at /metrics\n".to_string(),
        ),
        Request::BadMethod => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET and HEAD\n".to_string(),
        ),
        Request::Bad => (
            "400 Bad Request",
            "text/plain; charset=utf-8",
            "bad request\n".to_string(),
        ),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        out.push_str(&body);
    }
    conn.write_all(out.as_bytes())?;
    conn.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        assert_eq!(
            parse_request("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Metrics(Format::Prometheus)
        );
        assert_eq!(
            parse_request(
                "GET /metrics?x=1 HTTP/1.1\r\naccept: application/openmetrics-text; version=1.0.0\r\n\r\n"
            ),
            Request::Metrics(Format::OpenMetrics)
        );
        assert_eq!(
            parse_request("POST /metrics HTTP/1.1\r\n\r\n"),
            Request::BadMethod
        );
        assert_eq!(parse_request("GET /x HTTP/1.1\r\n\r\n"), Request::NotFound);
        assert_eq!(parse_request("GET / HTTP/1.0\r\n\r\n"), Request::Index);
        assert_eq!(parse_request("garbage"), Request::Bad);
        assert_eq!(parse_request(""), Request::Bad);
    }

    #[test]
    fn serves_over_loopback() {
        let s = Server::bind("127.0.0.1:0").unwrap();
        let addr = s.addr;
        let client = std::thread::spawn(move || {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            let mut r = String::new();
            c.read_to_string(&mut r).unwrap();
            r
        });
        let mut served = 0;
        for _ in 0..200 {
            served += s.poll(&mut |_| "x 1\n".to_string());
            if served > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let r = client.join().unwrap();
        assert_eq!(served, 1);
        assert!(r.starts_with("HTTP/1.1 200 OK"), "{r}");
        assert!(r.ends_with("\r\n\r\nx 1\n"), "{r}");
    }
}
