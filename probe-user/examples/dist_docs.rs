//! Writes tailprobe's man pages (one per subcommand, clap_mangen) and shell
//! completions (bash, zsh, fish; clap_complete) from the same clap
//! definitions the binary parses with. `cargo xtask dist` runs it:
//!
//! ```sh
//! cargo run -p probe-user --example dist_docs -- OUT_DIR
//! ```
//!
//! writes `OUT_DIR/man/tailprobe.1`, `OUT_DIR/man/tailprobe-<cmd>.1`, and
//! `OUT_DIR/completions/{tailprobe.bash,_tailprobe,tailprobe.fish}`.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::CommandFactory as _;
use clap_complete::Shell;
use tailprobe::cli::Cli;

fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        bail!("usage: dist_docs OUT_DIR");
    };
    let out = PathBuf::from(out);
    let man = out.join("man");
    let completions = out.join("completions");
    for d in [&man, &completions] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    // Every visible subcommand gets its own page (tailprobe-record.1, ...);
    // hidden ones (the internal exec-gated helper) get none.
    // The plain version in the pages' header: `--version`'s commit and hash
    // lines would break the .TH line, and the pages do not depend on them.
    let versioned = Cli::command().version(env!("CARGO_PKG_VERSION"));
    clap_mangen::generate_to(versioned, &man)
        .with_context(|| format!("writing man pages to {}", man.display()))?;
    let mut cmd = Cli::command();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let p = clap_complete::generate_to(shell, &mut cmd, "tailprobe", &completions)
            .with_context(|| format!("writing {shell} completions to {}", completions.display()))?;
        println!("{}", p.display());
    }
    let mut pages: Vec<String> = std::fs::read_dir(&man)
        .with_context(|| format!("listing {}", man.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for p in &pages {
        println!("{}", man.join(p).display());
    }
    Ok(())
}
