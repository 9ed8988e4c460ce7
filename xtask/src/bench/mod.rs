//! `cargo xtask bench`: side-by-side benchmarks whose results go to
//! docs/benchmarks.md. Each section is produced by its own module and
//! replaced in place in the document, so sections run separately keep the
//! others.

use anyhow::Result;

pub fn run(_quick: bool) -> Result<()> {
    anyhow::bail!("no benchmarks are implemented yet")
}
