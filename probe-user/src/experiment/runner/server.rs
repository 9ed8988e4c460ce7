//! The server of a cell (built-in, a command, or a running one), the
//! request every cell sends, and the calibration that checks the server's
//! answers before anything else runs.

use std::{
    io::{BufRead as _, BufReader},
    net::{SocketAddr, TcpStream, ToSocketAddrs as _},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};

use super::{Runner, ServerTarget};
use crate::{
    experiment::{
        matrix::Placed,
        plan::{Plan, RequestPlan},
    },
    load::{
        self,
        report::{incomplete_cause, LoadReport, INCOMPLETE_THRESHOLD},
        target::{parse_header, Api},
        LoadOptions, Mode, ModelChoice, RequestSpec,
    },
    node::{journal::Journal, pin},
    procfs::ProcFs,
    signals,
};

/// A server for one cell.
pub(super) struct Server {
    child: Option<Child>,
    pub pid: u32,
    pub url: String,
    /// The built-in server's request log (which thread served what, when).
    pub served: Option<PathBuf>,
}

impl Server {
    pub fn exited(&mut self) -> Option<String> {
        match &mut self.child {
            Some(c) => match c.try_wait() {
                Ok(Some(st)) => Some(format!("the server exited ({st})")),
                _ => None,
            },
            None => (!ProcFs::default().is_alive(self.pid))
                .then(|| format!("the server (pid {}) is gone", self.pid)),
        }
    }

    /// SIGTERM to the server's process group, SIGKILL to what is left
    /// after 5 s (children it forked included).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = crate::node::child::stop(&mut c, Duration::from_secs(5));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_tcp(addr: SocketAddr, limit: Duration, child: &mut Child) -> Result<()> {
    let t = Instant::now();
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(st)) = child.try_wait() {
            bail!("the server command exited before it answered ({st})");
        }
        if t.elapsed() > limit {
            bail!("nothing answered on {addr} within {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn addr_of(url: &str) -> Result<SocketAddr> {
    let uri: http::Uri = url.parse().with_context(|| format!("bad URL {url:?}"))?;
    let host = uri.host().context("URL without host")?;
    let port = uri.port_u16().unwrap_or(80);
    (host.trim_matches(|c| c == '[' || c == ']'), port)
        .to_socket_addrs()?
        .next()
        .context("URL host does not resolve")
}

fn placement(p: &Placed) -> pin::Placement {
    pin::Placement {
        cpus: p.cpus.clone(),
        mem_node: p.mem_node,
        why: p.why.clone(),
    }
}

/// The API a plan asks for; absent: from the URL (the built-in server and
/// a URL without an OpenAI path: completions).
fn api_of(plan: &RequestPlan, url: Option<&str>) -> Api {
    match plan.api.as_deref() {
        Some("chat") => Api::Chat,
        Some("embeddings") => Api::Embeddings,
        Some("plain") => Api::Plain,
        Some(_) => Api::Completions,
        None => url
            .and_then(|u| u.parse::<http::Uri>().ok())
            .and_then(|u| Api::from_path(u.path()))
            .unwrap_or(Api::Completions),
    }
}

/// The request every cell sends, before the model is discovered.
pub fn request_spec(plan: &Plan, target: &ServerTarget) -> Result<RequestSpec> {
    let rp = &plan.request;
    let url = match target {
        ServerTarget::Builtin => None,
        ServerTarget::Running { url, .. } | ServerTarget::Command { url, .. } => Some(url.as_str()),
    };
    let body = match (&rp.body_file, &rp.data) {
        (Some(f), _) => {
            Some(std::fs::read(f).with_context(|| format!("reading the body file {f}"))?)
        }
        (None, Some(d)) => Some(d.clone().into_bytes()),
        (None, None) => None,
    };
    let headers = rp
        .headers
        .iter()
        .map(|h| parse_header(h).map_err(|e| anyhow!("request header {h:?}: {e}")))
        .collect::<Result<Vec<_>>>()?;
    Ok(RequestSpec {
        api: api_of(rp, url),
        model: match &rp.model {
            Some(m) => ModelChoice::Given(m.clone()),
            None => ModelChoice::Discover,
        },
        body,
        method: None,
        headers,
        prompt_tokens: plan.prompt_tokens,
        max_tokens: plan.max_tokens,
        stream: rp.stream,
        ignore_eos: rp.ignore_eos,
    })
}

/// Why a cell cannot use these answers (None: usable): nothing complete,
/// or answers incomplete above 1%. Errors and timeouts are outcomes of a
/// cell, counted in its figures.
pub fn cell_problem(rep: &LoadReport, connections: usize) -> Option<String> {
    if let Some(why) = incomplete_problem(rep, connections) {
        return Some(why);
    }
    if rep.ok == 0 {
        return Some(format!(
            "no request succeeded ({} attempted: errors {:?}, timeouts {}, incomplete {}){}",
            rep.attempted(),
            rep.error_kinds,
            rep.timeouts,
            rep.incomplete,
            rep.error_sample
                .as_ref()
                .map(|s| format!("; the server answered {s}"))
                .unwrap_or_default()
        ));
    }
    None
}

/// Answers incomplete above 1%, with the likely cause.
fn incomplete_problem(rep: &LoadReport, connections: usize) -> Option<String> {
    rep.too_incomplete(INCOMPLETE_THRESHOLD).then(|| {
        format!(
            "{} of {} answers ({:.1}%) were incomplete (above {:.0}%: {:?}) with {connections} connections: {}",
            rep.incomplete,
            rep.attempted(),
            100.0 * rep.incomplete_share(),
            INCOMPLETE_THRESHOLD * 100.0,
            rep.incomplete_kinds,
            incomplete_cause(&rep.incomplete_kinds, connections > 1)
        )
    })
}

/// Why calibration cannot use these answers (None: usable): errors,
/// timeouts or incomplete answers above 1%, or nothing measured.
pub fn answers_problem(rep: &LoadReport, connections: usize) -> Option<String> {
    let attempted = rep.attempted();
    if attempted == 0 {
        return Some(format!(
            "no measured request ended (after {} warm-up requests): the server answered too slowly for the time given",
            rep.warmup_excluded
        ));
    }
    if let Some(why) = incomplete_problem(rep, connections) {
        return Some(why);
    }
    if rep.ok == 0 || (rep.errors + rep.timeouts) as f64 > INCOMPLETE_THRESHOLD * attempted as f64 {
        return Some(format!(
            "{} of {attempted} requests failed (errors {:?}, timeouts {}){}",
            rep.errors + rep.timeouts,
            rep.error_kinds,
            rep.timeouts,
            rep.error_sample
                .as_ref()
                .map(|s| format!("; the server answered {s}"))
                .unwrap_or_default()
        ));
    }
    None
}

impl Runner<'_> {
    pub(super) fn workers(&self) -> usize {
        self.plan()
            .server
            .workers
            .unwrap_or(self.facts.online.len().max(1))
    }

    pub(super) fn connections(&self) -> usize {
        (self.workers() * 2).max(2)
    }

    pub(super) fn launch(
        &self,
        placed: Option<&Placed>,
        tag: &str,
        journal: &mut Journal,
    ) -> Result<Server> {
        match &self.o.target {
            ServerTarget::Builtin => {
                let served = self.tmp.join(format!("served-{tag}.jsonl"));
                let mut cmd = Command::new(&self.o.exe);
                cmd.args(["serve", "--port", "0", "--requests-out"])
                    .arg(&served)
                    .args(["--hidden", &self.plan().server.hidden.to_string()])
                    .args(["--layers", &self.plan().server.layers.to_string()])
                    .args(["--workers", &self.workers().to_string()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped());
                if let Some(p) = placed {
                    pin::pin_command(&mut cmd, &placement(p)).context("pinning the server")?;
                }
                let mut child = crate::node::child::spawn(&mut cmd)
                    .with_context(|| format!("starting {} serve", self.o.exe.display()))?;
                let stderr = child.stderr.take().context("server stderr")?;
                let (tx, rx) = mpsc::channel::<String>();
                std::thread::spawn(move || {
                    let mut tx = Some(tx);
                    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                        if let Some(rest) = line.split("listening on http://").nth(1) {
                            if let (Some(t), Some(a)) = (tx.take(), rest.split_whitespace().next())
                            {
                                let _ = t.send(a.to_string());
                            }
                        }
                    }
                });
                let addr = match rx.recv_timeout(Duration::from_secs(20)) {
                    Ok(a) => a,
                    Err(_) => {
                        let _ = child.kill();
                        let st = child.wait().ok();
                        bail!("the built-in server did not start (status {st:?})");
                    }
                };
                Ok(Server {
                    pid: child.id(),
                    child: Some(child),
                    url: format!("http://{addr}"),
                    served: Some(served),
                })
            }
            ServerTarget::Command { cmd, url } => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("exec {cmd}"))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                if let Some(p) = placed {
                    pin::pin_command(&mut c, &placement(p)).context("pinning the server")?;
                }
                let mut child = crate::node::child::spawn(&mut c)
                    .with_context(|| format!("starting {cmd:?}"))?;
                let addr = addr_of(url)?;
                wait_tcp(addr, Duration::from_secs(60), &mut child)?;
                Ok(Server {
                    pid: child.id(),
                    child: Some(child),
                    url: url.clone(),
                    served: None,
                })
            }
            ServerTarget::Running { url, pid } => {
                if let Some(p) = placed {
                    pin::repin(&self.o.roots, journal, *pid, &p.cpus)
                        .with_context(|| format!("re-pinning pid {pid}"))?;
                }
                Ok(Server {
                    child: None,
                    pid: *pid,
                    url: url.clone(),
                    served: None,
                })
            }
        }
    }

    pub(super) fn load_options(
        &self,
        url: &str,
        rate: Option<f64>,
        seconds: f64,
        warmup: u64,
        out: Option<PathBuf>,
    ) -> Result<LoadOptions> {
        let p = self.plan();
        let target = self
            .request
            .target(url)
            .map_err(|e| anyhow!("load target {url}: {e}"))?;
        let mode = match rate {
            Some(rate) => Mode::Open {
                rate,
                arrival: p.arrival.parse().map_err(|e| anyhow!("arrival: {e}"))?,
                seed: p.seed,
                connections: self.connections(),
                max_in_flight: 10_000,
            },
            None => Mode::Closed {
                concurrency: self.connections(),
            },
        };
        Ok(LoadOptions {
            target,
            mode,
            n_requests: None,
            duration: Some(Duration::from_secs_f64(seconds)),
            warmup,
            timeout: Duration::from_secs(10),
            request: self.request.clone(),
            slo: load::Slo::default(),
            threads: 1,
            cpus: None,
            requests_out: out,
            progress: false,
            stop: Some(signals::stop_requested),
        })
    }

    /// Discover the model on the baseline server, check its answers, and
    /// measure its closed-loop throughput (to size the offered rate). A
    /// server that rejects the request stops the experiment here, quoting
    /// its answer.
    pub(super) fn calibrate(&mut self) -> Result<f64> {
        let (mut j, _) =
            Journal::begin(&self.o.journal, &self.o.roots.proc).context("opening the journal")?;
        let mut srv = self.launch(None, "calibrate", &mut j)?;
        let found = self
            .request
            .resolve(&srv.url, Duration::from_secs(10))
            .map_err(|e| anyhow!("discovering the model: {e}"));
        let rep = found.and_then(|()| {
            let lo = self.load_options(&srv.url, None, 2.5, self.connections() as u64, None)?;
            load::run(&lo).context("calibration load")
        });
        srv.stop();
        let _ = j.restore();
        let rep = rep?;
        if let Some(why) = answers_problem(&rep, self.connections()) {
            bail!(
                "calibration against {} ({} model {}): {why}",
                srv.url,
                match self.request.model {
                    ModelChoice::Discovered(_) => "discovered",
                    _ => "given",
                },
                self.request
                    .model
                    .name()
                    .unwrap_or("from the body template")
            );
        }
        Ok(rep.throughput_rps)
    }
}
