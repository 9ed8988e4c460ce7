//! Server metrics in the Prometheus text exposition format.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Mutex,
    },
};

/// Upper bounds of the latency histogram buckets, seconds.
pub const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Debug, Default)]
pub struct Metrics {
    /// (endpoint, status) -> count.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Model requests' latency (arrival to last byte handed to the stack).
    buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_ns: AtomicU64,
    pub queue_depth: AtomicI64,
    pub in_flight: AtomicI64,
    pub tokens: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub cancelled: AtomicU64,
    pub rejected_queue_full: AtomicU64,
    /// Accepts that found the process out of file descriptors (or memory)
    /// and waited before trying again.
    pub accept_backoffs: AtomicU64,
}

impl Metrics {
    pub fn request(&self, endpoint: &'static str, status: u16) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((endpoint, status)).or_insert(0) += 1;
        }
    }

    pub fn latency(&self, ns: u64) {
        let s = ns as f64 / 1e9;
        for (b, le) in self.buckets.iter().zip(BUCKETS) {
            if s <= le {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The Prometheus text.
    pub fn render(&self, workers: usize) -> String {
        let mut o = String::new();
        o.push_str("# HELP tailprobe_serve_requests_total HTTP requests by endpoint and status.\n");
        o.push_str("# TYPE tailprobe_serve_requests_total counter\n");
        if let Ok(m) = self.requests.lock() {
            for ((e, c), n) in m.iter() {
                let _ = writeln!(
                    o,
                    "tailprobe_serve_requests_total{{endpoint=\"{e}\",code=\"{c}\"}} {n}"
                );
            }
        }
        o.push_str("# HELP tailprobe_serve_request_duration_seconds Model request latency, arrival to last byte.\n");
        o.push_str("# TYPE tailprobe_serve_request_duration_seconds histogram\n");
        for (b, le) in self.buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                o,
                "tailprobe_serve_request_duration_seconds_bucket{{le=\"{le}\"}} {}",
                b.load(Ordering::Relaxed)
            );
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let _ = writeln!(
            o,
            "tailprobe_serve_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            o,
            "tailprobe_serve_request_duration_seconds_sum {}",
            self.latency_sum_ns.load(Ordering::Relaxed) as f64 / 1e9
        );
        let _ = writeln!(o, "tailprobe_serve_request_duration_seconds_count {count}");
        let gauges: [(&str, &str, &str, i64); 8] = [
            (
                "queue_depth",
                "gauge",
                "Requests waiting for a worker.",
                self.queue_depth.load(Ordering::Relaxed),
            ),
            (
                "in_flight",
                "gauge",
                "Model requests being handled.",
                self.in_flight.load(Ordering::Relaxed),
            ),
            ("workers", "gauge", "Model worker threads.", workers as i64),
            (
                "generated_tokens_total",
                "counter",
                "Output tokens generated.",
                self.tokens.load(Ordering::Relaxed) as i64,
            ),
            (
                "prompt_tokens_total",
                "counter",
                "Prompt tokens prefilled.",
                self.prompt_tokens.load(Ordering::Relaxed) as i64,
            ),
            (
                "cancelled_total",
                "counter",
                "Requests whose client went away before the end.",
                self.cancelled.load(Ordering::Relaxed) as i64,
            ),
            (
                "rejected_queue_full_total",
                "counter",
                "Requests refused with 503 because the queue was full.",
                self.rejected_queue_full.load(Ordering::Relaxed) as i64,
            ),
            (
                "accept_backoffs_total",
                "counter",
                "Accepts that found the server out of file descriptors and waited.",
                self.accept_backoffs.load(Ordering::Relaxed) as i64,
            ),
        ];
        for (name, kind, help, v) in gauges {
            let _ = writeln!(o, "# HELP tailprobe_serve_{name} {help}");
            let _ = writeln!(o, "# TYPE tailprobe_serve_{name} {kind}");
            let _ = writeln!(o, "tailprobe_serve_{name} {v}");
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.request("completions", 200);
        m.request("completions", 200);
        m.request("health", 200);
        m.latency(3_000_000);
        m.latency(200_000_000);
        let t = m.render(2);
        assert!(
            t.contains("tailprobe_serve_requests_total{endpoint=\"completions\",code=\"200\"} 2")
        );
        assert!(t.contains("tailprobe_serve_request_duration_seconds_bucket{le=\"0.001\"} 0"));
        assert!(t.contains("tailprobe_serve_request_duration_seconds_bucket{le=\"0.005\"} 1"));
        assert!(t.contains("tailprobe_serve_request_duration_seconds_bucket{le=\"0.25\"} 2"));
        assert!(t.contains("tailprobe_serve_request_duration_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(t.contains("tailprobe_serve_request_duration_seconds_count 2"));
        assert!(t.contains("tailprobe_serve_workers 2"));
        assert!(t.contains("tailprobe_serve_queue_depth 0"));
    }
}
