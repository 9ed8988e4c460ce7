//! Standard output that reports errors instead of panicking: `println!`
//! panics when the write fails (a full disk with `> /dev/full`, a closed
//! pipe), losing the report with a backtrace. Every report goes through
//! these helpers, flushed, so a failed write is an error message and exit 1.

use std::{fmt, io::Write as _};

use anyhow::{Context as _, Result};

const WHAT: &str = "writing the report to standard output (a full disk or a closed pipe?)";

/// Write formatted text to stdout and flush it.
pub fn print(args: fmt::Arguments<'_>) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args).context(WHAT)?;
    out.flush().context(WHAT)
}

/// Write formatted text and a newline to stdout and flush it.
pub fn println(args: fmt::Arguments<'_>) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args).context(WHAT)?;
    out.write_all(b"\n").context(WHAT)?;
    out.flush().context(WHAT)
}

/// Write a string to stdout as is and flush it.
pub fn print_str(s: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes()).context(WHAT)?;
    out.flush().context(WHAT)
}

/// Print `v` as pretty JSON and a newline on stdout.
pub fn print_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<()> {
    let mut s = serde_json::to_string_pretty(v).context("serialising JSON")?;
    s.push('\n');
    print_str(&s)
}
