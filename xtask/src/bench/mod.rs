//! `cargo xtask bench`: side-by-side benchmarks whose results go to
//! docs/benchmarks.md. Each section is produced by its own module and
//! replaced in place in the document, between its own markers, so sections
//! run separately keep the others.

mod attach;
mod load;
mod probes;
mod stats;

use anyhow::{Context as _, Result};

use crate::cmd;

const DOC: &str = "docs/benchmarks.md";

/// A section's producer: `quick` in, its Markdown out.
type Section = fn(bool) -> Result<String>;

/// The sections, in the order they run.
const SECTIONS: &[(&str, Section)] = &[
    ("probes", probes::run),
    ("attach", attach::run),
    ("load", load::run),
];

/// Run every section, or only the one named, writing each into the document
/// as soon as it is done.
pub fn run(quick: bool, only: Option<&str>) -> Result<()> {
    let mut failed = Vec::new();
    for (name, section) in SECTIONS {
        if only.is_some_and(|o| o != *name) {
            continue;
        }
        match section(quick) {
            Ok(text) => write_section(name, &text)?,
            Err(e) => {
                eprintln!("xtask bench: the {name} section failed: {e:#}");
                failed.push(*name);
            }
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("section(s) failed: {}", failed.join(", "));
    }
    Ok(())
}

fn write_section(name: &str, section: &str) -> Result<()> {
    let path = cmd::workspace_root().join(DOC);
    let doc = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".to_string());
    let doc = replace_section(&doc, name, section);
    std::fs::write(&path, doc).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("xtask bench: wrote the {name} section of {DOC}");
    print!("{section}");
    Ok(())
}

/// Replace the text between `<!-- tailprobe:bench:NAME:begin -->` and
/// `<!-- tailprobe:bench:NAME:end -->` with `body`, or append the marked
/// section when the markers are absent. Everything else is kept.
pub fn replace_section(doc: &str, name: &str, body: &str) -> String {
    let begin = format!("<!-- tailprobe:bench:{name}:begin -->");
    let end = format!("<!-- tailprobe:bench:{name}:end -->");
    let block = format!("{begin}\n{}\n{end}", body.trim_end());
    if let Some(b) = doc.find(&begin) {
        if let Some(e) = doc[b..].find(&end) {
            let e = b + e + end.len();
            return format!("{}{block}{}", &doc[..b], &doc[e..]);
        }
    }
    let mut out = doc.trim_end().to_string();
    out.push_str("\n\n");
    out.push_str(&block);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_only_its_own_section() {
        let doc = "# B\n\nintro\n\n<!-- tailprobe:bench:probe:begin -->\nP\n<!-- tailprobe:bench:probe:end -->\n";
        let once = replace_section(doc, "load", "L1\n");
        assert!(once.contains("intro"));
        assert!(once.contains(
            "<!-- tailprobe:bench:load:begin -->\nL1\n<!-- tailprobe:bench:load:end -->"
        ));
        let twice = replace_section(&once, "load", "L2");
        assert!(!twice.contains("L1"));
        assert!(twice.contains("L2"));
        assert!(twice.contains("<!-- tailprobe:bench:probe:begin -->\nP\n"));
        assert_eq!(twice.matches("tailprobe:bench:load:begin").count(), 1);
        let other = replace_section(&twice, "probe", "Q");
        assert!(other.contains("L2") && other.contains("\nQ\n") && !other.contains("\nP\n"));
    }
}
