//! Feeding a trace from a recording, and `tailprobe load --perfetto`: the
//! recording of the server beside the load, then the requests.

use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _, Result};
use probe_common::Event;

use super::{requests::Served, SharedTimeline, Timeline, TraceOptions, TraceSummary};
use crate::{
    kernel::loader::Probes,
    load::{self, report::LoadReport, target::Target, LoadOptions},
    record::{self, Callback, RecordOptions, TargetSpec},
};

/// Size of the kernel's scheduler trace ring buffer (drained every poll).
pub const SCHED_RING_BYTES: u32 = 16 << 20;

fn lock(tl: &SharedTimeline) -> Result<std::sync::MutexGuard<'_, Timeline>> {
    tl.lock()
        .map_err(|_| anyhow!("the Perfetto trace writer panicked earlier"))
}

/// Move what the kernel streamed into the trace (called each poll).
pub fn feed(tl: &SharedTimeline, probes: &mut Probes, events: &[Event]) -> Result<()> {
    let mut t = lock(tl)?;
    let mut err = None;
    probes.drain_sched_trace(|r| {
        if err.is_none() {
            err = t.sched(r).err();
        }
    });
    if let Some(e) = err {
        return Err(e.context("writing the Perfetto trace"));
    }
    for e in events {
        t.kernel_event(e).context("writing the Perfetto trace")?;
    }
    Ok(())
}

/// At the end of a recording: what the kernel had to drop.
pub fn feed_end(tl: &SharedTimeline, probes: &Probes) {
    if let Ok(mut t) = tl.lock() {
        t.set_kernel_dropped(probes.sched_trace_dropped());
    }
}

/// What `/debug/requests` of tailprobe's built-in server says.
#[derive(Debug, Default)]
pub struct ServerJournal {
    pub pid: u32,
    pub served: Vec<Served>,
}

/// `GET /debug/requests[?after=N]` on the server of `url`; None when the
/// server is not tailprobe's built-in one.
pub fn server_journal(url: &str, after: Option<u64>) -> Option<ServerJournal> {
    let uri: http::Uri = url.parse().ok()?;
    let auth = uri.authority()?;
    let q = after.map(|a| format!("?after={a}")).unwrap_or_default();
    let t = Target::new(
        &format!("http://{auth}/debug/requests{q}"),
        "GET",
        &[],
        None,
    )
    .ok()?;
    let (status, body) = load::spec::get(&t, Duration::from_secs(10)).ok()?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let pid = v.get("pid")?.as_u64()? as u32;
    let served = v
        .get("requests")
        .and_then(|r| r.as_array())
        .map(|a| a.iter().filter_map(Served::from_json).collect())
        .unwrap_or_default();
    Some(ServerJournal { pid, served })
}

/// Run `lo` while recording `pid` (or the built-in server behind `url`)
/// into a Perfetto trace with the requests. The experiment runner can call
/// this per cell.
pub fn load_with_trace(
    lo: &LoadOptions,
    url: &str,
    pid: Option<u32>,
    trace: &TraceOptions,
) -> Result<(LoadReport, TraceSummary)> {
    let before = server_journal(url, None);
    let pid = match (pid, &before) {
        (Some(p), _) => p,
        (None, Some(j)) => j.pid,
        (None, None) => bail!(
            "--perfetto needs the process to record: give --record-pid PID (the server's \
             pid), or point the load at tailprobe's built-in server (`tailprobe serve`)"
        ),
    };
    let after = before
        .as_ref()
        .and_then(|j| j.served.iter().map(|s| s.id).max());
    let tmp = tempfile::tempdir().context("creating a temporary directory for the records")?;
    let mut lo = lo.clone();
    let records = match &lo.requests_out {
        Some(p) => p.clone(),
        None => {
            let p = tmp.path().join("requests.jsonl");
            lo.requests_out = Some(p.clone());
            p
        }
    };
    let mut t = Timeline::create(trace)?;
    t.name_process(std::process::id(), "tailprobe load")?;
    let tl = t.shared();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<()>();
    let mut ro = RecordOptions::new(TargetSpec::Pid(pid));
    ro.duration = Some(Duration::from_secs(7 * 24 * 3600));
    ro.stop = Some(stop.clone());
    ro.timeline = Some(tl.clone());
    ro.on_attached = Some(Callback::new(move |_| {
        let _ = tx.send(());
    }));
    let rec = std::thread::spawn(move || record::run(&ro));
    while rx.recv_timeout(Duration::from_millis(100)).is_err() {
        if rec.is_finished() {
            return Err(match rec.join() {
                Ok(Err(e)) => e.context(format!("recording pid {pid} for the trace")),
                _ => anyhow!("the recording ended before the probes were attached"),
            });
        }
    }
    let load_res = load::run(&lo);
    stop.store(true, Ordering::SeqCst);
    let rec_res = rec
        .join()
        .map_err(|_| anyhow!("the recording thread panicked"))?;
    let report = load_res.with_context(|| format!("load on {url}"))?;
    rec_res.with_context(|| format!("recording pid {pid} for the trace"))?;
    let served = server_journal(url, after)
        .map(|j| j.served)
        .unwrap_or_default();
    let summary = finish_with_requests(tl, &records, &served, std::process::id())?;
    Ok((report, summary))
}

fn unshare(tl: SharedTimeline) -> Result<Timeline> {
    Arc::try_unwrap(tl)
        .map_err(|_| anyhow!("the Perfetto trace is still in use by a recording"))?
        .into_inner()
        .map_err(|_| anyhow!("the Perfetto trace writer panicked earlier"))
}

/// Finish a trace once the recording that fed it has ended.
pub fn finish(tl: SharedTimeline) -> Result<TraceSummary> {
    unshare(tl)?.finish()
}

/// Add the requests of `records` (a `--requests-out` file) and finish.
pub fn finish_with_requests(
    tl: SharedTimeline,
    records: &Path,
    served: &[Served],
    generator_pid: u32,
) -> Result<TraceSummary> {
    let mut t = unshare(tl)?;
    let (n, matched) = t.add_requests(records, served, generator_pid)?;
    if !served.is_empty() && matched < n {
        eprintln!(
            "tailprobe: perfetto trace: {matched} of {n} requests matched to the server thread \
             that served them (the server's journal keeps the most recent only)"
        );
    }
    t.finish()
}
