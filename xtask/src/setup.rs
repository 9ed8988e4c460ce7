//! `cargo xtask setup`: what building the eBPF programs needs, installed
//! idempotently. Fast when everything is present (a few process spawns).
//!
//! - nightly with `rust-src` (the eBPF crate builds `core` from source);
//! - Debian's `llvm-<N>-dev`, N = the nightly's LLVM major;
//! - bpf-linker 0.13.0 built against that LLVM.

use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context as _, Result};

use crate::cmd::output;

const BPF_LINKER_VERSION: &str = "0.13.0";
/// The LLVM major bpf-linker 0.13.0 is built against here (platform notes).
const EXPECTED_LLVM_MAJOR: u32 = 22;

fn is_root() -> bool {
    output("id", &["-u"]).as_deref() == Some("0")
}

fn cargo_home_bin() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"));
    home.join("bin")
}

/// LLVM major of the nightly toolchain.
fn nightly_llvm_major() -> Result<u32> {
    let vv = output("rustup", &["run", "nightly", "rustc", "-vV"]).context(
        "the nightly Rust toolchain is missing: install it with \
         `rustup toolchain install nightly --profile minimal --component rust-src`",
    )?;
    let line = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .context("`rustc +nightly -vV` printed no LLVM version")?;
    line.split('.')
        .next()
        .and_then(|m| m.trim().parse().ok())
        .with_context(|| format!("cannot read the LLVM major from {line:?}"))
}

fn has_rust_src() -> bool {
    let Some(sysroot) = output("rustup", &["run", "nightly", "rustc", "--print", "sysroot"]) else {
        return false;
    };
    PathBuf::from(sysroot)
        .join("lib/rustlib/src/rust/library/core/Cargo.toml")
        .exists()
}

fn dpkg_installed(pkg: &str) -> bool {
    output("dpkg-query", &["-W", "-f=${Status}", pkg])
        .is_some_and(|s| s.contains("install ok installed"))
}

/// (version matches, LLVM major it links) of the installed bpf-linker.
fn bpf_linker_state() -> Option<(bool, Option<u32>)> {
    let bin = cargo_home_bin().join("bpf-linker");
    let bin_s = bin.to_string_lossy().to_string();
    let version = output(&bin_s, &["--version"])?;
    let ok_version = version.contains(BPF_LINKER_VERSION);
    let ldd = output("ldd", &[&bin_s]).unwrap_or_default();
    let major = ldd.lines().find_map(|l| {
        let rest = l.trim().strip_prefix("libLLVM.so.")?;
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    });
    // A statically linked LLVM shows no libLLVM line: trust the version.
    Some((ok_version, major))
}

fn step(what: &str) {
    eprintln!("xtask setup: {what}");
}

fn run_checked(c: &mut Command, what: &str, hint: &str) -> Result<()> {
    let st = c.status().with_context(|| format!("starting: {what}"))?;
    if !st.success() {
        bail!("{what} failed ({st}). {hint}");
    }
    Ok(())
}

/// Returns true when everything was already in place.
pub fn run(check_only: bool) -> Result<bool> {
    let py_ok = crate::pydeps::ensure(check_only)?;
    crate::dist::setup_musl_target(check_only);
    let caps_ok = test_tools(check_only)?;
    let fleet_ok = crate::fleettools::ensure(check_only)?;
    Ok(ebpf_toolchain(check_only)? && py_ok && fleet_ok && caps_ok)
}

/// `setcap` (Debian's libcap2-bin), which the capability tests
/// (tests/tests/caps_root.rs) use to give a copy of the binary file
/// capabilities. Installed when root and apt-get are there; otherwise a
/// note (those tests then report a skip). True when it was already there.
fn test_tools(check_only: bool) -> Result<bool> {
    if dpkg_installed("libcap2-bin")
        || ["/usr/sbin/setcap", "/sbin/setcap"]
            .iter()
            .any(|p| std::path::Path::new(p).exists())
    {
        step("ok: setcap (libcap2-bin)");
        return Ok(true);
    }
    if check_only || !is_root() || output("apt-get", &["--version"]).is_none() {
        step("note: setcap (libcap2-bin) is missing: the capability tests will be skipped");
        return Ok(false);
    }
    step("installing libcap2-bin (apt-get), for the capability tests");
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-q", "libcap2-bin"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        step("note: apt-get could not install libcap2-bin: the capability tests will be skipped");
    }
    Ok(false)
}

/// LLVM's development files with apt-get (root only).
fn install_llvm(llvm_pkg: &str, major: u32) -> Result<()> {
    if !is_root() {
        bail!(
            "{llvm_pkg} is missing and installing it needs root: run \
             `apt-get update && apt-get install -y {llvm_pkg}` as root, then \
             `cargo xtask setup` again"
        );
    }
    if output("apt-get", &["--version"]).is_none() {
        bail!(
            "{llvm_pkg} is missing and this machine has no apt-get: install LLVM {major} \
             development files with your package manager, then run \
             `LLVM_PREFIX=<its prefix> cargo install bpf-linker@{BPF_LINKER_VERSION} --locked \
             --no-default-features --features llvm-{major}`"
        );
    }
    step(&format!("installing {llvm_pkg} (apt-get)"));
    let hint = "apt-get could not install it: check that Debian's package servers are \
                reachable (`apt-get update`)";
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", llvm_pkg])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if !install() {
        run_checked(
            Command::new("apt-get").args(["update", "-q"]),
            "apt-get update",
            hint,
        )?;
        if !install() {
            bail!("apt-get install -y {llvm_pkg} failed. {hint}");
        }
    }
    Ok(())
}

/// Nightly, LLVM and bpf-linker; true when everything was already in place.
fn ebpf_toolchain(check_only: bool) -> Result<bool> {
    let mut missing = Vec::new();
    let major = nightly_llvm_major()?;
    if major != EXPECTED_LLVM_MAJOR {
        eprintln!(
            "xtask setup: note: nightly is built on LLVM {major}, the platform notes pin \
             LLVM {EXPECTED_LLVM_MAJOR}; using llvm-{major}-dev and bpf-linker's llvm-{major} \
             feature"
        );
    }
    let llvm_pkg = format!("llvm-{major}-dev");
    let rust_src = has_rust_src();
    let llvm = dpkg_installed(&llvm_pkg);
    let linker = bpf_linker_state();
    let linker_ok = matches!(linker, Some((true, m)) if m.is_none_or(|m| m == major));
    if !rust_src {
        missing.push("rust-src for nightly".to_string());
    }
    if !llvm {
        missing.push(llvm_pkg.clone());
    }
    if !linker_ok {
        missing.push(match linker {
            None => format!("bpf-linker {BPF_LINKER_VERSION}"),
            Some((false, _)) => {
                format!("bpf-linker {BPF_LINKER_VERSION} (another version is installed)")
            }
            Some((true, m)) => format!(
                "bpf-linker built against LLVM {major} (the installed one links LLVM {})",
                m.map(|m| m.to_string()).unwrap_or_else(|| "?".into())
            ),
        });
    }
    if missing.is_empty() {
        step(&format!(
            "ok: nightly (LLVM {major}) with rust-src, {llvm_pkg}, bpf-linker {BPF_LINKER_VERSION}"
        ));
        return Ok(true);
    }
    if check_only {
        bail!(
            "missing: {}; run `cargo xtask setup` to install",
            missing.join(", ")
        );
    }
    if !rust_src {
        step("installing rust-src for nightly");
        run_checked(
            Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
            "rustup component add rust-src --toolchain nightly",
            "rustup needs to reach its distribution server; without network, copy a toolchain \
             with rust-src onto this machine",
        )?;
    }
    if !llvm {
        install_llvm(&llvm_pkg, major)?;
    }
    if !linker_ok {
        step(&format!(
            "building bpf-linker {BPF_LINKER_VERSION} against LLVM {major} (about 2 minutes)"
        ));
        run_checked(
            Command::new("cargo")
                .args([
                    "install",
                    &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                    "--locked",
                    "--force",
                    "--no-default-features",
                    "--features",
                    &format!("llvm-{major}"),
                ])
                .env("LLVM_PREFIX", format!("/usr/lib/llvm-{major}"))
                .env_remove("RUSTUP_TOOLCHAIN")
                .env_remove("CARGO")
                .env_remove("RUSTC"),
            "cargo install bpf-linker",
            "it needs crates.io and the LLVM development files; if it says \
             'unable to find library -lLLVM', LLVM_PREFIX does not point at them",
        )?;
    }
    match bpf_linker_state() {
        Some((true, m)) if m.is_none_or(|m| m == major) => {}
        other => bail!(
            "bpf-linker is still not right after installing ({other:?}); nightly uses LLVM \
             {major}: rebuild it with `LLVM_PREFIX=/usr/lib/llvm-{major} cargo install \
             bpf-linker@{BPF_LINKER_VERSION} --locked --force --no-default-features --features \
             llvm-{major}`"
        ),
    }
    step("done");
    Ok(false)
}
