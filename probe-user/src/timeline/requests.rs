//! Requests as async slices on tracks of their own, and flows to the server
//! thread that served them: the generator's per-request records (read back
//! from its JSON Lines), the built-in server's journal, and the matching of
//! the two. Pure.

use serde_json::Value;

use super::packets::{self, Arg, Ev};
use perfetto_protos::trace_packet::TracePacket;

/// One generator request (CLOCK_MONOTONIC ns), from `--requests-out`.
#[derive(Debug, Clone, PartialEq)]
pub struct Req {
    pub id: u64,
    pub warmup: bool,
    pub intended_ns: Option<u64>,
    pub sent_ns: u64,
    pub first_token_ns: Option<u64>,
    pub end_ns: u64,
    pub status: u64,
    pub outcome: String,
    pub output_tokens: Option<u64>,
    pub tid: u32,
}

impl Req {
    /// From one line of the records file; None when it is not one.
    pub fn from_json(v: &Value) -> Option<Req> {
        let u = |k: &str| v.get(k).and_then(Value::as_u64);
        Some(Req {
            id: u("id")?,
            warmup: v.get("warmup").and_then(Value::as_bool).unwrap_or(false),
            intended_ns: u("intended_ns"),
            sent_ns: u("sent_ns")?,
            first_token_ns: u("first_token_ns"),
            end_ns: u("end_ns")?,
            status: u("status").unwrap_or(0),
            outcome: v
                .get("outcome")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            output_tokens: u("output_tokens"),
            tid: u("tid").unwrap_or(0) as u32,
        })
    }
}

/// One request as the built-in server's journal has it.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    pub id: u64,
    pub tid: u32,
    pub worker: String,
    pub queued_ns: u64,
    pub start_ns: u64,
    pub first_token_ns: Option<u64>,
    pub end_ns: u64,
}

impl Served {
    pub fn from_json(v: &Value) -> Option<Served> {
        let u = |k: &str| v.get(k).and_then(Value::as_u64);
        Some(Served {
            id: u("id")?,
            tid: u("tid")? as u32,
            worker: v
                .get("worker")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            queued_ns: u("queued_ns")?,
            start_ns: u("start_ns")?,
            first_token_ns: u("first_token_ns"),
            end_ns: u("end_ns")?,
        })
    }
}

/// How many earlier-sent requests a served one is tried against.
const MATCH_WINDOW: usize = 256;

/// Pair each served request with the generator request it answered: the
/// latest-sent unmatched request that was in flight (sent, not yet ended)
/// when the server queued it. (The server stamps its end after handing
/// over the last bytes, so it may end after the client did.) Returns, per
/// `reqs` index, the `served` index.
pub fn match_served(reqs: &[Req], served: &[Served]) -> Vec<Option<usize>> {
    let mut by_sent: Vec<usize> = (0..reqs.len()).collect();
    by_sent.sort_by_key(|i| reqs[*i].sent_ns);
    let mut order: Vec<usize> = (0..served.len()).collect();
    order.sort_by_key(|i| served[*i].queued_ns);
    let mut out = vec![None; reqs.len()];
    for si in order {
        let s = &served[si];
        let upto = by_sent.partition_point(|i| reqs[*i].sent_ns <= s.queued_ns);
        let lo = upto.saturating_sub(MATCH_WINDOW);
        for k in (lo..upto).rev() {
            let ri = by_sent[k];
            if out[ri].is_none() && reqs[ri].end_ns >= s.queued_ns {
                out[ri] = Some(si);
                break;
            }
        }
    }
    out
}

/// The packets of one request: its track, the outer slice (intended or
/// sent to end) with its phases inside, and where it was matched, the
/// serving thread's slice joined to it by a flow. `ts` converts
/// CLOCK_MONOTONIC to the trace clock.
pub fn request_packets(
    r: &Req,
    served: Option<&Served>,
    generator_pid: u32,
    ts: impl Fn(u64) -> u64,
) -> Vec<TracePacket> {
    let track = packets::request_uuid(r.id);
    let title = if r.warmup {
        format!("request {} (warm-up)", r.id)
    } else {
        format!("request {}", r.id)
    };
    let mut out = vec![packets::named_track(
        track,
        Some(packets::process_uuid(generator_pid)),
        &title,
    )];
    let start = r.intended_ns.unwrap_or(r.sent_ns).min(r.sent_ns);
    let end = r.end_ns.max(r.sent_ns);
    let mut args = vec![
        ("id", Arg::U(r.id)),
        ("outcome", Arg::S(r.outcome.clone())),
        ("status", Arg::U(r.status)),
        ("e2e_ns", Arg::U(r.end_ns.saturating_sub(r.sent_ns))),
        ("generator_tid", Arg::U(u64::from(r.tid))),
    ];
    if let Some(i) = r.intended_ns {
        args.push(("e2e_sched_ns", Arg::U(r.end_ns.saturating_sub(i))));
    }
    if let Some(f) = r.first_token_ns {
        args.push(("ttft_ns", Arg::U(f.saturating_sub(r.sent_ns))));
    }
    if let Some(n) = r.output_tokens {
        args.push(("output_tokens", Arg::U(n)));
    }
    if let Some(s) = served {
        args.push(("served_by_tid", Arg::U(u64::from(s.tid))));
        args.push(("server_request_id", Arg::U(s.id)));
        args.push((
            "server_queue_ns",
            Arg::U(s.start_ns.saturating_sub(s.queued_ns)),
        ));
    }
    out.push(packets::slice_begin(&Ev {
        track,
        ts: ts(start),
        name: &title,
        args,
        ..Ev::default()
    }));
    let flow = served.map(|_| track);
    let mut phase = |name: &str, a: u64, b: u64, flows: Vec<u64>| {
        let (a, b) = (a.clamp(start, end), b.clamp(start, end));
        out.push(packets::slice_begin(&Ev {
            track,
            ts: ts(a),
            name,
            flows,
            ..Ev::default()
        }));
        out.push(packets::slice_end(track, ts(b.max(a))));
    };
    if start < r.sent_ns {
        phase("schedule lag", start, r.sent_ns, vec![]);
    }
    match r.first_token_ns {
        Some(f) => {
            phase("to first token", r.sent_ns, f, flow.into_iter().collect());
            phase("streaming", f, end, vec![]);
        }
        None => phase("waiting", r.sent_ns, end, flow.into_iter().collect()),
    }
    out.push(packets::slice_end(track, ts(end)));
    if let (Some(s), Some(f)) = (served, flow) {
        let t = packets::thread_uuid(s.tid);
        let name = format!("serve request {}", r.id);
        out.push(packets::slice_begin(&Ev {
            track: t,
            ts: ts(s.start_ns),
            name: &name,
            args: vec![
                ("server_request_id", Arg::U(s.id)),
                ("queued_ns", Arg::U(s.start_ns.saturating_sub(s.queued_ns))),
            ],
            terminating_flows: vec![f],
            ..Ev::default()
        }));
        out.push(packets::slice_end(t, ts(s.end_ns.max(s.start_ns))));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: u64, sent: u64, end: u64) -> Req {
        Req {
            id,
            warmup: false,
            intended_ns: None,
            sent_ns: sent,
            first_token_ns: None,
            end_ns: end,
            status: 200,
            outcome: "ok".into(),
            output_tokens: None,
            tid: 1,
        }
    }

    fn served(id: u64, queued: u64, end: u64) -> Served {
        Served {
            id,
            tid: 50 + id as u32,
            worker: "w".into(),
            queued_ns: queued,
            start_ns: queued + 1,
            first_token_ns: None,
            end_ns: end,
        }
    }

    #[test]
    fn records_parse_from_the_generators_json_lines() {
        let v: Value = serde_json::from_str(
            r#"{"id":3,"warmup":false,"intended_ns":90,"sent_ns":100,"first_byte_ns":110,
            "first_token_ns":120,"end_ns":200,"status":200,"outcome":"ok","output_tokens":8,
            "bytes":10,"tid":77}"#,
        )
        .unwrap();
        let r = Req::from_json(&v).unwrap();
        assert_eq!(
            (r.id, r.intended_ns, r.first_token_ns),
            (3, Some(90), Some(120))
        );
        assert_eq!((r.tid, r.output_tokens), (77, Some(8)));
        assert!(Req::from_json(&serde_json::json!({"id": 1})).is_none());
    }

    #[test]
    fn served_requests_match_the_request_that_was_in_flight() {
        // Two overlapping requests; the server queued each just after its send.
        let reqs = vec![req(0, 100, 500), req(1, 200, 300), req(2, 1000, 1100)];
        // The server may stamp its end after the client saw the last byte.
        let srv = vec![served(7, 205, 301), served(8, 105, 480)];
        let m = match_served(&reqs, &srv);
        assert_eq!(m, vec![Some(1), Some(0), None]);
        // Queued after every request in flight ended: no match.
        let late = vec![served(9, 1200, 1300)];
        assert_eq!(match_served(&reqs, &late), vec![None, None, None]);
    }

    #[test]
    fn a_request_becomes_nested_slices_with_a_flow_to_its_server_thread() {
        let mut r = req(4, 100, 400);
        r.intended_ns = Some(90);
        r.first_token_ns = Some(150);
        let s = served(9, 110, 390);
        let ps = request_packets(&r, Some(&s), 1234, |t| t + 1000);
        let names: Vec<&str> = ps
            .iter()
            .filter(|p| p.has_track_event())
            .map(|p| p.track_event().name())
            .collect();
        assert_eq!(
            names,
            vec![
                "request 4",
                "schedule lag",
                "",
                "to first token",
                "",
                "streaming",
                "",
                "",
                "serve request 4",
                ""
            ]
        );
        assert_eq!(
            ps[0].track_descriptor().parent_uuid(),
            packets::process_uuid(1234)
        );
        assert_eq!(ps[1].timestamp(), 1090);
        let last_end = &ps[ps.len() - 3];
        assert_eq!(last_end.timestamp(), 1400);
        let to_ft = &ps[4];
        assert_eq!(to_ft.track_event().name(), "to first token");
        let srv = &ps[ps.len() - 2];
        assert_eq!(srv.track_event().track_uuid(), packets::thread_uuid(59));
        assert_eq!(
            srv.track_event().terminating_flow_ids,
            to_ft.track_event().flow_ids
        );
        assert_eq!(srv.timestamp(), 1111);
    }
}
