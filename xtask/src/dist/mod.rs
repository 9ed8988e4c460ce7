//! `cargo xtask dist`: what a machine without a Rust toolchain installs.
//!
//! Under `target/dist/`:
//! - `tailprobe-<version>-x86_64-linux-musl.tar.gz`: the static (musl)
//!   `tailprobe` binary with its eBPF object embedded, man pages (one per
//!   subcommand) and shell completions (bash, zsh, fish);
//! - `tailprobe_<version>_amd64.deb`: the same files at their Debian places;
//!   its postinst gives the binary file capabilities (see [`deb::CAPS`]);
//! - `tailprobe-<version>-oci.tar`: an OCI image (`FROM scratch` + the
//!   static binary) built offline with buildah, as an oci-archive;
//! - `SHA256SUMS`.
//!
//! docs/dist.md says how to use each.

mod deb;
mod oci;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::cmd::{self, workspace_root};

/// The target of the packaged binary: static, no libc needed on the node.
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// Everything the artifacts are named and labelled with.
pub struct Meta {
    pub version: String,
    pub commit: String,
    /// Commit time (seconds since the epoch): every mtime in the archives,
    /// so that the same commit gives the same bytes.
    pub epoch: u64,
}

fn step(what: &str) {
    eprintln!("xtask dist: {what}");
}

/// Run a command; error with its name and status when it fails.
pub fn run(c: &mut Command) -> Result<()> {
    let what = format!("{c:?}");
    let st = c.status().with_context(|| format!("starting {what}"))?;
    if !st.success() {
        bail!("{what} failed ({st})");
    }
    Ok(())
}

/// Stdout of a command that must succeed.
pub fn capture(c: &mut Command) -> Result<String> {
    let what = format!("{c:?}");
    let out = c.output().with_context(|| format!("starting {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The musl target for the toolchain cargo uses here, added with rustup
/// when missing (idempotent; seconds when present). `cargo xtask setup`
/// calls it too, with `install` false when it may only warn.
pub fn ensure_musl_target(install: bool) -> Result<bool> {
    let installed = cmd::output("rustup", &["target", "list", "--installed"]).unwrap_or_default();
    if installed.lines().any(|l| l.trim() == MUSL_TARGET) {
        return Ok(true);
    }
    if !install {
        bail!("the Rust target {MUSL_TARGET} is missing; run `rustup target add {MUSL_TARGET}`");
    }
    step(&format!("adding the Rust target {MUSL_TARGET} (rustup)"));
    run(Command::new("rustup").args(["target", "add", MUSL_TARGET]))
        .context("rustup needs to reach its distribution server to add the musl target")?;
    Ok(false)
}

/// For `cargo xtask setup`: add the musl target (or, with `--check`, say
/// that it is missing); only a warning when that fails, since only
/// `cargo xtask dist` needs it.
pub fn setup_musl_target(check_only: bool) {
    match ensure_musl_target(!check_only) {
        Ok(true) => step(&format!("ok: Rust target {MUSL_TARGET}")),
        Ok(false) => {}
        Err(e) => eprintln!("xtask setup: warning: {e:#} (only `cargo xtask dist` needs it)"),
    }
}

/// buildah (the OCI image) from Debian when missing; dpkg-deb, tar, gzip
/// and strip must be there already (dpkg, tar, gzip, binutils).
fn ensure_tools() -> Result<()> {
    for (tool, pkg) in [
        ("dpkg-deb", "dpkg"),
        ("tar", "tar"),
        ("gzip", "gzip"),
        ("strip", "binutils"),
        ("sha256sum", "coreutils"),
    ] {
        if cmd::output(tool, &["--version"]).is_none() {
            bail!("`{tool}` is missing: install Debian's {pkg}");
        }
    }
    if cmd::output("buildah", &["--version"]).is_none() {
        // SAFETY: no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("buildah is missing and installing it needs root: `apt-get install -y buildah`");
        }
        step("installing buildah (apt-get)");
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "-q", "buildah"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success())
        };
        if !install() {
            run(Command::new("apt-get").args(["update", "-q"]))?;
            if !install() {
                bail!(
                    "apt-get install -y buildah failed; check that Debian's mirrors are reachable"
                );
            }
        }
    }
    Ok(())
}

/// `git rev-parse HEAD`, with "-dirty" when tracked files differ from it.
fn meta() -> Result<Meta> {
    let root = workspace_root();
    let git = |args: &[&str]| {
        capture(Command::new("git").args(args).current_dir(&root)).map(|s| s.trim().to_string())
    };
    let version = capture(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["pkgid", "-p", "probe-user"])
            .current_dir(&root),
    )?;
    let version = version
        .trim()
        .rsplit(['@', '#'])
        .next()
        .filter(|v| v.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .with_context(|| format!("cannot read probe-user's version from {version:?}"))?
        .to_string();
    let (commit, epoch) = match git(&["rev-parse", "HEAD"]) {
        Ok(head) => {
            let dirty = !git(&["status", "--porcelain", "--untracked-files=no"])?.is_empty();
            let epoch = git(&["log", "-1", "--format=%ct"])?
                .parse()
                .context("reading the commit time")?;
            (if dirty { format!("{head}-dirty") } else { head }, epoch)
        }
        Err(e) => {
            step(&format!(
                "no git commit ({e:#}); the binary will say \"unknown\""
            ));
            ("unknown".to_string(), 0)
        }
    };
    Ok(Meta {
        version,
        commit,
        epoch,
    })
}

/// `ldd` says "statically linked" or "not a dynamic executable" for a
/// static binary; anything else (a list of libraries) is refused.
fn check_static(bin: &Path) -> Result<()> {
    let out = Command::new("ldd").arg(bin).output();
    let text = match out {
        Ok(o) => format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => bail!("running ldd on {}: {e}", bin.display()),
    };
    if text.contains("statically linked") || text.contains("not a dynamic executable") {
        return Ok(());
    }
    bail!("{} is not static: ldd says {}", bin.display(), text.trim())
}

/// Build the static binary, man pages and completions; stage the tarball
/// tree; return (staging dir of the tree, path of the stripped binary).
fn build(meta: &Meta, work: &Path) -> Result<(PathBuf, PathBuf)> {
    let root = workspace_root();
    step(&format!(
        "cargo build --release --target {MUSL_TARGET} -p probe-user (commit {})",
        meta.commit
    ));
    cmd::cargo_env(
        &[
            "build",
            "--release",
            "--target",
            MUSL_TARGET,
            "-p",
            "probe-user",
        ],
        &[("TAILPROBE_GIT_COMMIT", meta.commit.as_str())],
    )?;
    let built = root.join(format!("target/{MUSL_TARGET}/release/tailprobe"));
    check_static(&built)?;
    let name = format!("tailprobe-{}-x86_64-linux-musl", meta.version);
    let tree = work.join(&name);
    let _ = std::fs::remove_dir_all(&tree);
    for d in ["bin", "man/man1", "completions"] {
        std::fs::create_dir_all(tree.join(d))?;
    }
    let bin = tree.join("bin/tailprobe");
    std::fs::copy(&built, &bin).with_context(|| format!("copying {}", built.display()))?;
    // Symbols only: the eBPF object is data in .rodata and stays whole.
    run(Command::new("strip").arg("--strip-all").arg(&bin))?;
    check_static(&bin)?;
    let v = capture(Command::new(&bin).arg("--version"))?;
    if !v.contains(&format!("commit: {}", meta.commit)) {
        bail!(
            "the built binary names another commit than {}: {v}",
            meta.commit
        );
    }
    step(&format!("{} --version:\n{}", bin.display(), v.trim()));

    // Man pages and completions, from the same clap definitions.
    let docs = work.join("docs");
    let _ = std::fs::remove_dir_all(&docs);
    cmd::cargo(&[
        "run",
        "-q",
        "-p",
        "probe-user",
        "--example",
        "dist_docs",
        "--",
        &docs.to_string_lossy(),
    ])?;
    let mut pages = 0;
    for e in std::fs::read_dir(docs.join("man"))? {
        let p = e?.path();
        let to = tree
            .join("man/man1")
            .join(p.file_name().context("man page name")?);
        std::fs::copy(&p, &to)?;
        // -n: no name or time in the header, for the same bytes every time.
        run(Command::new("gzip").args(["-9nf"]).arg(&to))?;
        pages += 1;
    }
    if pages < 2 {
        bail!("dist_docs wrote {pages} man pages; expected one per subcommand");
    }
    for f in ["tailprobe.bash", "_tailprobe", "tailprobe.fish"] {
        std::fs::copy(
            docs.join("completions").join(f),
            tree.join("completions").join(f),
        )
        .with_context(|| format!("completion file {f}"))?;
    }
    for doc in ["README.md", "docs/dist.md", "docs/security.md"] {
        let from = root.join(doc);
        let to = tree.join(Path::new(doc).file_name().context("doc name")?);
        std::fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
    }
    Ok((tree, bin))
}

/// A reproducible gzip'd tar of `dir` (its parent as the root).
pub fn tar_gz(dir: &Path, out: &Path, epoch: u64) -> Result<()> {
    let parent = dir.parent().context("tar: no parent")?;
    let name = dir.file_name().context("tar: no name")?;
    run(Command::new("tar")
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            &format!("--mtime=@{epoch}"),
            "-I",
            "gzip -9n",
            "-cf",
        ])
        .arg(out)
        .arg("-C")
        .arg(parent)
        .arg(name))
}

fn human(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub fn dist() -> Result<Vec<PathBuf>> {
    crate::setup::run(false)?;
    ensure_musl_target(true)?;
    ensure_tools()?;
    let meta = meta()?;
    let root = workspace_root();
    let out = root.join("target/dist");
    let work = root.join("target/dist-work");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    std::fs::create_dir_all(&work)?;
    let (tree, bin) = build(&meta, &work)?;

    let tarball = out.join(format!(
        "{}.tar.gz",
        tree.file_name().context("tree name")?.to_string_lossy()
    ));
    step(&format!("writing {}", tarball.display()));
    tar_gz(&tree, &tarball, meta.epoch)?;
    let deb = deb::build(&meta, &tree, &work, &out)?;
    let image = oci::build(&meta, &bin, &work, &out)?;

    let artifacts = vec![tarball, deb, image];
    let names: Vec<String> = artifacts
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let sums = capture(Command::new("sha256sum").args(&names).current_dir(&out))?;
    std::fs::write(out.join("SHA256SUMS"), &sums)?;
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    println!(
        "\ntailprobe {} (commit {}), in {}:",
        meta.version,
        meta.commit,
        out.display()
    );
    println!(
        "  {:<44} {:>11} bytes  {:>9}",
        "static binary (stripped, in each package)",
        size(&bin),
        human(size(&bin))
    );
    for (p, n) in artifacts.iter().zip(&names) {
        println!("  {n:<44} {:>11} bytes  {:>9}", size(p), human(size(p)));
    }
    println!("  SHA256SUMS");
    Ok(artifacts)
}
