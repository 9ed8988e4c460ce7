//! The OCI image: `FROM scratch` plus the static binary, built offline with
//! buildah (no registry, no base image), written as an oci-archive.
//!
//! buildah keeps its storage under `target/dist-work/buildah/` (vfs driver:
//! no overlay mount needed), not in the machine's `/var/lib/containers`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Result;

use super::{capture, run, step, Meta};

pub fn build(meta: &Meta, bin: &Path, work: &Path, out: &Path) -> Result<PathBuf> {
    let store = work.join("buildah");
    let buildah = || {
        let mut c = Command::new("buildah");
        c.arg("--root")
            .arg(store.join("root"))
            .arg("--runroot")
            .arg(store.join("runroot"))
            .args(["--storage-driver", "vfs"]);
        c
    };
    let name = "tailprobe-dist";
    // A container left by an interrupted run would block the name.
    let _ = buildah()
        .args(["rm", name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    let ctr = capture(buildah().args(["from", "--name", name, "scratch"]))?;
    let ctr = ctr.trim().to_string();
    let result = (|| -> Result<PathBuf> {
        run(buildah()
            .args(["copy", "--chmod", "0755", &ctr])
            .arg(bin)
            .arg("/usr/bin/tailprobe"))?;
        run(buildah().args([
            "config",
            "--os",
            "linux",
            "--arch",
            "amd64",
            "--entrypoint",
            r#"["/usr/bin/tailprobe"]"#,
            r#"--cmd=["--help"]"#,
            "--label",
            &format!("org.opencontainers.image.version={}", meta.version),
            "--label",
            &format!("org.opencontainers.image.revision={}", meta.commit),
            "--label",
            "org.opencontainers.image.title=tailprobe",
            &ctr,
        ]))?;
        let image = out.join(format!("tailprobe-{}-oci.tar", meta.version));
        step(&format!("writing {}", image.display()));
        run(buildah()
            .args(["commit", "--format", "oci", "--timestamp"])
            .arg(meta.epoch.to_string())
            .arg(&ctr)
            .arg(format!(
                "oci-archive:{}:tailprobe:{}",
                image.display(),
                meta.version
            )))?;
        Ok(image)
    })();
    let _ = buildah()
        .args(["rm", &ctr])
        .stdout(std::process::Stdio::null())
        .status();
    result
}
