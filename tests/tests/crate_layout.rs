//! The crates that must build on stable Rust without the eBPF toolchain
//! (docs/architecture.md) do: no aya, no eBPF crate and no probe-user in
//! their dependency trees, read by `cargo tree` from Cargo.lock, offline.

use std::{path::Path, process::Command};

/// `cargo tree` lines of `krate`'s normal and build dependencies, one
/// `name vX.Y.Z` per line.
fn tree(krate: &str) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace");
    let out = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(["tree", "--offline", "-p", krate, "-e", "normal,build"])
        .args(["--prefix", "none", "--no-dedupe"])
        .output()
        .expect("run cargo tree");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "cargo tree -p {krate}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines().map(str::to_string).collect()
}

#[test]
fn stable_crates_need_no_ebpf_toolchain() {
    for krate in [
        "tailprobe-system",
        "tailprobe-load",
        "tailprobe-serve",
        "tailprobe-node",
        "tailprobe-report",
    ] {
        let lines = tree(krate);
        // The tree is the crate's own: its first line names it.
        assert!(
            lines
                .first()
                .is_some_and(|l| l.starts_with(&format!("{krate} v"))),
            "{lines:?}"
        );
        for banned in ["aya", "aya-build", "aya-ebpf", "probe-ebpf", "probe-user"] {
            let hit = lines.iter().find(|l| l.starts_with(&format!("{banned} v")));
            assert!(hit.is_none(), "{krate} depends on {banned}: {hit:?}");
        }
        let crates: std::collections::BTreeSet<&str> = lines[1..]
            .iter()
            .filter_map(|l| l.split(' ').next())
            .collect();
        println!("{krate}: {} crates below it, none of aya", crates.len());
    }
    // The check can fail: probe-user does depend on aya.
    assert!(tree("probe-user").iter().any(|l| l.starts_with("aya v")));
}
