//! Running commands with clear errors.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

pub fn cargo(args: &[&str]) -> Result<()> {
    cargo_env(args, &[])
}

pub fn cargo_env(args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    eprintln!("xtask: cargo {}", args.join(" "));
    let mut c = Command::new(cargo_bin());
    c.args(args).current_dir(workspace_root());
    for (k, v) in env {
        c.env(k, v);
    }
    let st = c
        .status()
        .with_context(|| format!("starting cargo {}", args.join(" ")))?;
    if !st.success() {
        bail!("`cargo {}` failed ({st})", args.join(" "));
    }
    Ok(())
}

/// clippy for the eBPF crate: nightly, BPF target, core built from source.
pub fn ebpf_clippy() -> Result<()> {
    let args = [
        "+nightly",
        "clippy",
        "-p",
        "probe-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--release",
        "--",
        "-D",
        "warnings",
    ];
    eprintln!("xtask: cargo {}", args.join(" "));
    // `cargo +nightly` goes through rustup's proxy: call `cargo` by name, and
    // drop the variables that pin the stable toolchain.
    let st = Command::new("cargo")
        .args(args)
        .current_dir(workspace_root())
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .status()
        .context("starting cargo +nightly clippy")?;
    if !st.success() {
        bail!("clippy on the eBPF crate failed ({st})");
    }
    Ok(())
}

pub fn run_bin(bin: &Path, args: &[String]) -> Result<()> {
    eprintln!("xtask: {} {}", bin.display(), args.join(" "));
    let st = Command::new(bin)
        .args(args)
        .status()
        .with_context(|| format!("starting {}", bin.display()))?;
    if !st.success() {
        bail!("{} exited with {st}", bin.display());
    }
    Ok(())
}

/// Output of a command, trimmed; None when it cannot run or fails.
pub fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
