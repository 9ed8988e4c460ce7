//! The optional scheduler trace stream (`--perfetto`): its configuration
//! and draining. Off unless `LoadConfig::sched_trace` is set.

use aya::maps::{MapData, RingBuf};
use probe_common::{loss, TraceRec};

use super::Probes;

/// Turns the stream on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedTraceConfig {
    /// Size of its ring buffer (a power of two, at least a page).
    pub ring_bytes: u32,
    /// Offset of `task_struct.prio` (0: priorities not read).
    pub prio_off: u32,
}

/// The loader's settings for a config: (on, prio offset, ring bytes). Off:
/// a one-page ring nobody reads.
pub fn globals(cfg: Option<&SchedTraceConfig>) -> (u32, u32, u32) {
    match cfg {
        Some(c) => (1, c.prio_off, c.ring_bytes.max(4096).next_power_of_two()),
        None => (0, 0, 4096),
    }
}

pub fn take_ring(ebpf: &mut aya::Ebpf, on: bool) -> anyhow::Result<Option<RingBuf<MapData>>> {
    use anyhow::Context as _;
    if !on {
        return Ok(None);
    }
    ebpf.take_map("SCHED_TRACE")
        .map(RingBuf::try_from)
        .transpose()
        .context("opening the SCHED_TRACE ring buffer")
}

impl Probes {
    /// Hand every record waiting in the stream to `f`; returns how many.
    pub fn drain_sched_trace(&mut self, mut f: impl FnMut(&TraceRec)) -> u64 {
        let mut n = 0;
        if let Some(rb) = self.sched_trace.as_mut() {
            while let Some(item) = rb.next() {
                if item.len() >= std::mem::size_of::<TraceRec>() {
                    // SAFETY: the kernel wrote a whole `TraceRec` (repr(C),
                    // integers only) at the start of the record;
                    // read_unaligned copes with any alignment.
                    let r = unsafe { std::ptr::read_unaligned(item.as_ptr() as *const TraceRec) };
                    f(&r);
                    n += 1;
                }
            }
        }
        n
    }

    /// Records the kernel could not put on the stream (ring buffer full).
    pub fn sched_trace_dropped(&self) -> u64 {
        self.read_losses()
            .ok()
            .and_then(|l| {
                l.into_iter()
                    .nth(loss::SCHED_TRACE_RESERVE as usize)
                    .map(|(_, v)| v.iter().sum())
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_keeps_a_one_page_ring_and_on_rounds_up() {
        assert_eq!(globals(None), (0, 0, 4096));
        let c = SchedTraceConfig {
            ring_bytes: 5 << 20,
            prio_off: 96,
        };
        assert_eq!(globals(Some(&c)), (1, 96, 8 << 20));
    }
}
