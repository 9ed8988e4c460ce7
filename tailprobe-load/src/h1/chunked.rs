//! The `chunked` transfer coding, decoded incrementally.

use super::head::{parse_u64, trim};
use super::{H1Error, MAX_LINE};

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
