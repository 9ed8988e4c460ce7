//! Root integration tests of the Perfetto timeline (`--perfetto`): traces
//! of workloads whose answer is known, parsed back with tailprobe's own
//! decoder and with the PyPI `perfetto` package's (independent) one.

use std::{collections::BTreeMap, path::Path, process::Command, time::Duration};

use serde_json::Value;
use tailprobe::{
    serve::{ServeOptions, Server},
    timeline::read_trace,
};
use tailprobe_tests::{
    delta, kernel_counters, skip_fixable, skip_unless_root, tailprobe_bin, Recording, Workload,
};

const WORKLOAD: &str = env!("CARGO_BIN_EXE_workload");

/// One switch from the trace: (CPU, BOOTTIME ns, next pid, prev_state).
type Switch = (u32, u64, i32, i64);

fn switches(path: &Path) -> Vec<Switch> {
    let t = read_trace(path).expect("trace parses");
    let mut out = Vec::new();
    for p in &t.packet {
        if !p.has_ftrace_events() {
            continue;
        }
        let b = p.ftrace_events();
        let cs = &b.compact_sched;
        let mut ts = 0u64;
        for i in 0..cs.switch_timestamp.len() {
            ts += cs.switch_timestamp[i];
            out.push((b.cpu(), ts, cs.switch_next_pid[i], cs.switch_prev_state[i]));
        }
    }
    out.sort_by_key(|s| (s.0, s.1));
    out
}

/// Two threads spinning on CPU 0: the trace's switches on that CPU hand it
/// from one to the other; every switch-out of each spinner is there (as
/// many as the kernel counted), and the on-CPU time the switches imply
/// matches schedstat.
#[test]
fn root_timeline_two_spinners_switch_between_each_other() {
    skip_unless_root!("root_timeline_two_spinners_switch_between_each_other");
    let dir = tempfile_dir();
    let path = dir.join("spin.pftrace");
    let spin_ms = 1500u64;
    let mut w = Workload::start(WORKLOAD, &["spin2", "0", &spin_ms.to_string()]);
    let rec = Recording::start(w.pid(), &["--perfetto", path.to_str().expect("path")]);
    let before: Vec<_> = w
        .tids
        .iter()
        .map(|t| kernel_counters(w.pid(), *t))
        .collect();
    w.go_and_wait(Duration::from_secs(30));
    let after: Vec<_> = w
        .tids
        .iter()
        .map(|t| kernel_counters(w.pid(), *t))
        .collect();
    let (code, report) = rec.stop();
    assert_eq!(code, 0, "exit code");
    assert_eq!(report["lossy"], false, "{:#}", report["losses"]);
    let sw = switches(&path);
    let on0: Vec<&Switch> = sw.iter().filter(|s| s.0 == 0).collect();
    let (a, b) = (w.tids[0] as i32, w.tids[1] as i32);
    // CPU 0 going from one spinner to the other (other tasks may run in
    // between on a busy machine).
    let spinners: Vec<i32> = on0
        .iter()
        .map(|s| s.2)
        .filter(|p| *p == a || *p == b)
        .collect();
    let handoffs = spinners.windows(2).filter(|p| p[0] != p[1]).count();
    eprintln!("spinner tids {:?}; handoffs on CPU 0: {handoffs}", w.tids);
    for (i, tid) in w.tids.iter().enumerate() {
        let k = delta(before[i], after[i]);
        let t = *tid as i32;
        // A switch-out of `t` on a CPU is the switch after one to `t` there.
        let mut outs = 0u64;
        // Switched out still runnable: `R` (0) or `R+` (0x100, preempted in
        // the kernel); the kernel counts both as involuntary.
        let mut runnable = 0u64;
        let mut ran = 0u64;
        for p in sw.windows(2) {
            if p[0].0 == p[1].0 && p[0].2 == t {
                outs += 1;
                ran += p[1].1 - p[0].1;
                if p[1].3 == 0 || p[1].3 == 0x100 {
                    runnable += 1;
                }
            }
        }
        let kernel_outs = k.voluntary + k.involuntary;
        eprintln!(
            "tid {tid}: switch-outs trace {outs} (runnable {runnable}), kernel {kernel_outs} \
             (involuntary {}); on-CPU trace {ran} ns, schedstat {} ns",
            k.involuntary, k.run_ns
        );
        assert!(
            outs.abs_diff(kernel_outs) as f64 <= kernel_outs as f64 * 0.02 + 3.0,
            "switch-outs: trace {outs}, kernel {kernel_outs}"
        );
        assert!(
            runnable.abs_diff(k.involuntary) as f64 <= k.involuntary as f64 * 0.02 + 3.0,
            "runnable switch-outs: trace {runnable}, kernel involuntary {}",
            k.involuntary
        );
        assert!(
            ran.abs_diff(k.run_ns) as f64 <= k.run_ns as f64 * 0.05 + 2e6,
            "on-CPU: trace {ran} ns, schedstat {} ns",
            k.run_ns
        );
    }
    assert!(
        handoffs >= 10,
        "the spinners should hand CPU 0 to each other often; {handoffs} handoffs"
    );
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("tailprobe-timeline-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// N requests to the built-in server, one at a time: N request tracks whose
/// slices last exactly what the generator's records say, each with a flow to
/// a slice on the server worker thread that served it; the server's threads
/// appear in the scheduler data. Decoded again with the `perfetto` package.
#[test]
fn root_timeline_requests_of_the_builtin_server() {
    skip_unless_root!("root_timeline_requests_of_the_builtin_server");
    let n = 20u64;
    let srv = Server::start(ServeOptions {
        addr: "127.0.0.1:0".parse().expect("addr"),
        workers: 2,
        hidden: 64,
        layers: 2,
        ..ServeOptions::default()
    })
    .expect("server starts");
    let dir = tempfile_dir();
    let path = dir.join("load.pftrace");
    let recs = dir.join("load.jsonl");
    let url = format!("http://{}/v1/completions", srv.addr());
    let out = Command::new(tailprobe_bin())
        .arg("load")
        .arg(&url)
        .args(["-n", &n.to_string(), "-c", "1", "--max-tokens", "4"])
        .args(["--prompt-tokens", "8", "--no-progress", "--perfetto"])
        .arg(&path)
        .arg("--requests-out")
        .arg(&recs)
        .output()
        .expect("run tailprobe load");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "load failed: {stderr}");
    assert!(
        stderr.contains("perfetto trace"),
        "no summary line: {stderr}"
    );
    // What the generator measured, by request id.
    let want: BTreeMap<u64, u64> = std::fs::read_to_string(&recs)
        .expect("records")
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("record JSON");
            let end = v["end_ns"].as_u64().expect("end");
            let sent = v["sent_ns"].as_u64().expect("sent");
            (v["id"].as_u64().expect("id"), end - sent)
        })
        .collect();
    assert_eq!(want.len() as u64, n);
    let t = read_trace(&path).expect("trace parses");
    let mut uuids = BTreeMap::new();
    for p in &t.packet {
        if p.has_track_descriptor() {
            let d = p.track_descriptor();
            if let Some(id) = d.name().strip_prefix("request ") {
                uuids.insert(d.uuid(), id.parse::<u64>().expect("request id"));
            }
        }
    }
    assert_eq!(uuids.len() as u64, n, "one track per request");
    // Outer slices: begin/end depth 0 on each request track.
    let mut depth: BTreeMap<u64, (usize, u64)> = BTreeMap::new();
    let mut got = BTreeMap::new();
    let (mut flows, mut ends_of_flows) = (0, 0);
    let workers: Vec<u32> = srv_worker_tids(&srv);
    let mut serve_slices_on_workers = 0;
    for p in &t.packet {
        if !p.has_track_event() {
            continue;
        }
        let te = p.track_event();
        flows += te.flow_ids.len();
        ends_of_flows += te.terminating_flow_ids.len();
        if te.name().starts_with("serve request ") {
            let tid = (te.track_uuid() & 0xffff_ffff) as u32;
            if workers.contains(&tid) {
                serve_slices_on_workers += 1;
            }
        }
        let Some(id) = uuids.get(&te.track_uuid()) else {
            continue;
        };
        let d = depth.entry(te.track_uuid()).or_insert((0, 0));
        use tailprobe_perfetto_types::*;
        if te.type_() == SLICE_BEGIN {
            if d.0 == 0 {
                d.1 = p.timestamp();
            }
            d.0 += 1;
        } else if te.type_() == SLICE_END {
            d.0 -= 1;
            if d.0 == 0 {
                got.insert(*id, p.timestamp() - d.1);
            }
        }
    }
    assert_eq!(got, want, "request slices last what the generator measured");
    assert_eq!(
        flows as u64, n,
        "a flow from every request (one at a time: all match)"
    );
    assert_eq!(ends_of_flows as u64, n);
    assert_eq!(
        serve_slices_on_workers as u64, n,
        "served on worker threads {workers:?}"
    );
    let sw = switches(&path);
    let worker_switches = sw
        .iter()
        .filter(|s| workers.contains(&(s.2 as u32)))
        .count();
    assert!(
        worker_switches >= n as usize,
        "worker switch-ins: {worker_switches}"
    );
    // The independent decoder agrees.
    let Some(py) = tailprobe_tests::python_decode_trace(&path) else {
        skip_fixable(
            "root_timeline_requests_of_the_builtin_server (python part)",
            "python3 with the `perfetto` package is missing (pip install perfetto; cargo xtask setup does it)",
        );
        return;
    };
    assert_eq!(py["counts"]["request_tracks"], n);
    assert_eq!(py["counts"]["flows"], n);
    assert_eq!(py["counts"]["switches"], sw.len());
    for (id, ns) in &want {
        assert_eq!(
            py["request_ns"][format!("request {id}")],
            *ns,
            "request {id}"
        );
    }
}

fn srv_worker_tids(srv: &Server) -> Vec<u32> {
    let (_, body) = http_get(srv.addr(), "/debug/requests");
    let v: Value = serde_json::from_str(&body).expect("debug JSON");
    v["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .filter_map(|w| w["tid"].as_u64().map(|t| t as u32))
        .collect()
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut r = String::new();
    s.read_to_string(&mut r).expect("read");
    let status = r
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = r
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

mod tailprobe_perfetto_types {
    use tailprobe::timeline::protos::track_event::track_event::Type;
    pub const SLICE_BEGIN: Type = Type::TYPE_SLICE_BEGIN;
    pub const SLICE_END: Type = Type::TYPE_SLICE_END;
}
