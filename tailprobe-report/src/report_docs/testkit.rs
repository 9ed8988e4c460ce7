//! Recorded results for the renderer tests: a real `cargo xtask run` on the
//! project's 2-CPU VM (`docs/examples/`, CDFs thinned), and helpers that
//! bend it into the adversarial cases.
//! (Test-only: its parent declares it under `#[cfg(test)]`.)

use crate::experiment::{
    analysis::stats::Estimate,
    results::{CellStatus, Results},
};

/// The recorded run: baseline p95 10.5 ms over 3 repeats, a same-core
/// neighbour at 40.7 ms, pinning within noise, 69 cells not applicable.
pub fn recorded() -> Results {
    serde_json::from_str(include_str!("testdata/recorded.json")).expect("recorded results parse")
}

/// A real `tailprobe experiment --plan plans/tiny.toml` on the shared VM
/// while five engineers were compiling (load average 80-230): every cell
/// disturbed by rustc / rust-lld / opt and kept out of the conclusions.
pub fn recorded_all_disturbed() -> Results {
    serde_json::from_str(include_str!("testdata/all_disturbed.json"))
        .expect("recorded results parse")
}

/// Replace a configuration's p95 (and its repeats' p95) by `vals`.
pub fn set_p95(r: &mut Results, label: &str, vals: &[f64]) {
    let c = r
        .configs
        .iter_mut()
        .find(|c| c.label == label)
        .unwrap_or_else(|| panic!("no configuration {label}"));
    c.p95_ms = Estimate::of(vals);
    c.repeats = vals.len();
    let mut i = 0;
    for cell in r.cells.iter_mut().filter(|x| x.label == label) {
        if cell.status != CellStatus::Ran {
            continue;
        }
        if let (Some(m), Some(v)) = (cell.metrics.as_mut(), vals.get(i)) {
            m.latency_ms.p95 = *v;
        }
        i += 1;
    }
}

/// Every configuration's p95 set to the same three values: nothing differs.
pub fn all_within_noise(r: &mut Results) {
    let labels: Vec<String> = r.ran().map(|c| c.label.clone()).collect();
    for l in labels {
        set_p95(r, &l, &[10.0, 11.0, 12.0]);
        let c = r.configs.iter_mut().find(|c| c.label == l).expect("label");
        c.p99_ms = Estimate::of(&[12.0, 13.0, 14.0]);
        c.avg_ms = Estimate::of(&[5.0, 5.5, 6.0]);
    }
}
