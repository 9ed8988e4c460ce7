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
    )
}
