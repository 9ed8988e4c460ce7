//! `tailprobe experiment` end to end against the built-in server (root): a
//! tiny plan (bounded, well under 90 s), then the outputs, the
//! not-applicable cells and their reasons, the document merge that keeps a
//! person's text, and refusals of bad input that change nothing.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use serde_json::Value;
use tailprobe_tests::{skip_unless_root, tailprobe_bin};

const PLAN: &str = r#"
name = "tiny (test)"
governors = ["current", "performance"]
pinning = ["unpinned", "local", "remote"]
noise = ["none", "same-node", "other-node"]
repeats = 2
warmup_s = 0.3
measure_s = 1.5
load_fraction = 0.4
noise_threads = 1
sweep = [0.3, 0.8]
sweep_s = 1.0
fleet_load_rps = 100.0
max_total_s = 75.0
[slo]
percentile = 95.0
e2e_ms = 500.0
[server]
hidden = 64
layers = 1
"#;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tailprobe-exp-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &[&str], d: &Path) -> Output {
    Command::new(tailprobe_bin())
        .arg("experiment")
        .args(args)
        .args(["--journal", d.join("journal.json").to_str().unwrap()])
        .output()
        .expect("run tailprobe experiment")
}

fn outputs(d: &Path) -> Vec<String> {
    vec![
        "--out".into(),
        d.join("out").display().to_string(),
        "--baseline-doc".into(),
        d.join("bench/baseline.md").display().to_string(),
        "--summary-doc".into(),
        d.join("docs/summary.md").display().to_string(),
    ]
}

#[test]
fn root_tiny_plan_end_to_end() {
    skip_unless_root!("root_tiny_plan_end_to_end");
    let d = dir("e2e");
    let plan = d.join("plan.toml");
    std::fs::write(&plan, PLAN).unwrap();
    let mut args = vec!["--plan".to_string(), plan.display().to_string()];
    args.extend(outputs(&d));
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run(&a, &d);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        out.status
    );

    for f in [
        "out/results.json",
        "out/plots/latency-cdf.svg",
        "out/plots/p95-per-config.svg",
        "out/plots/latency-vs-runq.svg",
        "out/50-tailprobe-placement.conf",
        "bench/baseline.md",
        "docs/summary.md",
    ] {
        assert!(d.join(f).exists(), "{f} missing\n{stdout}");
    }
    let r: Value =
        serde_json::from_slice(&std::fs::read(d.join("out/results.json")).unwrap()).unwrap();
    let cells = r["cells"].as_array().unwrap();
    // 2 governors x 3 placements x 3 noise x 2 repeats, none dropped.
    assert_eq!(cells.len(), 36);
    let multi = r["node"]["nodes"].as_array().map(|n| n.len()).unwrap_or(1) > 1;
    let cpufreq = r["node"]["facts"]["governors"].get("Ok").is_some();
    let mut ran = 0;
    for c in cells {
        let st = c["status"].as_str().unwrap();
        let cfg = &c["config"];
        match st {
            "ran" => {
                ran += 1;
                let m = &c["metrics"];
                assert!(m["latency_ms"]["count"].as_u64().unwrap() > 0, "{c}");
                assert!(m["latency_ms"]["p95"].as_f64().unwrap() > 0.0);
                assert!(m["tail"]["method"].as_str().unwrap().starts_with("exact"));
                assert_eq!(c["raw"].as_array().unwrap().len(), 3, "raw snapshots: {c}");
            }
            "not_applicable" => {
                let why = c["reason"].as_str().unwrap();
                assert!(!why.is_empty());
                if cfg["governor"] == "performance" && !cpufreq {
                    assert!(why.contains("no CPU frequency control"), "{why}");
                }
                if cfg["governor"] == "current" && cfg["pinning"] == "remote" && !multi {
                    assert!(why.contains("second NUMA node"), "{why}");
                }
            }
            other => panic!("cell {other}: {c}"),
        }
    }
    assert!(ran >= 8, "only {ran} cells ran");
    if !cpufreq && !multi {
        // current x {unpinned, local} x {none, same-node} x 2 repeats
        assert_eq!(ran, 8);
    }
    // Order alternates: repeat 2 runs the configurations backwards.
    let first: Vec<&Value> = cells
        .iter()
        .filter(|c| c["repeat"] == 0)
        .map(|c| &c["config"])
        .collect();
    let second: Vec<&Value> = cells
        .iter()
        .filter(|c| c["repeat"] == 1)
        .map(|c| &c["config"])
        .collect();
    assert_eq!(
        first.iter().rev().collect::<Vec<_>>(),
        second.iter().collect::<Vec<_>>()
    );
    assert!(r["correlation"]["pooled"].as_array().unwrap().len() == 5);
    assert!(r["capacity"]["rows"].as_array().is_some());

    // The documents: sections present, not-applicable cells explained.
    let base = std::fs::read_to_string(d.join("bench/baseline.md")).unwrap();
    for h in [
        "## CPU governor impact",
        "## Noisy neighbor impact",
        "## perf / scheduler signals",
        "## NUMA locality",
        "## IRQ / NIC affinity",
    ] {
        assert!(base.contains(h), "{h}");
    }
    assert!(base.contains("**Recommendation.**"));
    assert!(base.contains("not applicable on this node"));
    let summ = std::fs::read_to_string(d.join("docs/summary.md")).unwrap();
    for h in [
        "## Engineering view",
        "## Consultant view",
        "Risk level:",
        "Inference Node OS & NUMA Health Check v0.1",
        "## Feynman",
    ] {
        assert!(summ.contains(h), "{h}");
    }

    // A person edits the document; re-rendering keeps the edit.
    let edited = base.replace(
        "<!-- tailprobe:begin cpu-governor -->",
        "Note by the on-call engineer: keep this paragraph.\n\n<!-- tailprobe:begin cpu-governor -->",
    );
    std::fs::write(d.join("bench/baseline.md"), &edited).unwrap();
    let mut a2 = vec![
        "--render".to_string(),
        d.join("out/results.json").display().to_string(),
    ];
    a2.extend(outputs(&d));
    let a2: Vec<&str> = a2.iter().map(String::as_str).collect();
    let out = run(&a2, &d);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = std::fs::read_to_string(d.join("bench/baseline.md")).unwrap();
    assert!(again.contains("Note by the on-call engineer: keep this paragraph.\n"));
    assert_eq!(again.matches("## CPU governor impact").count(), 1);

    // Broken markers: refused, file unchanged.
    let broken = again.replace("<!-- tailprobe:end numa-locality -->", "");
    std::fs::write(d.join("bench/baseline.md"), &broken).unwrap();
    let out = run(&a2, &d);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken tailprobe markers") && err.contains("numa-locality"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("bench/baseline.md")).unwrap(),
        broken
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn bad_input_is_refused_before_anything_runs() {
    let d = dir("bad");
    let o = outputs(&d);
    let o: Vec<&str> = o.iter().map(String::as_str).collect();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--governors", "current,turbo"],
            "unknown governor \"turbo\"",
        ),
        (vec!["--out", "/proc/tailprobe-nope"], "output directory"),
        (
            vec!["--url", "http://127.0.0.1:9/v1/completions"],
            "--url needs --pid",
        ),
    ];
    for (args, want) in cases {
        let mut a = if args.contains(&"--out") {
            Vec::new()
        } else {
            o.clone()
        };
        a.extend(args);
        let out = run(&a, &d);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{a:?}");
        assert!(err.contains(want), "{a:?}: {err}");
    }
    let plan = d.join("cpus.toml");
    std::fs::write(&plan, "pinning = [\"local\"]\nlocal_cpus = \"4095\"\n").unwrap();
    let mut a = o.clone();
    a.extend(["--plan", plan.to_str().unwrap()]);
    let out = run(&a, &d);
    let err = String::from_utf8_lossy(&out.stderr);
    if tailprobe_tests::is_root() {
        assert!(err.contains("CPU 4095, which does not exist here"), "{err}");
    } else {
        assert!(err.contains("needs root"), "{err}");
    }
    assert!(!d.join("bench/baseline.md").exists());
    let _ = std::fs::remove_dir_all(&d);
}
