//! `tailprobe --version` (and `-V`): the package version, the git commit it
//! was built from, the target it was built for, and the sha256 of the eBPF
//! object embedded in the binary. `build.rs` computes the last three.

/// The text after "tailprobe " that `--version` prints.
pub const TEXT: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ncommit: ",
    env!("TAILPROBE_GIT_COMMIT"),
    "\ntarget: ",
    env!("TAILPROBE_BUILD_TARGET"),
    "\nebpf-object-sha256: ",
    env!("TAILPROBE_EBPF_SHA256"),
);

/// The git commit (or "unknown").
pub const COMMIT: &str = env!("TAILPROBE_GIT_COMMIT");

/// sha256 of [`crate::kernel::EBPF_OBJECT`], lower-case hex.
pub const EBPF_SHA256: &str = env!("TAILPROBE_EBPF_SHA256");

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;
    use sha2::{Digest as _, Sha256};

    /// The hash build.rs printed is the hash of the bytes this binary embeds.
    #[test]
    fn ebpf_hash_is_of_the_embedded_object() {
        let hex: String = Sha256::digest(crate::kernel::EBPF_OBJECT)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(EBPF_SHA256, hex);
        assert!(!crate::kernel::EBPF_OBJECT.is_empty());
    }

    #[test]
    fn version_text_has_every_part() {
        let v = crate::cli::Cli::command().render_version();
        let lines: Vec<&str> = v.lines().collect();
        assert_eq!(lines[0], format!("tailprobe {}", env!("CARGO_PKG_VERSION")));
        assert_eq!(lines[1], format!("commit: {COMMIT}"));
        assert!(COMMIT == "unknown" || COMMIT.len() >= 7, "{COMMIT}");
        assert!(lines[2].starts_with("target: "), "{v}");
        assert_eq!(lines[3], format!("ebpf-object-sha256: {EBPF_SHA256}"));
        assert_eq!(EBPF_SHA256.len(), 64);
    }
}
