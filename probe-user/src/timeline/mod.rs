//! Perfetto timelines: requests and what the kernel did to the threads that
//! served them, on one clock, as a protobuf trace for ui.perfetto.dev.
//!
//! - `writer`: the streamed file with a size cap, counting what it left out.
//! - `sched`: per-CPU compact scheduler bundles (switch, waking) and IRQ /
//!   softirq entry/exit, so the trace processor derives thread states.
//! - `packets`: clock snapshot, system info, track descriptors, slices.
//! - `requests`: requests as async slices, flows to the serving thread.
//! - `session`: `tailprobe load --perfetto` (recording beside the load).
//!
//! Our stamps are CLOCK_MONOTONIC (`bpf_ktime_get_ns`, the generator's
//! records). Perfetto's trace clock is CLOCK_BOOTTIME, the clock of ftrace
//! data: every stamp is written as BOOTTIME (monotonic + the offset measured
//! at the start), and a `ClockSnapshot` with both clocks states the offset.
//!
//! For callers (record, load, experiment): make a [`Timeline`], hand it as
//! a [`SharedTimeline`] to `RecordOptions::timeline`, add requests with
//! [`Timeline::add_requests`], then [`Timeline::finish`].

mod packets;
pub mod requests;
mod sched;
pub mod session;
mod writer;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::BufRead as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::{Context as _, Result};
use probe_common::{event, trace::kind, Event};
use serde::Serialize;
use tailprobe_system::procfs::ProcFs;

pub use perfetto_protos as protos;
/// The kernel's trace records, for callers that make traces themselves.
pub use probe_common::{trace::kind as rec_kind, TraceRec};
pub use requests::{Req, Served};
pub use writer::WriteError;

use self::{
    packets::{Arg, Ev},
    sched::CpuBundles,
    writer::PacketWriter,
};

/// Default cap on a trace file (`--perfetto-max-mb`).
pub const DEFAULT_MAX_MB: u64 = 200;

/// Where and how big.
#[derive(Debug, Clone)]
pub struct TraceOptions {
    pub path: PathBuf,
    pub max_bytes: u64,
    /// Bytes of the cap kept for the request slices added at the end
    /// (kernel events stop that much earlier); 0: none kept.
    pub request_reserve: u64,
    /// Where process and thread names and command lines are read
    /// (`/proc`, or a fixture tree).
    pub proc: ProcFs,
}

impl TraceOptions {
    pub fn new(path: &Path, max_mb: u64) -> Self {
        TraceOptions {
            path: path.to_path_buf(),
            max_bytes: max_mb.saturating_mul(1 << 20),
            request_reserve: 0,
            proc: ProcFs::default(),
        }
    }
}

/// What a finished trace holds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TraceSummary {
    pub path: PathBuf,
    pub bytes: u64,
    pub packets: u64,
    /// Events written, by kind (switch, waking, irq, page_fault,
    /// migration, request, flow).
    pub events: BTreeMap<&'static str, u64>,
    /// Events left out by the size cap, by kind.
    pub left_out: BTreeMap<&'static str, u64>,
    /// Records the kernel dropped (its trace ring buffer was full).
    pub kernel_dropped: u64,
    /// First to last event, CLOCK_MONOTONIC ns (0 when none).
    pub first_ns: u64,
    pub last_ns: u64,
}

impl TraceSummary {
    pub fn total_events(&self) -> u64 {
        self.events.values().sum()
    }

    /// Events per second of recording (None for an empty trace).
    pub fn events_per_s(&self) -> Option<f64> {
        let span = self.last_ns.checked_sub(self.first_ns).filter(|s| *s > 0)?;
        Some(self.total_events() as f64 / (span as f64 / 1e9))
    }

    /// One line for stderr.
    pub fn line(&self) -> String {
        let mut s = format!(
            "perfetto trace {}: {:.1} MB, {} events",
            self.path.display(),
            self.bytes as f64 / 1e6,
            self.total_events()
        );
        if let Some(r) = self.events_per_s() {
            s.push_str(&format!(" ({r:.0}/s of recording)"));
        }
        s.push_str("; open it at https://ui.perfetto.dev");
        s
    }
}

/// The generator's per-request records (`--requests-out`, JSON Lines);
/// lines that are not records are skipped.
pub fn read_request_records(records: &Path) -> Result<Vec<Req>> {
    let f = std::fs::File::open(records)
        .with_context(|| format!("reading the request records {}", records.display()))?;
    let mut reqs = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let line =
            line.with_context(|| format!("reading the request records {}", records.display()))?;
        if let Some(r) = serde_json::from_str(&line)
            .ok()
            .and_then(|v| Req::from_json(&v))
        {
            reqs.push(r);
        }
    }
    Ok(reqs)
}

/// A trace being written, shared between the recording and its caller.
pub type SharedTimeline = Arc<Mutex<Timeline>>;

/// A Perfetto trace being written.
pub struct Timeline {
    w: PacketWriter,
    sched: CpuBundles,
    /// BOOTTIME - MONOTONIC at the start, ns.
    offset: u64,
    processes: BTreeSet<u32>,
    threads: BTreeSet<u32>,
    events: BTreeMap<&'static str, u64>,
    first_ns: u64,
    last_ns: u64,
    kernel_dropped: u64,
    /// Requests only partly written (the size cap fell inside them).
    requests_cut: u64,
    proc: ProcFs,
}

fn clock_ns(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; both clocks exist on Linux.
    unsafe { libc::clock_gettime(id, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// (BOOTTIME, MONOTONIC) read back to back, the monotonic one the middle of
/// two reads.
fn clock_pair() -> (u64, u64) {
    let m0 = clock_ns(libc::CLOCK_MONOTONIC);
    let b = clock_ns(libc::CLOCK_BOOTTIME);
    let m1 = clock_ns(libc::CLOCK_MONOTONIC);
    (b, m0 + (m1 - m0) / 2)
}

fn uname() -> [String; 4] {
    // SAFETY: utsname is plain bytes; zeroed is a valid value.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return Default::default();
    }
    let s = |f: &[libc::c_char]| {
        let b: Vec<u8> = f
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        String::from_utf8_lossy(&b).into_owned()
    };
    [s(&u.sysname), s(&u.release), s(&u.version), s(&u.machine)]
}

/// A process's command line (its first 8 arguments), empty when gone.
fn proc_cmdline(proc: &ProcFs, pid: u32) -> Vec<String> {
    let mut args = proc.cmdline_args(pid).unwrap_or_default();
    args.truncate(8);
    args
}

impl Timeline {
    /// Create the file and write the clock snapshot and the system info.
    pub fn create(opts: &TraceOptions) -> Result<Timeline> {
        let mut w = PacketWriter::create(&opts.path, opts.max_bytes)?;
        w.reserve_for_requests(opts.request_reserve);
        let (boot, mono) = clock_pair();
        // Without a suspend the two clocks are equal and the read order can
        // make boot a few ns "before" mono: the offset is then 0, and the
        // snapshot states exactly the offset applied.
        let offset = boot.saturating_sub(mono);
        let [sys, rel, ver, mach] = uname();
        w.write(&packets::clock_snapshot(boot, boot - offset), "clock", 0)?;
        w.write(&packets::system_info(&sys, &rel, &ver, &mach), "system", 0)?;
        Ok(Timeline {
            w,
            sched: CpuBundles::new(crate::record::irq_names()),
            offset,
            processes: BTreeSet::new(),
            threads: BTreeSet::new(),
            events: BTreeMap::new(),
            first_ns: 0,
            last_ns: 0,
            kernel_dropped: 0,
            requests_cut: 0,
            proc: opts.proc.clone(),
        })
    }

    pub fn shared(self) -> SharedTimeline {
        Arc::new(Mutex::new(self))
    }

    /// CLOCK_MONOTONIC ns to the trace's clock (BOOTTIME).
    pub fn trace_ts(&self, mono_ns: u64) -> u64 {
        mono_ns.saturating_add(self.offset)
    }

    fn seen(&mut self, mono_ns: u64) {
        if self.first_ns == 0 || mono_ns < self.first_ns {
            self.first_ns = mono_ns;
        }
        self.last_ns = self.last_ns.max(mono_ns);
    }

    fn count(&mut self, kind: &'static str, n: u64) {
        *self.events.entry(kind).or_default() += n;
    }

    /// Descriptor packets for a process and a thread seen for the first time.
    fn describe(&mut self, tid: u32, tgid: u32, comm: Option<&str>) -> Result<()> {
        if tid == 0 || tgid == 0 {
            return Ok(());
        }
        if self.processes.insert(tgid) {
            let name = self
                .proc
                .comm(tgid)
                .or_else(|| comm.map(str::to_string))
                .unwrap_or_else(|| format!("pid {tgid}"));
            self.w.write(
                &packets::process_track(tgid, &name, proc_cmdline(&self.proc, tgid)),
                "descriptor",
                0,
            )?;
        }
        if self.threads.insert(tid) {
            let name = self
                .proc
                .thread_comm(tgid, tid)
                .or_else(|| comm.map(str::to_string))
                .unwrap_or_else(|| format!("tid {tid}"));
            self.w
                .write(&packets::thread_track(tgid, tid, &name), "descriptor", 0)?;
        }
        Ok(())
    }

    /// Name a process (e.g. the load generator) before its tracks appear.
    pub fn name_process(&mut self, pid: u32, name: &str) -> Result<()> {
        if self.processes.insert(pid) {
            self.w.write(
                &packets::process_track(pid, name, proc_cmdline(&self.proc, pid)),
                "descriptor",
                0,
            )?;
        }
        Ok(())
    }

    /// One record of the kernel's scheduler trace stream.
    pub fn sched(&mut self, r: &TraceRec) -> Result<()> {
        self.seen(r.ts_ns);
        match r.kind {
            kind::SWITCH => {
                let (n, p) = (sched::comm_str(&r.comm), sched::comm_str(&r.prev_comm));
                self.describe(r.pid, r.tgid, Some(&n))?;
                self.describe(r.prev_pid, r.prev_tgid, Some(&p))?;
            }
            _ => self.describe(r.pid, r.tgid, None)?,
        }
        let ts = self.trace_ts(r.ts_ns);
        if let Some(cpu) = self.sched.push(r, ts) {
            self.flush_cpu(cpu)?;
        }
        Ok(())
    }

    fn flush_cpu(&mut self, cpu: u32) -> Result<()> {
        let Some((b, n)) = self.sched.take(cpu) else {
            return Ok(());
        };
        let mut p = perfetto_protos::trace_packet::TracePacket::new();
        p.set_ftrace_events(b);
        if self.w.write(&p, "scheduler", n.total())? {
            self.count("switch", n.switches);
            self.count("waking", n.wakings);
            self.count("irq", n.irqs);
        }
        Ok(())
    }

    /// A page fault or migration of a target thread (`--trace-events`
    /// records); other kinds are not drawn.
    pub fn kernel_event(&mut self, e: &Event) -> Result<()> {
        let (name, args) = match e.kind {
            event::PAGE_FAULT => ("page fault", vec![("cpu", Arg::U(u64::from(e.cpu)))]),
            event::MIGRATION => {
                let from = e.aux >> 16;
                let mut a = vec![("to_cpu", Arg::U(u64::from(e.aux & 0xffff)))];
                if from != 0xffff {
                    a.push(("from_cpu", Arg::U(u64::from(from))));
                }
                a.push(("cross_llc", Arg::U(e.value_ns & 1)));
                a.push(("cross_numa", Arg::U((e.value_ns >> 1) & 1)));
                ("migration", a)
            }
            _ => return Ok(()),
        };
        self.seen(e.ts_ns);
        self.describe(e.tid, e.tgid, None)?;
        let p = packets::instant(&Ev {
            track: packets::thread_uuid(e.tid),
            ts: self.trace_ts(e.ts_ns),
            name,
            args,
            ..Ev::default()
        });
        let k = if e.kind == event::PAGE_FAULT {
            "page_fault"
        } else {
            "migration"
        };
        if self.w.write(&p, k, 1)? {
            self.count(k, 1);
        }
        Ok(())
    }

    /// Records the kernel dropped (its ring buffer was full), for the note.
    pub fn set_kernel_dropped(&mut self, n: u64) {
        self.kernel_dropped = n;
    }

    /// The generator's requests (its `--requests-out` file), with flows to
    /// the server threads in `served` where they match. Returns (requests,
    /// matched).
    pub fn add_requests(
        &mut self,
        records: &Path,
        served: &[Served],
        generator_pid: u32,
    ) -> Result<(u64, u64)> {
        let reqs = read_request_records(records)?;
        self.name_process(generator_pid, "tailprobe load")?;
        let m = requests::match_served(&reqs, served);
        let mut matched = 0;
        for (r, si) in reqs.iter().zip(m) {
            let s = si.and_then(|i| served.get(i));
            if let Some(s) = s {
                let pid = self.worker_pid(s.tid);
                self.describe(s.tid, pid, Some(&s.worker))?;
            }
            self.seen(r.intended_ns.unwrap_or(r.sent_ns));
            self.seen(r.end_ns);
            let off = self.offset;
            let ps = requests::request_packets(r, s, generator_pid, |t| t.saturating_add(off));
            let mut all = true;
            for p in &ps {
                all &= self.w.write(p, "request", 0)?;
            }
            if all {
                self.count("request", 1);
                if s.is_some() {
                    matched += 1;
                    self.count("flow", 1);
                }
            } else {
                self.requests_cut += 1;
            }
        }
        Ok((reqs.len() as u64, matched))
    }

    fn worker_pid(&self, tid: u32) -> u32 {
        self.proc.tgid_of(tid).unwrap_or(tid)
    }

    /// Write what is still buffered and the closing note; close the file.
    pub fn finish(mut self) -> Result<TraceSummary> {
        for cpu in self.sched.pending() {
            self.flush_cpu(cpu)?;
        }
        let partial = self.requests_cut;
        let left_out = self.w.left_out().clone();
        let dropped: u64 = left_out.values().sum::<u64>() + partial;
        if dropped > 0 || self.kernel_dropped > 0 {
            let msg = format!(
                "tailprobe left out {dropped} events (size cap; by kind: {left_out:?}, \
                 requests cut: {partial}) and the kernel dropped {} records (ring buffer full)",
                self.kernel_dropped
            );
            eprintln!(
                "tailprobe: perfetto trace {}: {msg}",
                self.w.path().display()
            );
            self.w.write_closing(&packets::named_track(
                packets::NOTES_UUID,
                None,
                "tailprobe notes",
            ))?;
            let mut args: Vec<(&str, Arg)> =
                left_out.iter().map(|(k, v)| (*k, Arg::U(*v))).collect();
            args.push(("requests_cut", Arg::U(partial)));
            args.push(("kernel_dropped", Arg::U(self.kernel_dropped)));
            let ts = self.trace_ts(self.last_ns);
            self.w.write_closing(&packets::instant(&Ev {
                track: packets::NOTES_UUID,
                ts,
                name: &msg,
                args,
                ..Ev::default()
            }))?;
        }
        let mut left = left_out;
        if partial > 0 {
            left.insert("request", partial);
        }
        let s = TraceSummary {
            path: self.w.path().to_path_buf(),
            bytes: self.w.bytes(),
            packets: self.w.packets(),
            events: self.events,
            left_out: left,
            kernel_dropped: self.kernel_dropped,
            first_ns: self.first_ns,
            last_ns: self.last_ns,
        };
        self.w.finish()?;
        Ok(s)
    }
}

impl std::fmt::Debug for Timeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeline")
            .field("path", &self.w.path())
            .field("bytes", &self.w.bytes())
            .finish_non_exhaustive()
    }
}

/// Read a whole trace back (tests, checks).
pub fn read_trace(path: &Path) -> Result<perfetto_protos::trace::Trace> {
    use protobuf::Message as _;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    perfetto_protos::trace::Trace::parse_from_bytes(&bytes)
        .with_context(|| format!("{} is not a Perfetto protobuf trace", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_with_scheduler_events_and_requests_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.pftrace");
        let mut t = Timeline::create(&TraceOptions::new(&path, 10)).unwrap();
        let base = 1_000_000_000u64;
        for i in 0..10u64 {
            t.sched(&TraceRec {
                ts_ns: base + i * 1000,
                kind: kind::SWITCH,
                cpu: 0,
                pid: 100 + (i % 2) as u32,
                tgid: 100,
                prev_pid: 100 + ((i + 1) % 2) as u32,
                prev_tgid: 100,
                ..TraceRec::default()
            })
            .unwrap();
        }
        let recs = dir.path().join("r.jsonl");
        std::fs::write(
            &recs,
            format!(
                "{{\"id\":0,\"sent_ns\":{},\"end_ns\":{},\"status\":200,\"outcome\":\"ok\",\"tid\":5}}\n",
                base,
                base + 5000
            ),
        )
        .unwrap();
        assert_eq!(t.add_requests(&recs, &[], 4242).unwrap(), (1, 0));
        let off = t.offset;
        let s = t.finish().unwrap();
        assert_eq!(s.events.get("switch"), Some(&10));
        assert_eq!(s.events.get("request"), Some(&1));
        assert!(s.left_out.is_empty());
        assert_eq!(s.events_per_s().map(|r| r > 0.0), Some(true));
        let tr = read_trace(&path).unwrap();
        let cs = tr.packet.iter().find(|p| p.has_clock_snapshot()).unwrap();
        let c = &cs.clock_snapshot().clocks;
        assert_eq!(c[0].timestamp() - c[1].timestamp(), off);
        let begin = tr
            .packet
            .iter()
            .find(|p| p.has_track_event() && p.track_event().name() == "request 0")
            .unwrap();
        assert_eq!(begin.timestamp(), base + off);
        let switches: usize = tr
            .packet
            .iter()
            .filter(|p| p.has_ftrace_events())
            .map(|p| p.ftrace_events().compact_sched.switch_next_pid.len())
            .sum();
        assert_eq!(switches, 10);
    }

    /// Names and command lines come from the `proc` tree the options name;
    /// the kernel's comm stands in for a task that is gone.
    #[test]
    fn descriptors_name_tasks_from_the_proc_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("proc");
        let w = |rel: &str, b: &[u8]| {
            let f = root.join(rel);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, b).unwrap();
        };
        w("100/comm", b"server\n");
        w("100/cmdline", b"a0\0a1\0a2\0a3\0a4\0a5\0a6\0a7\0a8\0a9\0");
        w("100/task/101/comm", b"worker-0\n");
        w("101/status", b"Name:\tworker-0\nTgid:\t100\n");
        let path = dir.path().join("t.pftrace");
        let mut opts = TraceOptions::new(&path, 10);
        opts.proc = ProcFs::new(&root);
        let mut t = Timeline::create(&opts).unwrap();
        assert_eq!(t.worker_pid(101), 100);
        assert_eq!(t.worker_pid(555), 555);
        t.describe(101, 100, Some("old-name")).unwrap();
        t.describe(102, 100, Some("kernel-comm")).unwrap();
        t.describe(300, 300, None).unwrap();
        t.finish().unwrap();
        let tr = read_trace(&path).unwrap();
        let tds: Vec<_> = tr
            .packet
            .iter()
            .filter(|p| p.has_track_descriptor())
            .map(|p| p.track_descriptor())
            .collect();
        let process = |pid: i32| {
            tds.iter()
                .find_map(|d| d.process.as_ref().filter(|p| p.pid() == pid))
                .unwrap()
        };
        let thread = |tid: i32| {
            tds.iter()
                .find_map(|d| d.thread.as_ref().filter(|t| t.tid() == tid))
                .unwrap()
        };
        assert_eq!(process(100).process_name(), "server");
        assert_eq!(
            process(100).cmdline,
            ["a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7"]
        );
        assert_eq!(thread(101).thread_name(), "worker-0");
        assert_eq!(thread(102).thread_name(), "kernel-comm");
        assert_eq!(process(300).process_name(), "pid 300");
        assert!(process(300).cmdline.is_empty());
        assert_eq!(thread(300).thread_name(), "tid 300");
    }
}
