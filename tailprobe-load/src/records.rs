//! Per-request records (`--requests-out FILE`): one JSON object per line,
//! timestamps in CLOCK_MONOTONIC ns so they line up with kernel events.

use std::{
    borrow::Cow,
    fs::File,
    io::{BufWriter, Write as _},
    path::Path,
    sync::Mutex,
};

use serde::Serialize;

/// One request, as written to the records file.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RequestRecord {
    pub id: u64,
    /// Warm-up requests are written but excluded from the statistics.
    pub warmup: bool,
    /// When the schedule said to send it (rate mode; null in closed loop).
    pub intended_ns: Option<u64>,
    /// When the generator started sending it.
    pub sent_ns: u64,
    /// Response headers received.
    pub first_byte_ns: Option<u64>,
    /// First token-carrying event (streams) or first body bytes.
    pub first_token_ns: Option<u64>,
    /// Response complete, failed, or timed out (sent + timeout).
    pub end_ns: u64,
    /// HTTP status, 0 when no response arrived.
    pub status: u16,
    /// `ok`, `incomplete`, `timeout`, or the error kind.
    pub outcome: Cow<'static, str>,
    /// Why an answer was `incomplete` (`empty_stream`, `no_finish_reason`,
    /// ...); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<&'static str>,
    pub output_tokens: Option<u64>,
    pub bytes: u64,
    /// Thread id of the generator thread that sent it.
    pub tid: u32,
}

/// A shared, buffered JSON Lines writer.
pub struct RecordWriter {
    out: Mutex<BufWriter<File>>,
}

impl RecordWriter {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Ok(RecordWriter {
            out: Mutex::new(BufWriter::with_capacity(1 << 16, File::create(path)?)),
        })
    }

    pub fn write(&self, r: &RequestRecord) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(r).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut out = self
            .out
            .lock()
            .map_err(|_| std::io::Error::other("records writer poisoned"))?;
        out.write_all(&line)
    }

    pub fn flush(&self) -> std::io::Result<()> {
        match self.out.lock() {
            Ok(mut o) => o.flush(),
            Err(_) => Err(std::io::Error::other("records writer poisoned")),
        }
    }
}
