//! The model's worker pool: named threads (`tp-serve-wN`) behind a bounded
//! request queue, each recording which thread served which request, when,
//! on CLOCK_MONOTONIC (the clock of kernel events).

use std::{
    collections::VecDeque,
    fs::File,
    io::{BufWriter, Write as _},
    sync::{
        atomic::Ordering,
        mpsc::{sync_channel, Receiver, SyncSender, TrySendError},
        Arc, Mutex,
    },
    thread::JoinHandle,
};

use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use super::{metrics::Metrics, model::Model};
use tailprobe_system::clock::monotonic_ns;

/// What a worker sends back while it generates.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    Token(u32),
    Done {
        prompt_tokens: u64,
        completion_tokens: u64,
    },
}

/// One request for the model.
#[derive(Debug)]
pub struct Job {
    pub id: u64,
    pub endpoint: &'static str,
    pub stream: bool,
    pub prompt: Vec<u32>,
    pub max_tokens: u32,
    pub queued_ns: u64,
    pub tx: UnboundedSender<Tok>,
}

/// Which thread served a request, and when (CLOCK_MONOTONIC ns).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Served {
    pub id: u64,
    pub endpoint: &'static str,
    pub stream: bool,
    pub worker: String,
    pub tid: u32,
    pub queued_ns: u64,
    pub start_ns: u64,
    pub first_token_ns: Option<u64>,
    pub end_ns: u64,
    pub prompt_tokens: u64,
    pub output_tokens: u64,
    /// `ok` or `cancelled` (the client went away).
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkerInfo {
    pub name: String,
    pub tid: u32,
}

/// Recent served requests (a ring) and, optionally, all of them to a file.
pub struct Journal {
    ring: Mutex<VecDeque<Served>>,
    cap: usize,
    file: Option<Mutex<BufWriter<File>>>,
}

impl Journal {
    pub fn new(cap: usize, file: Option<File>) -> Self {
        Journal {
            ring: Mutex::new(VecDeque::with_capacity(cap.min(4096))),
            cap,
            file: file.map(|f| Mutex::new(BufWriter::new(f))),
        }
    }

    fn push(&self, s: Served) {
        if let Some(f) = &self.file {
            if let (Ok(mut f), Ok(mut line)) = (f.lock(), serde_json::to_vec(&s)) {
                line.push(b'\n');
                let _ = f.write_all(&line);
            }
        }
        if let Ok(mut r) = self.ring.lock() {
            if r.len() >= self.cap {
                r.pop_front();
            }
            r.push_back(s);
        }
    }

    /// The most recent records, oldest first, ids above `after` only.
    pub fn recent(&self, after: Option<u64>) -> Vec<Served> {
        self.ring
            .lock()
            .map(|r| {
                r.iter()
                    .filter(|s| after.is_none_or(|a| s.id > a))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn flush(&self) {
        if let Some(f) = &self.file {
            if let Ok(mut f) = f.lock() {
                let _ = f.flush();
            }
        }
    }
}

/// The pool: submit jobs, read who served them.
pub struct Pool {
    tx: Mutex<Option<SyncSender<Job>>>,
    handles: Mutex<Vec<JoinHandle<()>>>,
    pub workers: Mutex<Vec<WorkerInfo>>,
    pub journal: Arc<Journal>,
    metrics: Arc<Metrics>,
    pub size: usize,
}

/// Why a job was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum SubmitError {
    Full,
    Closed,
}

impl Pool {
    pub fn start(
        size: usize,
        queue: usize,
        model: Arc<Model>,
        metrics: Arc<Metrics>,
        journal: Arc<Journal>,
    ) -> std::io::Result<Arc<Pool>> {
        let (tx, rx) = sync_channel::<Job>(queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let pool = Arc::new(Pool {
            tx: Mutex::new(Some(tx)),
            handles: Mutex::new(Vec::new()),
            workers: Mutex::new(Vec::new()),
            journal,
            metrics,
            size,
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for i in 0..size.max(1) {
            let name = format!("tp-serve-w{i}");
            let (rx, model, p, ready) = (rx.clone(), model.clone(), pool.clone(), ready_tx.clone());
            let n = name.clone();
            let h = std::thread::Builder::new()
                .name(name)
                .spawn(move || worker(n, rx, model, p, ready))?;
            if let Ok(mut hs) = pool.handles.lock() {
                hs.push(h);
            }
        }
        drop(ready_tx);
        // Wait until every worker has told its tid.
        let infos: Vec<WorkerInfo> = ready_rx.iter().take(size.max(1)).collect();
        if let Ok(mut w) = pool.workers.lock() {
            *w = infos;
            w.sort_by(|a, b| a.name.cmp(&b.name));
        }
        Ok(pool)
    }

    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        let guard = self.tx.lock().map_err(|_| SubmitError::Closed)?;
        let tx = guard.as_ref().ok_or(SubmitError::Closed)?;
        self.metrics.queue_depth.fetch_add(1, Ordering::Relaxed);
        match tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
                Err(match e {
                    TrySendError::Full(_) => SubmitError::Full,
                    TrySendError::Disconnected(_) => SubmitError::Closed,
                })
            }
        }
    }

    /// Close the queue and wait for the workers to finish what was queued.
    pub fn shutdown(&self) {
        if let Ok(mut t) = self.tx.lock() {
            t.take();
        }
        let hs = self
            .handles
            .lock()
            .map(|mut h| std::mem::take(&mut *h))
            .unwrap_or_default();
        for h in hs {
            let _ = h.join();
        }
        self.journal.flush();
    }
}

fn worker(
    name: String,
    rx: Arc<Mutex<Receiver<Job>>>,
    model: Arc<Model>,
    pool: Arc<Pool>,
    ready: std::sync::mpsc::Sender<WorkerInfo>,
) {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    let _ = ready.send(WorkerInfo {
        name: name.clone(),
        tid,
    });
    drop(ready);
    let metrics = pool.metrics.clone();
    let journal = pool.journal.clone();
    // Only the queue and the journal are shared; drop the pool reference
    // so shutdown is not kept waiting on ourselves.
    drop(pool);
    loop {
        let job = match rx.lock() {
            Ok(r) => r.recv(),
            Err(_) => break,
        };
        let Ok(job) = job else { break };
        metrics.queue_depth.fetch_sub(1, Ordering::Relaxed);
        let start_ns = monotonic_ns();
        let mut served = Served {
            id: job.id,
            endpoint: job.endpoint,
            stream: job.stream,
            worker: name.clone(),
            tid,
            queued_ns: job.queued_ns,
            start_ns,
            first_token_ns: None,
            end_ns: 0,
            prompt_tokens: job.prompt.len() as u64,
            output_tokens: 0,
            outcome: "ok",
        };
        // The client may leave at any time: checked before every prompt
        // token and at every output token (a send fails once it is gone).
        let prefilled = model.prefill_until(&job.prompt, || job.tx.is_closed());
        if let Some(mut st) = prefilled {
            metrics
                .prompt_tokens
                .fetch_add(job.prompt.len() as u64, Ordering::Relaxed);
            for _ in 0..job.max_tokens {
                let t = model.decode(&mut st);
                if job.tx.send(Tok::Token(t)).is_err() {
                    served.outcome = "cancelled";
                    break;
                }
                if served.first_token_ns.is_none() {
                    served.first_token_ns = Some(monotonic_ns());
                }
                served.output_tokens += 1;
                metrics.tokens.fetch_add(1, Ordering::Relaxed);
            }
            if served.outcome == "ok" {
                let _ = job.tx.send(Tok::Done {
                    prompt_tokens: served.prompt_tokens,
                    completion_tokens: served.output_tokens,
                });
            }
        } else {
            served.outcome = "cancelled";
        }
        if served.outcome == "cancelled" {
            metrics.cancelled.fetch_add(1, Ordering::Relaxed);
        }
        served.end_ns = monotonic_ns();
        journal.push(served);
    }
}
