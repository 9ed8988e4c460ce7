//! Tail attribution: where the time of the slowest requests went.
//!
//! Exact method (a server that records which thread served each request and
//! when, like `tailprobe serve`): for each request, the streamed kernel
//! events of its serving thread that overlap `[start, end]` are summed:
//! run-queue waits, hard IRQ and softirq time (each event covers
//! `[ts - value, ts]` and only the overlapping part counts), page faults and
//! migrations (counted when they end inside). Time waiting in the server's
//! queue (`start - queued`) is its own component; what is left is service
//! (on-CPU work). Pure.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::stats::percentile_sorted;

/// A request as the server saw it (CLOCK_MONOTONIC ns).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ServedReq {
    pub id: u64,
    pub tid: u32,
    pub queued_ns: u64,
    pub start_ns: u64,
    pub end_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    RunqWait,
    HardIrq,
    SoftIrq,
    PageFault,
    /// `value_ns`: 1 cross-LLC + 2 cross-NUMA.
    Migration,
}

impl EventKind {
    pub fn from_outlier(kind: &str) -> Option<EventKind> {
        Some(match kind {
            "runq_wait" => EventKind::RunqWait,
            "hardirq" => EventKind::HardIrq,
            "softirq" => EventKind::SoftIrq,
            "page_fault" => EventKind::PageFault,
            "migration" => EventKind::Migration,
            _ => return None,
        })
    }
}

/// One kernel event on one thread; `ts_ns` is when it ended.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KEvent {
    pub kind: EventKind,
    pub tid: u32,
    pub ts_ns: u64,
    pub value_ns: u64,
}

/// Where one request's time went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Breakdown {
    pub id: u64,
    pub tid: u32,
    pub total_ns: u64,
    pub queue_ns: u64,
    pub runq_ns: u64,
    pub hardirq_ns: u64,
    pub softirq_ns: u64,
    pub page_faults: u64,
    pub migrations: u64,
    pub cross_numa_migrations: u64,
    /// total - queue - runq - irq: the thread was running the request.
    pub service_ns: u64,
}

fn overlap(a0: u64, a1: u64, b0: u64, b1: u64) -> u64 {
    a1.min(b1).saturating_sub(a0.max(b0))
}

/// Per-request breakdowns (same order as `reqs`).
pub fn breakdown(reqs: &[ServedReq], events: &[KEvent]) -> Vec<Breakdown> {
    let mut by_tid: BTreeMap<u32, Vec<KEvent>> = BTreeMap::new();
    for e in events {
        by_tid.entry(e.tid).or_default().push(*e);
    }
    // The longest interval event per thread bounds how far back to look.
    let mut longest: BTreeMap<u32, u64> = BTreeMap::new();
    for (tid, v) in by_tid.iter_mut() {
        v.sort_by_key(|e| e.ts_ns);
        let m = v
            .iter()
            .filter(|e| !matches!(e.kind, EventKind::PageFault | EventKind::Migration))
            .map(|e| e.value_ns)
            .max()
            .unwrap_or(0);
        longest.insert(*tid, m);
    }
    reqs.iter()
        .map(|r| {
            let mut b = Breakdown {
                id: r.id,
                tid: r.tid,
                total_ns: r.end_ns.saturating_sub(r.queued_ns),
                queue_ns: r.start_ns.saturating_sub(r.queued_ns),
                ..Breakdown::default()
            };
            if let Some(evs) = by_tid.get(&r.tid) {
                // Sorted by end time: an event ending before `start` cannot
                // overlap, nor can one ending after `end + longest`.
                let back = longest.get(&r.tid).copied().unwrap_or(0);
                let lo = evs.partition_point(|e| e.ts_ns < r.start_ns);
                for e in &evs[lo..] {
                    if e.ts_ns > r.end_ns.saturating_add(back) {
                        break;
                    }
                    let iv = overlap(
                        e.ts_ns.saturating_sub(e.value_ns),
                        e.ts_ns,
                        r.start_ns,
                        r.end_ns,
                    );
                    let inside = e.ts_ns <= r.end_ns;
                    match e.kind {
                        EventKind::RunqWait => b.runq_ns += iv,
                        EventKind::HardIrq => b.hardirq_ns += iv,
                        EventKind::SoftIrq => b.softirq_ns += iv,
                        EventKind::PageFault if inside => b.page_faults += 1,
                        EventKind::Migration if inside => {
                            b.migrations += 1;
                            if e.value_ns & 2 != 0 {
                                b.cross_numa_migrations += 1;
                            }
                        }
                        EventKind::PageFault | EventKind::Migration => {}
                    }
                }
            }
            b.service_ns = b
                .total_ns
                .saturating_sub(b.queue_ns + b.runq_ns + b.hardirq_ns + b.softirq_ns);
            b
        })
        .collect()
}

/// Averages over a group of requests, in ms and per request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupMeans {
    pub requests: usize,
    pub total_ms: f64,
    pub queue_ms: f64,
    pub runq_ms: f64,
    pub hardirq_ms: f64,
    pub softirq_ms: f64,
    pub service_ms: f64,
    pub page_faults: f64,
    pub migrations: f64,
    pub cross_numa_migrations: f64,
}

impl GroupMeans {
    pub fn of(bs: &[&Breakdown]) -> GroupMeans {
        let n = bs.len();
        if n == 0 {
            return GroupMeans::default();
        }
        let ms = |f: &dyn Fn(&Breakdown) -> u64| {
            bs.iter().map(|b| f(b) as f64).sum::<f64>() / n as f64 / 1e6
        };
        let per =
            |f: &dyn Fn(&Breakdown) -> u64| bs.iter().map(|b| f(b) as f64).sum::<f64>() / n as f64;
        GroupMeans {
            requests: n,
            total_ms: ms(&|b| b.total_ns),
            queue_ms: ms(&|b| b.queue_ns),
            runq_ms: ms(&|b| b.runq_ns),
            hardirq_ms: ms(&|b| b.hardirq_ns),
            softirq_ms: ms(&|b| b.softirq_ns),
            service_ms: ms(&|b| b.service_ns),
            page_faults: per(&|b| b.page_faults),
            migrations: per(&|b| b.migrations),
            cross_numa_migrations: per(&|b| b.cross_numa_migrations),
        }
    }

    /// Share of `total_ms` of a component, in %.
    pub fn share(&self, part_ms: f64) -> f64 {
        if self.total_ms > 0.0 {
            100.0 * part_ms / self.total_ms
        } else {
            0.0
        }
    }
}

/// The tail (above the 95th percentile of server time) against the typical
/// request (at or below the median).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TailSplit {
    /// `exact (serving thread)` or `time window (process-wide)`.
    pub method: String,
    pub p95_ms: f64,
    pub tail: GroupMeans,
    pub typical: GroupMeans,
}

pub fn tail_split(bs: &[Breakdown]) -> Option<TailSplit> {
    let mut tot: Vec<f64> = bs.iter().map(|b| b.total_ns as f64 / 1e6).collect();
    tot.sort_by(f64::total_cmp);
    let p95 = percentile_sorted(&tot, 95.0)?;
    let p50 = percentile_sorted(&tot, 50.0)?;
    let tail: Vec<&Breakdown> = bs
        .iter()
        .filter(|b| b.total_ns as f64 / 1e6 > p95)
        .collect();
    let typical: Vec<&Breakdown> = bs
        .iter()
        .filter(|b| b.total_ns as f64 / 1e6 <= p50)
        .collect();
    Some(TailSplit {
        method: "exact (serving thread)".into(),
        p95_ms: p95,
        tail: GroupMeans::of(&tail),
        typical: GroupMeans::of(&typical),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn exact_breakdown_of_known_requests() {
        // Request 1 on tid 10: queued 0, starts at 2 ms, ends at 20 ms.
        // Request 2 on tid 11: 0..5 ms, nothing happens to it.
        let reqs = [
            ServedReq {
                id: 1,
                tid: 10,
                queued_ns: 0,
                start_ns: 2 * MS,
                end_ns: 20 * MS,
            },
            ServedReq {
                id: 2,
                tid: 11,
                queued_ns: 0,
                start_ns: 0,
                end_ns: 5 * MS,
            },
        ];
        let ev = |kind, tid, ts, v| KEvent {
            kind,
            tid,
            ts_ns: ts,
            value_ns: v,
        };
        let events = [
            // 4 ms wait fully inside.
            ev(EventKind::RunqWait, 10, 10 * MS, 4 * MS),
            // wait from 1 ms to 3 ms: only 1 ms inside [2, 20].
            ev(EventKind::RunqWait, 10, 3 * MS, 2 * MS),
            // wait ending after the request: 19..22, 1 ms inside.
            ev(EventKind::RunqWait, 10, 22 * MS, 3 * MS),
            ev(EventKind::HardIrq, 10, 12 * MS, MS / 2),
            ev(EventKind::SoftIrq, 10, 13 * MS, MS / 4),
            ev(EventKind::PageFault, 10, 14 * MS, 0),
            ev(EventKind::PageFault, 10, 25 * MS, 0),
            ev(EventKind::Migration, 10, 15 * MS, 2),
            // Another thread's wait during request 1 does not count.
            ev(EventKind::RunqWait, 12, 10 * MS, 5 * MS),
        ];
        let b = breakdown(&reqs, &events);
        assert_eq!(b[0].total_ns, 20 * MS);
        assert_eq!(b[0].queue_ns, 2 * MS);
        assert_eq!(b[0].runq_ns, 6 * MS);
        assert_eq!(b[0].hardirq_ns, MS / 2);
        assert_eq!(b[0].softirq_ns, MS / 4);
        assert_eq!(b[0].page_faults, 1);
        assert_eq!((b[0].migrations, b[0].cross_numa_migrations), (1, 1));
        assert_eq!(b[0].service_ns, 20 * MS - 2 * MS - 6 * MS - MS / 2 - MS / 4);
        assert_eq!(b[1].runq_ns, 0);
        assert_eq!(b[1].service_ns, 5 * MS);
    }

    #[test]
    fn tail_is_above_p95() {
        // 100 requests of 1..=100 ms; the slowest 5 also waited 10 ms each.
        let reqs: Vec<ServedReq> = (1..=100u64)
            .map(|i| ServedReq {
                id: i,
                tid: i as u32,
                queued_ns: 0,
                start_ns: 0,
                end_ns: i * MS,
            })
            .collect();
        let events: Vec<KEvent> = (96..=100u64)
            .map(|i| KEvent {
                kind: EventKind::RunqWait,
                tid: i as u32,
                ts_ns: i * MS,
                value_ns: 10 * MS,
            })
            .collect();
        let s = tail_split(&breakdown(&reqs, &events)).unwrap();
        assert_eq!(s.p95_ms, 95.0);
        assert_eq!(s.tail.requests, 5);
        assert_eq!(s.tail.total_ms, 98.0);
        assert_eq!(s.tail.runq_ms, 10.0);
        assert!((s.tail.share(s.tail.runq_ms) - 100.0 * 10.0 / 98.0).abs() < 1e-9);
        assert_eq!(s.typical.requests, 50);
        assert_eq!(s.typical.runq_ms, 0.0);
    }
}
