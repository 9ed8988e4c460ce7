//! Debian kernel packages, fetched with apt and cached extracted under
//! `target/vm-kernels/<package>/` (a `.complete` stamp marks a finished
//! extraction, so a second run is a directory lookup).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::cmd::{output, workspace_root};

/// One kernel series the lane boots.
#[derive(Debug, Clone, Copy)]
pub struct Series {
    /// What the user names on the command line and what the summary prints.
    pub name: &'static str,
    /// The package asked for; a newer one of the series when it is gone.
    pub preferred: &'static str,
    prefix: &'static str,
    suffix: &'static str,
}

pub const SERIES: [Series; 2] = [
    Series {
        name: "6.1",
        preferred: "linux-image-6.1.0-50-amd64",
        prefix: "linux-image-6.1.0-",
        suffix: "-amd64",
    },
    Series {
        name: "6.12",
        preferred: "linux-image-6.12.100+deb12-amd64",
        prefix: "linux-image-6.12.",
        suffix: "+deb12-amd64",
    },
];

impl Series {
    /// The sub-version number of a package of this series
    /// (`linux-image-6.1.0-50-amd64` -> 50), None for other packages.
    fn number(&self, pkg: &str) -> Option<u32> {
        pkg.strip_prefix(self.prefix)?
            .strip_suffix(self.suffix)?
            .parse()
            .ok()
    }
}

/// An extracted kernel, ready for `vng --run`.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub series: &'static str,
    pub package: String,
    /// `uname -r` of the guest.
    pub release: String,
    pub vmlinuz: PathBuf,
}

fn cache_dir() -> PathBuf {
    workspace_root().join("target/vm-kernels")
}

fn load_cached(series: &Series, dir: &Path) -> Option<Kernel> {
    if !dir.join(".complete").exists() {
        return None;
    }
    let release = std::fs::read_dir(dir.join("lib/modules"))
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .next()?;
    let vmlinuz = dir.join(format!("boot/vmlinuz-{release}"));
    let package = dir.file_name()?.to_string_lossy().to_string();
    if !vmlinuz.exists() {
        return None;
    }
    Some(Kernel {
        series: series.name,
        package,
        release,
        vmlinuz,
    })
}

/// A cached kernel of the series: the preferred package, else the newest
/// one cached.
fn cached(series: &Series) -> Option<Kernel> {
    if let Some(k) = load_cached(series, &cache_dir().join(series.preferred)) {
        return Some(k);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(cache_dir())
        .ok()?
        .flatten()
        .filter_map(|e| {
            let n = series.number(&e.file_name().to_string_lossy())?;
            Some((n, e.path()))
        })
        .collect();
    found.sort();
    found
        .into_iter()
        .rev()
        .find_map(|(_, d)| load_cached(series, &d))
}

fn apt_has_candidate(pkg: &str) -> bool {
    output("apt-cache", &["policy", pkg])
        .map(|s| {
            s.lines()
                .filter_map(|l| l.trim().strip_prefix("Candidate:"))
                .any(|c| c.trim() != "(none)")
        })
        .unwrap_or(false)
}

/// The package to download: the preferred one while apt has it, else the
/// newest of the series apt knows.
fn choose_package(series: &Series) -> Result<String> {
    if !apt_has_candidate(series.preferred) {
        let _ = Command::new("apt-get").args(["update", "-q"]).status();
    }
    if apt_has_candidate(series.preferred) {
        return Ok(series.preferred.to_string());
    }
    let listing = output(
        "apt-cache",
        &["search", "--names-only", &format!("^{}", series.prefix)],
    )
    .unwrap_or_default();
    let floor = series.number(series.preferred).unwrap_or(0);
    let newest = listing
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|p| Some((series.number(p)?, p.to_string())))
        .filter(|(n, _)| *n >= floor)
        .max();
    match newest {
        Some((_, p)) => {
            eprintln!(
                "vm-test: {} is gone from apt; using {p} (same series)",
                series.preferred
            );
            Ok(p)
        }
        None => bail!(
            "apt knows no {} package of the {} series (run `apt-get update`; is bookworm or \
             bookworm-security in the sources?)",
            series.preferred,
            series.name
        ),
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let st = cmd.status().with_context(|| format!("starting {what}"))?;
    if !st.success() {
        bail!("{what} failed ({st})");
    }
    Ok(())
}

/// The series' kernel, downloaded and extracted once.
pub fn ensure(series: &Series) -> Result<Kernel> {
    let k = match cached(series) {
        Some(k) => k,
        None => {
            let pkg = choose_package(series)?;
            let dl = cache_dir().join("download");
            std::fs::create_dir_all(&dl)?;
            eprintln!("vm-test: downloading {pkg} (apt-get download)");
            run(
                Command::new("apt-get")
                    .args(["download", "-q", &pkg])
                    .current_dir(&dl),
                &format!("apt-get download {pkg}"),
            )?;
            let deb = std::fs::read_dir(&dl)?
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{pkg}_")))
                })
                .with_context(|| format!("no .deb for {pkg} in {}", dl.display()))?;
            let tmp = cache_dir().join(format!("{pkg}.partial"));
            let _ = std::fs::remove_dir_all(&tmp);
            run(
                Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp),
                "dpkg-deb -x",
            )?;
            let release = std::fs::read_dir(tmp.join("lib/modules"))?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .next()
                .context("the package has no lib/modules/<release>")?;
            // The package leaves modules.dep to its postinst: make it here.
            run(
                Command::new("depmod").arg("-b").arg(&tmp).arg(&release),
                "depmod",
            )?;
            std::fs::write(tmp.join(".complete"), format!("{pkg}\n"))?;
            let dir = cache_dir().join(&pkg);
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::rename(&tmp, &dir)?;
            let _ = std::fs::remove_file(&deb);
            load_cached(series, &dir).context("extracted kernel not found after extraction")?
        }
    };
    link_modules(&k)?;
    Ok(k)
}

/// virtme-ng looks for the modules of the kernel it boots under
/// `/lib/modules/<release>`: link there to the cache (the guest sees the
/// host's filesystem, so the link resolves inside it too).
fn link_modules(k: &Kernel) -> Result<()> {
    let want = cache_dir()
        .join(&k.package)
        .join("lib/modules")
        .join(&k.release);
    let link = Path::new("/lib/modules").join(&k.release);
    match std::fs::read_link(&link) {
        Ok(t) if t == want => return Ok(()),
        Ok(_) => std::fs::remove_file(&link)?,
        Err(_) if link.join("modules.dep").exists() => return Ok(()), // installed for real
        Err(_) if link.exists() => std::fs::remove_dir_all(&link)?,
        Err(_) => {}
    }
    std::fs::create_dir_all("/lib/modules")?;
    std::os::unix::fs::symlink(&want, &link)
        .with_context(|| format!("linking {} -> {}", link.display(), want.display()))
}
