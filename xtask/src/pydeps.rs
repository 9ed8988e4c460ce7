//! Python packages the tests use, installed idempotently with pip: the
//! PyPI `perfetto` package, whose pure-Python protobuf classes decode our
//! Perfetto traces independently of tailprobe's own decoder. One
//! `python3 -c import` when it is already there.

use std::process::Command;

use anyhow::{bail, Result};

/// Pinned so the decoder the tests compare with does not change under them.
const PERFETTO_VERSION: &str = "0.59.1";

fn perfetto_importable() -> bool {
    Command::new("python3")
        .args([
            "-c",
            "import perfetto.protos.perfetto.trace.perfetto_trace_pb2",
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Returns true when it was already installed.
pub fn ensure(check_only: bool) -> Result<bool> {
    if perfetto_importable() {
        return Ok(true);
    }
    if check_only {
        bail!("missing: python3 package perfetto=={PERFETTO_VERSION}; run `cargo xtask setup`");
    }
    eprintln!("xtask setup: installing python3 package perfetto=={PERFETTO_VERSION} (pip)");
    let st = Command::new("python3")
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .arg(format!("perfetto=={PERFETTO_VERSION}"))
        .env("PIP_ROOT_USER_ACTION", "ignore")
        .status();
    if !st.is_ok_and(|s| s.success()) || !perfetto_importable() {
        bail!(
            "pip could not install perfetto=={PERFETTO_VERSION} for python3 (the timeline \
             tests decode traces with it): check that PyPI is reachable and pip works \
             (`python3 -m pip --version`)"
        );
    }
    Ok(false)
}
