//! Built-in noisy neighbours: matrix-product CPU load and memory-bandwidth
//! load over buffers much larger than the LLC, placed on chosen CPUs,
//! bounded in time; each thread reports the CPUs it was seen running on.

use std::{
    str::FromStr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::{affinity, pin, NotAvailable, Roots};
use tailprobe_system::{cpulist, sysfs::cache};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Matrix-product threads (compute bound, like stress-ng matrixprod).
    Cpu,
    /// Streaming over buffers much larger than the LLC (memory bandwidth).
    Membw,
    /// Half of the threads of each.
    Mixed,
}

/// Where the noise runs, relative to the target's CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    SameCores,
    SameNode,
    OtherNode,
    Cpus(Vec<u32>),
}

impl FromStr for Place {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "same-cores" => Ok(Place::SameCores),
            "same-node" => Ok(Place::SameNode),
            "other-node" => Ok(Place::OtherNode),
            other => match other.strip_prefix("cpus:") {
                Some(l) => cpulist::parse(l).map(Place::Cpus).map_err(|e| e.to_string()),
                None => Err(format!(
                    "unknown placement {other:?}: use same-cores, same-node, other-node or cpus:LIST"
                )),
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    #[error(transparent)]
    NotAvailable(#[from] NotAvailable),
    #[error(transparent)]
    OutOfRange(#[from] affinity::OutOfRange),
    #[error("cannot read the online CPUs: {0}")]
    Io(std::io::Error),
}

/// The CPUs the noise runs on, given the target's CPUs.
pub fn resolve(roots: &Roots, place: &Place, target: &[u32]) -> Result<Vec<u32>, PlaceError> {
    let online = affinity::online_cpus(&roots.sys).map_err(PlaceError::Io)?;
    let nodes = pin::node_cpus(roots);
    // A machine without node directories is one node holding every CPU.
    let nodes = if nodes.is_empty() {
        vec![(0, online.clone())]
    } else {
        nodes
    };
    let target_nodes: Vec<u32> = nodes
        .iter()
        .filter(|(_, c)| c.iter().any(|x| target.contains(x)))
        .map(|(n, _)| *n)
        .collect();
    let cpus: Vec<u32> = match place {
        Place::SameCores => target.to_vec(),
        Place::Cpus(c) => {
            affinity::check_online(c, &online)?;
            c.clone()
        }
        Place::SameNode => {
            let v: Vec<u32> = nodes
                .iter()
                .filter(|(n, _)| target_nodes.contains(n))
                .flat_map(|(_, c)| c.iter().copied())
                .filter(|c| !target.contains(c) && online.contains(c))
                .collect();
            if v.is_empty() {
                return Err(NotAvailable(format!(
                    "same-node placement needs CPUs on the target's node(s) outside the \
                     target's CPUs {}; there are none",
                    cpulist::Display(target)
                ))
                .into());
            }
            v
        }
        Place::OtherNode => {
            if nodes.len() < 2 {
                return Err(NotAvailable(
                    "other-node placement needs a second NUMA node; this node has one".into(),
                )
                .into());
            }
            let v: Vec<u32> = nodes
                .iter()
                .filter(|(n, _)| !target_nodes.contains(n))
                .flat_map(|(_, c)| c.iter().copied())
                .filter(|c| online.contains(c))
                .collect();
            if v.is_empty() {
                return Err(NotAvailable(
                    "the target's CPUs span every node: no other node is left".into(),
                )
                .into());
            }
            v
        }
    };
    Ok(cpus)
}

/// Size in bytes of the last-level cache of CPU `cpu`.
pub fn llc_bytes(roots: &Roots, cpu: u32) -> Option<u64> {
    cache::llc(&roots.sys, cpu)?.size_bytes()
}

/// Bytes each memory-bandwidth thread streams over: 4x the LLC, at least
/// 64 MiB, so the stream misses the cache.
pub fn membw_buffer_bytes(llc: Option<u64>) -> u64 {
    (4 * llc.unwrap_or(0)).max(64 << 20)
}

/// What one noise thread did.
#[derive(Debug, Clone, Serialize)]
pub struct ThreadReport {
    pub tid: u32,
    pub kind: Kind,
    /// CPUs the thread was seen running on (sched_getcpu, sampled every
    /// work unit).
    pub cpus_seen: String,
    pub samples: u64,
    /// Matrix products (cpu) or buffer passes (membw).
    pub work_units: u64,
    /// GFLOP done (cpu) or GB moved (membw).
    pub volume: f64,
    pub volume_unit: &'static str,
}

const N: usize = 96;

fn matmul(a: &[f32], b: &[f32], c: &mut [f32]) {
    for i in 0..N {
        for k in 0..N {
            let aik = a[i * N + k];
            let row = &b[k * N..k * N + N];
            let out = &mut c[i * N..i * N + N];
            for (o, x) in out.iter_mut().zip(row) {
                *o += aik * x;
            }
        }
    }
}

/// Run one noise thread until `deadline` or `stop`.
fn run_thread(
    kind: Kind,
    cpus: &[u32],
    buf_bytes: u64,
    deadline: Instant,
    stop: &AtomicBool,
) -> std::io::Result<ThreadReport> {
    affinity::set_thread_affinity(0, cpus)?;
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() } as u32;
    let mut seen = Vec::<u32>::new();
    let mut samples = 0u64;
    let mut units = 0u64;
    let note = |seen: &mut Vec<u32>| {
        if let Some(c) = affinity::current_cpu() {
            if !seen.contains(&c) {
                seen.push(c);
            }
        }
    };
    let done = || {
        Instant::now() >= deadline
            || stop.load(Ordering::Relaxed)
            || tailprobe_system::signals::stop_requested()
    };
    let (volume, unit) = match kind {
        Kind::Cpu | Kind::Mixed => {
            let a: Vec<f32> = (0..N * N).map(|i| (i % 7) as f32 * 0.5).collect();
            let b: Vec<f32> = (0..N * N).map(|i| (i % 5) as f32 * 0.25).collect();
            let mut c = vec![0f32; N * N];
            while !done() {
                matmul(&a, &b, &mut c);
                units += 1;
                samples += 1;
                note(&mut seen);
            }
            std::hint::black_box(&c);
            (units as f64 * 2.0 * (N * N * N) as f64 / 1e9, "GFLOP")
        }
        Kind::Membw => {
            let words = (buf_bytes / 2 / 8) as usize;
            let src: Vec<u64> = (0..words as u64).collect();
            let mut dst = vec![0u64; words];
            // Chunks of 1 MiB so the deadline is checked often.
            let chunk = (1 << 20) / 8;
            'outer: loop {
                for (d, s) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
                    for (x, y) in d.iter_mut().zip(s) {
                        *x = y.wrapping_mul(3).wrapping_add(1);
                    }
                    samples += 1;
                    note(&mut seen);
                    if done() {
                        break 'outer;
                    }
                }
                units += 1;
            }
            std::hint::black_box(&dst);
            (samples as f64 * 2.0 * (chunk * 8) as f64 / 1e9, "GB")
        }
    };
    Ok(ThreadReport {
        tid,
        kind,
        cpus_seen: cpulist::Display(&seen).to_string(),
        samples,
        work_units: units,
        volume,
        volume_unit: unit,
    })
}

/// Threads of each kind for `kind` and `threads`.
pub fn split(kind: Kind, threads: usize) -> Vec<Kind> {
    match kind {
        Kind::Cpu | Kind::Membw => vec![kind; threads],
        Kind::Mixed => (0..threads)
            .map(|i| if i % 2 == 0 { Kind::Cpu } else { Kind::Membw })
            .collect(),
    }
}

/// Run the built-in noise; `on_start` gets the thread ids once all run.
pub fn run(
    kind: Kind,
    threads: usize,
    cpus: &[u32],
    buf_bytes: u64,
    duration: Duration,
) -> std::io::Result<Vec<ThreadReport>> {
    // Bounded by the CLI (7 days); never panic on a larger value.
    let deadline = Instant::now()
        .checked_add(duration)
        .ok_or_else(|| std::io::Error::other(format!("duration {duration:?} is too long")))?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for k in split(kind, threads) {
        let cpus = cpus.to_vec();
        let stop = Arc::clone(&stop);
        let h = std::thread::Builder::new()
            .name(format!(
                "noise-{}",
                if k == Kind::Membw { "membw" } else { "cpu" }
            ))
            .spawn(move || run_thread(k, &cpus, buf_bytes, deadline, &stop))?;
        handles.push(h);
    }
    let mut out = Vec::new();
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(r)) => out.push(r),
            Ok(Err(e)) => {
                stop.store(true, Ordering::Relaxed);
                first_err.get_or_insert(e);
            }
            Err(_) => {
                stop.store(true, Ordering::Relaxed);
                first_err.get_or_insert(std::io::Error::other("a noise thread panicked"));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn fixture(root: &std::path::Path, nodes: &[&str]) {
        let w = |rel: &str, s: &str| {
            let f = root.join(rel);
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(f, s).unwrap();
        };
        w("devices/system/cpu/online", "0-7\n");
        for (i, c) in nodes.iter().enumerate() {
            w(&format!("devices/system/node/node{i}/cpulist"), c);
        }
    }

    #[test]
    fn placements_on_two_nodes() {
        let d = tempfile::tempdir().unwrap();
        fixture(d.path(), &["0-3", "4-7"]);
        let r = Roots::new(d.path(), "/proc");
        let t = [0, 1];
        assert_eq!(resolve(&r, &Place::SameCores, &t).unwrap(), vec![0, 1]);
        assert_eq!(resolve(&r, &Place::SameNode, &t).unwrap(), vec![2, 3]);
        assert_eq!(
            resolve(&r, &Place::OtherNode, &t).unwrap(),
            vec![4, 5, 6, 7]
        );
        assert!(resolve(&r, &Place::Cpus(vec![9]), &t).is_err());
    }

    #[test]
    fn other_node_on_one_node_is_not_available() {
        let d = tempfile::tempdir().unwrap();
        fixture(d.path(), &["0-7"]);
        let r = Roots::new(d.path(), "/proc");
        let e = resolve(&r, &Place::OtherNode, &[0])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("not available on this node"), "{e}");
        let e = resolve(&r, &Place::SameNode, &[0, 1, 2, 3, 4, 5, 6, 7]).unwrap_err();
        assert!(matches!(e, PlaceError::NotAvailable(_)));
    }

    #[test]
    fn sizes() {
        assert_eq!(membw_buffer_bytes(Some(105 << 20)), 420 << 20);
        assert_eq!(membw_buffer_bytes(None), 64 << 20);
        assert_eq!(
            split(Kind::Mixed, 3),
            vec![Kind::Cpu, Kind::Membw, Kind::Cpu]
        );
    }

    #[test]
    fn a_thread_runs_where_it_is_placed() {
        let cpus = affinity::thread_affinity(0).unwrap();
        let one = [*cpus.last().unwrap()];
        let r = run(Kind::Cpu, 1, &one, 0, Duration::from_millis(100)).unwrap();
        assert_eq!(r[0].cpus_seen, one[0].to_string());
        assert!(r[0].work_units > 0);
    }
}
