//! Builds the eBPF object (`probe-ebpf`) with aya-build so that `cargo build`
//! yields one self-contained `tailprobe` binary.
use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "probe-ebpf")
        .ok_or_else(|| anyhow!("probe-ebpf package not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("probe-ebpf has no manifest directory"))?
        .as_str()
        .to_owned();
    // The kernel programs include probe-common's types: rebuild on change.
    if let Some(common) = std::path::Path::new(&root_dir).parent() {
        println!(
            "cargo:rerun-if-changed={}",
            common.join("probe-common").display()
        );
    }
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir: &root_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
    .context(
        "building the eBPF programs failed; run `cargo xtask setup` \
         (installs bpf-linker, llvm-22-dev and rust-src for nightly)",
    )?;
    version_bits()
}

/// What `tailprobe --version` prints besides the version (cli/version.rs):
/// the git commit and the sha256 of the eBPF object embedded in the binary.
///
/// The commit is $TAILPROBE_GIT_COMMIT when set (`cargo xtask dist` sets
/// it), else `git rev-parse HEAD` at the time this script runs, else
/// "unknown". No rerun-if-changed on `.git`: a new commit alone does not
/// rebuild, so a development build may name the commit of its last
/// eBPF/probe-common change; `cargo xtask dist` always passes the current one.
fn version_bits() -> anyhow::Result<()> {
    use sha2::{Digest as _, Sha256};
    println!("cargo:rerun-if-env-changed=TAILPROBE_GIT_COMMIT");
    let commit = std::env::var("TAILPROBE_GIT_COMMIT")
        .ok()
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .or_else(git_head)
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=TAILPROBE_GIT_COMMIT={commit}");
    let out_dir = std::env::var("OUT_DIR").context("OUT_DIR is not set")?;
    // The same file kernel/mod.rs embeds with include_bytes_aligned!.
    let object = std::path::Path::new(&out_dir).join("probe-ebpf");
    let bytes = std::fs::read(&object)
        .with_context(|| format!("reading the eBPF object {}", object.display()))?;
    let hex: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("cargo:rustc-env=TAILPROBE_EBPF_SHA256={hex}");
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_string());
    println!("cargo:rustc-env=TAILPROBE_BUILD_TARGET={target}");
    Ok(())
}

/// `git rev-parse HEAD` in this package's directory; None without git or
/// outside a repository (a source tarball).
fn git_head() -> Option<String> {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")?;
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(dir)
        .output()
        .ok()?;
    let head = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && head.len() >= 7 && head.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(head)
}
