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

/// Run cargo with its output shown as it comes and also returned (stdout
/// and stderr, line by line, interleaved as read), for counting tests and
/// skips. The error says the command failed; the output is still returned
/// through `Err`'s context-free companion: callers get `(ok, output)`.
pub fn cargo_tee(args: &[&str], env: &[(&str, &str)]) -> Result<(bool, String)> {
    use std::io::{BufRead as _, BufReader, Write as _};
    use std::process::Stdio;
    use std::sync::{Arc, Mutex};
    eprintln!("xtask: cargo {}", args.join(" "));
    let mut c = Command::new(cargo_bin());
    c.args(args)
        .current_dir(workspace_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c
        .spawn()
        .with_context(|| format!("starting cargo {}", args.join(" ")))?;
    let all = Arc::new(Mutex::new(String::new()));
    let mut pumps = Vec::new();
    let out = child
        .stdout
        .take()
        .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>);
    let err = child
        .stderr
        .take()
        .map(|e| Box::new(e) as Box<dyn std::io::Read + Send>);
    for (src, to_stderr) in [(out, false), (err, true)] {
        let Some(src) = src else { continue };
        let all = all.clone();
        pumps.push(std::thread::spawn(move || {
            for line in BufReader::new(src).lines().map_while(|l| l.ok()) {
                if to_stderr {
                    let _ = writeln!(std::io::stderr(), "{line}");
                } else {
                    let _ = writeln!(std::io::stdout(), "{line}");
                }
                if let Ok(mut a) = all.lock() {
                    a.push_str(&line);
                    a.push('\n');
                }
            }
        }));
    }
    let st = child.wait().context("waiting for cargo")?;
    for p in pumps {
        let _ = p.join();
    }
    let text = all.lock().map(|a| a.clone()).unwrap_or_default();
    Ok((st.success(), text))
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
