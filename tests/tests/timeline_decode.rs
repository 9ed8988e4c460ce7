//! The trace writer's output decoded by an independent decoder: the PyPI
//! `perfetto` package's protobuf classes (`tests/python/decode_trace.py`).
//! No root needed: the trace is made through the library from known
//! records, including more than the size cap lets in.

use tailprobe::timeline::{rec_kind, Timeline, TraceOptions, TraceRec};
use tailprobe_tests::skip_fixable;

fn switch(cpu: u32, ts: u64, next: u32) -> TraceRec {
    TraceRec {
        ts_ns: ts,
        kind: rec_kind::SWITCH,
        cpu,
        pid: next,
        tgid: 1,
        prev_pid: 0,
        state: 1,
        prio: 120,
        ..TraceRec::default()
    }
}

/// Known records in, the same counts out of the independent decoder: every
/// switch, waking, IRQ and request written, and past the cap, the note.
#[test]
fn python_decoder_counts_what_was_written_and_the_cap_note() {
    let dir = std::env::temp_dir().join(format!("tailprobe-decode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("t.pftrace");
    let mut t = Timeline::create(&TraceOptions::new(&path, 1)).expect("create");
    let base = 5_000_000_000u64;
    // 2 CPUs x 100k switches: far more than 1 MB holds.
    for i in 0..100_000u64 {
        for cpu in 0..2u32 {
            t.sched(&switch(cpu, base + i * 1000, 1 + (i % 3) as u32))
                .expect("sched");
        }
    }
    t.sched(&TraceRec {
        ts_ns: base + 10,
        kind: rec_kind::HARDIRQ,
        cpu: 0,
        pid: 1,
        tgid: 1,
        dur_ns: 500,
        aux: 3,
        ..TraceRec::default()
    })
    .expect("irq");
    let recs = dir.join("r.jsonl");
    let lines: String = (0..5u64)
        .map(|id| {
            format!(
                "{{\"id\":{id},\"sent_ns\":{},\"first_token_ns\":{},\"end_ns\":{},\
                 \"status\":200,\"outcome\":\"ok\",\"tid\":9}}\n",
                base + id * 1_000_000,
                base + id * 1_000_000 + 100_000,
                base + id * 1_000_000 + 700_000 + id
            )
        })
        .collect();
    std::fs::write(&recs, lines).expect("records");
    let (n, matched) = t.add_requests(&recs, &[], 77).expect("requests");
    assert_eq!((n, matched), (5, 0));
    let s = t.finish().expect("finish");
    assert!(s.bytes <= 1 << 20, "the cap holds: {} bytes", s.bytes);
    let left: u64 = s.left_out.values().sum();
    assert!(left > 0, "a 1 MB cap leaves switches out: {s:?}");
    let Some(py) = tailprobe_tests::python_decode_trace(&path) else {
        skip_fixable(
            "python_decoder_counts_what_was_written_and_the_cap_note",
            "python3 with the `perfetto` package is missing (cargo xtask setup installs it)",
        );
        return;
    };
    eprintln!("summary {:?}; python {}", s.events, py["counts"]);
    let c = &py["counts"];
    let written = |k: &str| s.events.get(k).copied().unwrap_or(0);
    assert_eq!(c["switches"], written("switch"));
    assert_eq!(c["irq_handler_entry"].as_u64().unwrap_or(0), written("irq"));
    assert_eq!(c["request_tracks"], written("request"));
    // The note: one instant on the notes track (requests have none).
    assert_eq!(c["TYPE_INSTANT"], 1);
    for id in 0..5u64 {
        assert_eq!(py["request_ns"][format!("request {id}")], 700_000 + id);
    }
}
