//! Helpers shared by the experiment_* root integration tests: a fresh
//! directory, running `tailprobe experiment`, the output flags.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use tailprobe_tests::tailprobe_bin;

pub fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tailprobe-exp-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn run(args: &[&str], d: &Path) -> Output {
    Command::new(tailprobe_bin())
        .arg("experiment")
        .args(args)
        .args(["--journal", d.join("journal.json").to_str().unwrap()])
        .output()
        .expect("run tailprobe experiment")
}

pub fn outputs(d: &Path) -> Vec<String> {
    vec![
        "--out".into(),
        d.join("out").display().to_string(),
        "--baseline-doc".into(),
        d.join("bench/baseline.md").display().to_string(),
        "--summary-doc".into(),
        d.join("docs/summary.md").display().to_string(),
    ]
}
