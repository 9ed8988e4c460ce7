//! The trace file as a stream of `Trace.packet` fields, each a whole
//! `TracePacket` encoded by rust-protobuf, with a cap on the file's size.
//! Memory stays bounded: a packet is encoded, written and dropped.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufWriter, Write as _},
    path::{Path, PathBuf},
};

use perfetto_protos::trace_packet::TracePacket;
use protobuf::{CodedOutputStream, Message as _};

/// Field number of `Trace.packet`.
const TRACE_PACKET_FIELD: u32 = 1;

/// Bytes kept free under the cap for the closing packets (the note saying
/// what was left out, descriptors of late threads).
pub const CLOSING_RESERVE: u64 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("creating the trace file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing the trace file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("encoding a trace packet: {0}")]
    Encode(#[from] protobuf::Error),
}

/// Streams packets to a file; past `max_bytes - CLOSING_RESERVE` packets
/// are left out and counted by what they carried.
pub struct PacketWriter {
    path: PathBuf,
    out: BufWriter<File>,
    scratch: Vec<u8>,
    max_bytes: u64,
    written: u64,
    packets: u64,
    /// What was left out: kind -> events.
    left_out: BTreeMap<&'static str, u64>,
    /// Bytes below the closing reserve that only `request` packets may use.
    request_reserve: u64,
}

impl PacketWriter {
    pub fn create(path: &Path, max_bytes: u64) -> Result<Self, WriteError> {
        let f = File::create(path).map_err(|source| WriteError::Create {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(PacketWriter {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 16, f),
            scratch: Vec::with_capacity(1 << 16),
            max_bytes: max_bytes.max(2 * CLOSING_RESERVE),
            written: 0,
            packets: 0,
            left_out: BTreeMap::new(),
            request_reserve: 0,
        })
    }

    /// Keep `bytes` (at most half of what the cap leaves) for `request`
    /// packets: other kinds stop that much earlier, so requests added at the
    /// end still fit when kernel events reached the cap.
    pub fn reserve_for_requests(&mut self, bytes: u64) {
        let room = self.max_bytes.saturating_sub(CLOSING_RESERVE);
        self.request_reserve = bytes.min(room / 2);
    }

    fn encode(&mut self, p: &TracePacket) -> Result<(), WriteError> {
        self.scratch.clear();
        let mut os = CodedOutputStream::vec(&mut self.scratch);
        os.write_message(TRACE_PACKET_FIELD, p)?;
        os.flush()?;
        Ok(())
    }

    fn put(&mut self) -> Result<(), WriteError> {
        self.out
            .write_all(&self.scratch)
            .map_err(|source| WriteError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.written += self.scratch.len() as u64;
        self.packets += 1;
        Ok(())
    }

    /// Write `p`, which carries `events` events of `kind`, unless that
    /// would pass the cap: then count them as left out. True when written.
    pub fn write(
        &mut self,
        p: &TracePacket,
        kind: &'static str,
        events: u64,
    ) -> Result<bool, WriteError> {
        // Size of the field: tag, length, body (at most 10 bytes of header).
        let size = u64::from(p.compute_size() as u32) + 10;
        let reserve = if kind == "request" {
            0
        } else {
            self.request_reserve
        };
        if self.written + size > self.max_bytes.saturating_sub(CLOSING_RESERVE + reserve) {
            *self.left_out.entry(kind).or_default() += events;
            return Ok(false);
        }
        self.encode(p)?;
        self.put()?;
        Ok(true)
    }

    /// Write a closing packet inside the reserve (never left out unless the
    /// file would pass the cap itself).
    pub fn write_closing(&mut self, p: &TracePacket) -> Result<bool, WriteError> {
        self.encode(p)?;
        if self.written + self.scratch.len() as u64 > self.max_bytes {
            return Ok(false);
        }
        self.put()?;
        Ok(true)
    }

    pub fn left_out(&self) -> &BTreeMap<&'static str, u64> {
        &self.left_out
    }

    pub fn bytes(&self) -> u64 {
        self.written
    }

    pub fn packets(&self) -> u64 {
        self.packets
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn finish(mut self) -> Result<(), WriteError> {
        self.out.flush().map_err(|source| WriteError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use perfetto_protos::trace::Trace;

    fn packet(ts: u64) -> TracePacket {
        let mut p = TracePacket::new();
        p.set_timestamp(ts);
        p
    }

    #[test]
    fn packets_read_back_as_a_trace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.pftrace");
        let mut w = PacketWriter::create(&path, 1 << 20).unwrap();
        for ts in 1..=3 {
            assert!(w.write(&packet(ts), "x", 1).unwrap());
        }
        let n = w.bytes();
        w.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, n);
        let t = Trace::parse_from_bytes(&bytes).unwrap();
        let ts: Vec<u64> = t.packet.iter().map(|p| p.timestamp()).collect();
        assert_eq!(ts, vec![1, 2, 3]);
    }

    #[test]
    fn the_cap_leaves_packets_out_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.pftrace");
        let cap = 2 * CLOSING_RESERVE;
        let mut w = PacketWriter::create(&path, cap).unwrap();
        let mut big = TracePacket::new();
        big.mut_track_event().set_name("x".repeat(100_000));
        let mut written = 0;
        for _ in 0..10 {
            if w.write(&big, "slices", 3).unwrap() {
                written += 1;
            }
        }
        assert_eq!(written, 2, "two 100 kB packets fit under 512 - 256 kB");
        assert_eq!(w.left_out().get("slices"), Some(&24));
        assert!(w.write_closing(&packet(9)).unwrap());
        assert!(w.bytes() <= cap);
    }

    #[test]
    fn requests_keep_their_reserve_when_other_kinds_reach_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.pftrace");
        let cap = 4 * CLOSING_RESERVE;
        let mut w = PacketWriter::create(&path, cap).unwrap();
        w.reserve_for_requests(CLOSING_RESERVE);
        let mut big = TracePacket::new();
        big.mut_track_event().set_name("x".repeat(100_000));
        let sched = (0..20)
            .filter(|_| w.write(&big, "switch", 1).unwrap())
            .count();
        // 1024 kB - 256 kB closing - 256 kB for requests: five 100 kB packets.
        assert_eq!(sched, 5);
        let requests = (0..20)
            .filter(|_| w.write(&big, "request", 1).unwrap())
            .count();
        assert_eq!(requests, 2, "the reserve takes two more");
        assert!(w.bytes() <= cap - CLOSING_RESERVE);
    }
}
