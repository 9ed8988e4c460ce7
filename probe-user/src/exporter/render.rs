//! The exposition: Prometheus text format 0.0.4, or OpenMetrics 1.0 when
//! the scraper asks for it. Pure: a [`Snapshot`] in, text out. Metric
//! names, units and types follow Prometheus's conventions (base units,
//! `_total` on counters); docs/fleet.md is the reference.

use std::{collections::BTreeMap, fmt::Write as _};

use probe_common::bucket_lower_bound;

use super::fold::Agg;

/// One target as the scrape sees it.
#[derive(Debug, Clone, Default)]
pub struct TargetView {
    pub kind: &'static str,
    pub agg: Agg,
    /// Followed processes with this name now.
    pub processes: u64,
    /// Resident memory per NUMA node (bytes), at the last memory sample.
    pub memory_per_node: BTreeMap<u32, u64>,
    /// Share of that memory on nodes where the processes may not run.
    pub remote_ratio: Option<f64>,
}

/// One program's BPF run-time statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgramView {
    pub name: &'static str,
    pub runs: u64,
    pub run_ns: u64,
}

/// Everything one scrape exposes.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub targets: BTreeMap<String, TargetView>,
    /// Migrations can be classified (CPU -> LLC/node known).
    pub topology_known: bool,
    pub programs: Vec<ProgramView>,
    /// Share of one CPU the programs used over the last interval.
    pub probe_cpu_ratio: Option<f64>,
    /// Loss reason -> count (kernel counters and the exporter's own).
    pub losses: BTreeMap<String, u64>,
    /// Switch-ins the kernel did not trace, rebuilt from its accounting
    /// (`probe_common::untraced`): counted, not lost.
    pub rebuilt_switch_ins: u64,
    pub exporter_cpu_seconds: f64,
    pub exporter_rss_bytes: u64,
    pub start_time_seconds: f64,
    pub buckets_per_octave: u32,
}

/// Exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Prometheus,
    OpenMetrics,
}

impl Format {
    /// From the scraper's Accept header.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Lowest and highest histogram bound: 2^10 ns (1.024 us) and 2^32 ns
/// (4.29 s); waits above the top bound are in `+Inf` only.
pub const LOW_POW: u32 = 10;
pub const HIGH_POW: u32 = 32;

/// Bucket bounds in ns: `per_octave` per power of two (1, 2, 4, 8 or 16;
/// each is a bound of the kernel's buckets, so no kernel bucket is split).
pub fn bounds_ns(per_octave: u32) -> Vec<u64> {
    let per = per_octave.clamp(1, 16);
    let mut out = Vec::new();
    for p in LOW_POW..HIGH_POW {
        let base = 1u64 << p;
        for k in 0..per {
            out.push(base + u64::from(k) * (base / u64::from(per)));
        }
    }
    out.push(1u64 << HIGH_POW);
    out
}

/// Cumulative counts at each bound: kernel buckets that lie wholly below
/// the bound. A wait of exactly the bound lands in the next bucket (the
/// kernel's buckets are half-open, `[lo, next lo)`): 1 ns off `le`'s `<=`.
pub fn cumulative(hist: &[u64], bounds: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(bounds.len());
    let mut i = 0usize;
    let mut acc = 0u64;
    for &b in bounds {
        while i + 1 < hist.len() && bucket_lower_bound(i + 1) <= b {
            acc = acc.saturating_add(hist[i]);
            i += 1;
        }
        out.push(acc);
    }
    out
}

fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn num(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if v.is_nan() {
        "NaN".to_string()
    } else {
        format!("{v}")
    }
}

struct Out {
    fmt: Format,
    s: String,
}

impl Out {
    /// HELP/TYPE (and UNIT in OpenMetrics) of a family. `name` is the
    /// sample name without `_total` for counters.
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let unit = ["seconds", "bytes", "ratio"]
            .into_iter()
            .find(|u| name.ends_with(&format!("_{u}")));
        let _ = writeln!(self.s, "# HELP {name} {help}");
        let _ = writeln!(self.s, "# TYPE {name} {kind}");
        if let (Format::OpenMetrics, Some(u)) = (self.fmt, unit) {
            let _ = writeln!(self.s, "# UNIT {name} {u}");
        }
    }

    fn sample(&mut self, name: &str, l: &[(&str, &str)], v: f64) {
        let _ = writeln!(self.s, "{name}{} {}", labels(l), num(v));
    }

    fn counter(&mut self, name: &str, help: &str, rows: &[(Vec<(&str, &str)>, f64)]) {
        // The text format names the family by its sample (`_total`);
        // OpenMetrics names it without the suffix.
        match self.fmt {
            Format::Prometheus => self.family(&format!("{name}_total"), "counter", help),
            Format::OpenMetrics => self.family(name, "counter", help),
        }
        for (l, v) in rows {
            self.sample(&format!("{name}_total"), l, *v);
        }
    }

    fn gauge(&mut self, name: &str, help: &str, rows: &[(Vec<(&str, &str)>, f64)]) {
        self.family(name, "gauge", help);
        for (l, v) in rows {
            self.sample(name, l, *v);
        }
    }
}

const NS: f64 = 1e9;

/// Render one scrape.
pub fn render(snap: &Snapshot, fmt: Format) -> String {
    let mut o = Out {
        fmt,
        s: String::new(),
    };
    runqueue(&mut o, snap);
    scheduling(&mut o, snap);
    interrupts_and_memory(&mut o, snap);
    targets(&mut o, snap);
    own_cost(&mut o, snap);
    if fmt == Format::OpenMetrics {
        o.s.push_str("# EOF\n");
    }
    o.s
}

/// One row per target, labelled with its name.
fn per<'a>(
    t: &'a BTreeMap<String, TargetView>,
    f: &dyn Fn(&TargetView) -> f64,
) -> Vec<(Vec<(&'static str, &'a str)>, f64)> {
    t.iter()
        .map(|(n, v)| (vec![("target", n.as_str())], f(v)))
        .collect()
}

/// The run-queue wait histogram per target.
fn runqueue(o: &mut Out, snap: &Snapshot) {
    let t = &snap.targets;
    // Run-queue wait histogram.
    let name = "tailprobe_runqueue_wait_seconds";
    o.family(
        name,
        "histogram",
        "Time target threads waited runnable on a run queue before getting a CPU.",
    );
    let bounds = bounds_ns(snap.buckets_per_octave);
    for (n, v) in t {
        let cum = cumulative(&v.agg.hist, &bounds);
        let total: u64 = v.agg.hist.iter().sum();
        for (b, c) in bounds.iter().zip(&cum) {
            let le = num(*b as f64 / NS);
            o.sample(
                &format!("{name}_bucket"),
                &[("target", n), ("le", &le)],
                *c as f64,
            );
        }
        o.sample(
            &format!("{name}_bucket"),
            &[("target", n), ("le", "+Inf")],
            total as f64,
        );
        o.sample(
            &format!("{name}_sum"),
            &[("target", n)],
            v.agg.stats.runq_total_ns as f64 / NS,
        );
        o.sample(&format!("{name}_count"), &[("target", n)], total as f64);
    }
}

/// Longest wait, time on CPU, switches, wakeups and migrations.
fn scheduling(o: &mut Out, snap: &Snapshot) {
    let t = &snap.targets;
    o.gauge(
        "tailprobe_runqueue_wait_max_seconds",
        "Longest single run-queue wait of the target since the exporter started.",
        &per(t, &|v| v.agg.stats.runq_max_ns as f64 / NS),
    );
    o.counter(
        "tailprobe_oncpu_seconds",
        "Time target threads ran on a CPU.",
        &per(t, &|v| v.agg.stats.oncpu_ns as f64 / NS),
    );
    let mut rows = Vec::new();
    for (n, v) in t {
        rows.push((
            vec![("target", n.as_str()), ("kind", "voluntary")],
            v.agg.stats.voluntary_switches as f64,
        ));
        rows.push((
            vec![("target", n.as_str()), ("kind", "involuntary")],
            v.agg.stats.involuntary_switches as f64,
        ));
    }
    o.counter(
        "tailprobe_context_switches",
        "Target threads switched out: voluntary (blocked) or involuntary (preempted while runnable).",
        &rows,
    );
    o.counter(
        "tailprobe_wakeups",
        "Wakeups of target threads.",
        &per(t, &|v| v.agg.stats.wakeups as f64),
    );
    let mut rows = Vec::new();
    for (n, v) in t {
        let s = &v.agg.stats;
        if snap.topology_known {
            let numa = s.migrations_cross_numa;
            let llc = s.migrations_cross_llc.saturating_sub(numa);
            let same = s
                .migrations
                .saturating_sub(s.migrations_cross_llc.max(numa));
            for (class, c) in [("same_llc", same), ("cross_llc", llc), ("cross_numa", numa)] {
                rows.push((vec![("target", n.as_str()), ("class", class)], c as f64));
            }
        } else {
            rows.push((
                vec![("target", n.as_str()), ("class", "unclassified")],
                s.migrations as f64,
            ));
        }
    }
    o.counter(
        "tailprobe_migrations",
        "Migrations of target threads between CPUs, by what they crossed (same_llc, cross_llc within a node, cross_numa).",
        &rows,
    );
}

/// Time stolen by IRQs, page faults, NUMA balancing and memory by node.
fn interrupts_and_memory(o: &mut Out, snap: &Snapshot) {
    let t = &snap.targets;
    let mut secs = Vec::new();
    let mut counts = Vec::new();
    for (n, v) in t {
        let s = &v.agg.stats;
        for (kind, ns, c) in [
            ("hardirq", s.hardirq_ns, s.hardirq_count),
            ("softirq", s.softirq_ns, s.softirq_count),
        ] {
            secs.push((vec![("target", n.as_str()), ("kind", kind)], ns as f64 / NS));
            counts.push((vec![("target", n.as_str()), ("kind", kind)], c as f64));
        }
    }
    o.counter(
        "tailprobe_irq_stolen_seconds",
        "Hard IRQ and softirq time that ran while a target thread was current (stolen from it).",
        &secs,
    );
    o.counter(
        "tailprobe_irqs",
        "Hard IRQs and softirqs that ran while a target thread was current.",
        &counts,
    );
    o.counter(
        "tailprobe_page_faults",
        "User page faults of target threads.",
        &per(t, &|v| v.agg.stats.page_faults as f64),
    );
    let mut rows = Vec::new();
    for (n, v) in t {
        let s = &v.agg.stats;
        for (ev, c) in [
            ("move", s.numa_moves),
            ("swap", s.numa_swaps),
            ("stick", s.numa_sticks),
        ] {
            rows.push((vec![("target", n.as_str()), ("event", ev)], c as f64));
        }
    }
    o.counter(
        "tailprobe_numa_balancing_events",
        "NUMA balancing task moves, swaps and failed moves (stick) involving target threads.",
        &rows,
    );
    let node_names: Vec<(String, String, u64)> = t
        .iter()
        .flat_map(|(n, v)| {
            v.memory_per_node
                .iter()
                .map(move |(node, b)| (n.clone(), node.to_string(), *b))
        })
        .collect();
    let rows: Vec<(Vec<(&str, &str)>, f64)> = node_names
        .iter()
        .map(|(n, node, b)| {
            (
                vec![("target", n.as_str()), ("node", node.as_str())],
                *b as f64,
            )
        })
        .collect();
    o.gauge(
        "tailprobe_memory_bytes",
        "Resident memory of the target's processes per NUMA node (numa_maps, sampled).",
        &rows,
    );
    let rows: Vec<(Vec<(&str, &str)>, f64)> = t
        .iter()
        .filter_map(|(n, v)| Some((vec![("target", n.as_str())], v.remote_ratio?)))
        .collect();
    o.gauge(
        "tailprobe_memory_remote_ratio",
        "Share of the target's memory on NUMA nodes none of its allowed CPUs belong to.",
        &rows,
    );
}

/// What each target is and how many processes and threads it has now.
fn targets(o: &mut Out, snap: &Snapshot) {
    let t = &snap.targets;
    o.gauge(
        "tailprobe_target_processes",
        "Processes followed under this target name now.",
        &per(t, &|v| v.processes as f64),
    );
    o.gauge(
        "tailprobe_target_threads",
        "Threads of the target's processes now (/proc).",
        &per(t, &|v| v.agg.threads as f64),
    );
    let rows: Vec<(Vec<(&str, &str)>, f64)> = t
        .iter()
        .map(|(n, v)| (vec![("target", n.as_str()), ("kind", v.kind)], 1.0))
        .collect();
    o.gauge(
        "tailprobe_target_info",
        "Targets and how they were selected (unit, cgroup, comm, pid, other); always 1.",
        &rows,
    );
}

/// What the exporter itself costs and loses, and its version.
fn own_cost(o: &mut Out, snap: &Snapshot) {
    let rows: Vec<(Vec<(&str, &str)>, f64)> = snap
        .programs
        .iter()
        .map(|p| (vec![("program", p.name)], p.runs as f64))
        .collect();
    o.counter(
        "tailprobe_probe_runs",
        "Runs of each eBPF program (BPF run-time statistics).",
        &rows,
    );
    let rows: Vec<(Vec<(&str, &str)>, f64)> = snap
        .programs
        .iter()
        .map(|p| (vec![("program", p.name)], p.run_ns as f64 / NS))
        .collect();
    o.counter(
        "tailprobe_probe_run_seconds",
        "CPU time spent in each eBPF program; its rate is the share of one CPU.",
        &rows,
    );
    let rows: Vec<(Vec<(&str, &str)>, f64)> = snap
        .programs
        .iter()
        .filter(|p| p.runs > 0)
        .map(|p| {
            (
                vec![("program", p.name)],
                p.run_ns as f64 / p.runs as f64 / NS,
            )
        })
        .collect();
    o.gauge(
        "tailprobe_probe_event_cost_seconds",
        "Mean time per run of each eBPF program since start (ns per event / 1e9).",
        &rows,
    );
    let rows: Vec<(Vec<(&str, &str)>, f64)> = snap
        .probe_cpu_ratio
        .map(|r| (Vec::new(), r))
        .into_iter()
        .collect();
    o.gauge(
        "tailprobe_probe_cpu_ratio",
        "Share of one CPU all eBPF programs used over the last sampling interval.",
        &rows,
    );
    o.counter(
        "tailprobe_exporter_cpu_seconds",
        "User and system CPU time of the exporter process itself.",
        &[(Vec::new(), snap.exporter_cpu_seconds)],
    );
    o.gauge(
        "tailprobe_exporter_resident_memory_bytes",
        "Resident memory of the exporter process (VmRSS).",
        &[(Vec::new(), snap.exporter_rss_bytes as f64)],
    );
    o.gauge(
        "tailprobe_exporter_start_time_seconds",
        "When the exporter started, seconds since the Unix epoch.",
        &[(Vec::new(), snap.start_time_seconds)],
    );
    let rows: Vec<(Vec<(&str, &str)>, f64)> = snap
        .losses
        .iter()
        .map(|(r, c)| (vec![("reason", r.as_str())], *c as f64))
        .collect();
    o.counter(
        "tailprobe_lost_events",
        "Events or records lost, by reason (kernel map or ring full, unreadable task fields, the exporter's own).",
        &rows,
    );
    o.counter(
        "tailprobe_untraced_switch_ins_rebuilt",
        "Switch-ins of target threads that the kernel did not trace, whose slice and wait were rebuilt from its own accounting (not lost).",
        &[(Vec::new(), snap.rebuilt_switch_ins as f64)],
    );
    o.gauge(
        "tailprobe_build_info",
        "The exporter's version; always 1.",
        &[(vec![("version", env!("CARGO_PKG_VERSION"))], 1.0)],
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_common::{bucket_index, HIST_BUCKETS};

    #[test]
    fn bounds_are_kernel_bounds() {
        let b = bounds_ns(4);
        assert_eq!(b.len(), (HIGH_POW - LOW_POW) as usize * 4 + 1);
        assert_eq!(b[0], 1024);
        assert_eq!(b[1], 1280);
        assert_eq!(*b.last().unwrap(), 1 << 32);
        for x in &b {
            // Each bound is the lower bound of a kernel bucket.
            assert_eq!(bucket_lower_bound(bucket_index(*x)), *x);
        }
        assert_eq!(bounds_ns(1).len(), 23);
    }

    #[test]
    fn cumulative_counts() {
        let mut h = vec![0u64; HIST_BUCKETS];
        for v in [500u64, 1023, 1024, 1279, 1280, 3_000_000, 10_000_000_000] {
            h[bucket_index(v)] += 1;
        }
        let b = bounds_ns(4);
        let c = cumulative(&h, &b);
        assert_eq!(c[0], 2, "below 1024 ns");
        assert_eq!(c[1], 4, "below 1280 ns");
        assert_eq!(c[2], 5);
        assert_eq!(*c.last().unwrap(), 6, "10 s is above the top bound");
    }

    #[test]
    fn text_and_openmetrics() {
        let mut agg = Agg::default();
        agg.hist[bucket_index(2_000_000)] = 3;
        agg.stats.runq_count = 3;
        agg.stats.runq_total_ns = 6_000_000;
        agg.stats.migrations = 5;
        agg.stats.migrations_cross_llc = 2;
        agg.stats.migrations_cross_numa = 1;
        let mut snap = Snapshot {
            buckets_per_octave: 1,
            topology_known: true,
            ..Snapshot::default()
        };
        snap.targets.insert(
            "a\"b".into(),
            TargetView {
                kind: "comm",
                agg,
                processes: 1,
                ..TargetView::default()
            },
        );
        snap.losses.insert("ringbuf_reserve_failed".into(), 2);
        snap.rebuilt_switch_ins = 4;
        let s = render(&snap, Format::Prometheus);
        assert!(
            s.contains("tailprobe_runqueue_wait_seconds_bucket{target=\"a\\\"b\",le=\"+Inf\"} 3")
        );
        assert!(s.contains("tailprobe_runqueue_wait_seconds_sum{target=\"a\\\"b\"} 0.006"));
        assert!(s.contains("le=\"0.002097152\"} 3"), "{s}");
        assert!(s.contains("le=\"0.001048576\"} 0"), "{s}");
        assert!(s.contains("class=\"same_llc\"} 3"), "{s}");
        assert!(s.contains("class=\"cross_llc\"} 1"));
        assert!(s.contains("class=\"cross_numa\"} 1"));
        assert!(s.contains("# TYPE tailprobe_oncpu_seconds_total counter"));
        assert!(s.contains("tailprobe_lost_events_total{reason=\"ringbuf_reserve_failed\"} 2"));
        assert!(
            s.contains("tailprobe_untraced_switch_ins_rebuilt_total 4"),
            "{s}"
        );
        assert!(!s.contains("# EOF"));
        let m = render(&snap, Format::OpenMetrics);
        assert!(m.ends_with("# EOF\n"));
        assert!(m.contains("# UNIT tailprobe_runqueue_wait_seconds seconds"));
        assert!(m.contains("# TYPE tailprobe_oncpu_seconds counter"));
        assert!(m.contains("# UNIT tailprobe_oncpu_seconds seconds"));
        assert_eq!(
            Format::from_accept(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(Format::from_accept(Some("*/*")), Format::Prometheus);
    }
}
