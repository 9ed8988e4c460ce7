//! The live progress line (stderr, only when it is a terminal).

use std::{
    io::{IsTerminal as _, Write as _},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::stats::Hist;

/// Counters the generator threads bump and the progress line reads.
#[derive(Debug, Default)]
pub struct Live {
    pub ok: AtomicU64,
    pub errors: AtomicU64,
    pub timeouts: AtomicU64,
    /// Headline latency, for the running p95 (only fed when shown).
    pub hist: Option<Mutex<Hist>>,
}

impl Live {
    pub fn new(show: bool) -> Self {
        Live {
            hist: show.then(|| Mutex::new(Hist::new())),
            ..Live::default()
        }
    }

    pub fn record(&self, ok: bool, timeout: bool, latency_ns: u64) {
        if ok {
            self.ok.fetch_add(1, Ordering::Relaxed);
        } else if timeout {
            self.timeouts.fetch_add(1, Ordering::Relaxed);
        } else {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        if ok || timeout {
            if let Some(h) = &self.hist {
                if let Ok(mut h) = h.lock() {
                    h.record(latency_ns);
                }
            }
        }
    }
}

/// Whether a progress line should be shown.
pub fn wanted() -> bool {
    std::io::stderr().is_terminal()
}

/// The progress printer; stops and clears its line when dropped.
pub struct Progress {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Progress {
    pub fn start(live: Arc<Live>) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::Builder::new()
            .name("tp-load-progress".into())
            .spawn(move || {
                let start = Instant::now();
                let mut last = (Instant::now(), 0u64);
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    if last.0.elapsed() < Duration::from_secs(1) {
                        continue;
                    }
                    let ok = live.ok.load(Ordering::Relaxed);
                    let rate = (ok - last.1) as f64 / last.0.elapsed().as_secs_f64();
                    last = (Instant::now(), ok);
                    let p95 = live
                        .hist
                        .as_ref()
                        .and_then(|h| h.lock().ok().map(|h| h.quantile(0.95)))
                        .unwrap_or(0);
                    eprint!(
                        "\r\x1b[K{:>5.1}s  {ok} ok  {:.0} req/s  {} errors  {} timeouts  p95 {:.2} ms",
                        start.elapsed().as_secs_f64(),
                        rate,
                        live.errors.load(Ordering::Relaxed),
                        live.timeouts.load(Ordering::Relaxed),
                        p95 as f64 / 1e6
                    );
                    let _ = std::io::stderr().flush();
                }
                eprint!("\r\x1b[K");
            })
            .ok();
        Progress { stop, handle }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
