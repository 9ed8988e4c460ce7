//! The built-in CPU workload: the default target when none is given, so
//! `tailprobe record` and `cargo xtask run` work on any Linux box.
//!
//! Each thread alternates a burst of dense matrix-vector products (the shape
//! of an inference decode step) with a short sleep. With more threads than
//! CPUs they queue for the CPU, so there is run-queue wait to explain.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    pub threads: usize,
    pub duration: Duration,
    pub busy: Duration,
    pub sleep: Duration,
    /// Side of the square weight matrix.
    pub hidden: usize,
}

/// y = W x, W is n x n, row-major.
pub fn matvec(w: &[f32], x: &[f32], y: &mut [f32]) {
    let n = x.len();
    for (row, out) in w.chunks_exact(n).zip(y.iter_mut()) {
        *out = row.iter().zip(x).map(|(a, b)| a * b).sum();
    }
}

fn work_thread(opts: WorkloadOptions, seed: usize) -> u64 {
    let n = opts.hidden;
    let w: Vec<f32> = (0..n * n)
        .map(|i| ((i * 7 + seed) % 13) as f32 * 0.01)
        .collect();
    let mut x: Vec<f32> = (0..n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut y = vec![0f32; n];
    // Durations are bounded by the CLI; saturate anyway rather than panic.
    let far = |d: Duration| {
        let now = Instant::now();
        now.checked_add(d)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365))
    };
    let end = far(opts.duration);
    let mut steps = 0u64;
    while Instant::now() < end {
        let burst_end = far(opts.busy);
        while Instant::now() < burst_end {
            matvec(&w, &x, &mut y);
            // Normalise to keep values bounded, and feed the output back.
            let norm = y.iter().map(|v| v.abs()).fold(1e-6f32, f32::max);
            for (xi, yi) in x.iter_mut().zip(&y) {
                *xi = yi / norm;
            }
            steps += 1;
        }
        if !opts.sleep.is_zero() {
            std::thread::sleep(opts.sleep);
        }
    }
    steps
}

/// Run the workload to completion; returns the total number of steps, or
/// an error when a worker thread panicked (its steps are lost).
pub fn run(opts: &WorkloadOptions) -> std::io::Result<u64> {
    let mut handles = Vec::new();
    for i in 0..opts.threads.max(1) {
        let o = opts.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("tp-work-{i}"))
                .spawn(move || work_thread(o, i))?,
        );
    }
    let mut total = 0u64;
    let mut panicked = 0;
    for h in handles {
        match h.join() {
            Ok(n) => total = total.saturating_add(n),
            Err(_) => panicked += 1,
        }
    }
    if panicked > 0 {
        return Err(std::io::Error::other(format!(
            "{panicked} of {} workload thread(s) panicked (see the message above)",
            opts.threads.max(1)
        )));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matvec_is_correct() {
        let w = [1.0, 2.0, 3.0, 4.0];
        let x = [1.0, -1.0];
        let mut y = [0.0; 2];
        matvec(&w, &x, &mut y);
        assert_eq!(y, [-1.0, -1.0]);
    }

    #[test]
    fn runs_for_its_duration_and_does_work() {
        let opts = WorkloadOptions {
            threads: 2,
            duration: Duration::from_millis(200),
            busy: Duration::from_millis(5),
            sleep: Duration::from_millis(1),
            hidden: 64,
        };
        let t = Instant::now();
        let steps = run(&opts).unwrap();
        assert!(steps > 0);
        assert!(t.elapsed() >= Duration::from_millis(200));
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
