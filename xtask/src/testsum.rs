//! What `cargo xtask test` says at the end: tests passed, failed and
//! skipped per lane, with every SKIP line, read from libtest's output.
//!
//! One word for a skip everywhere: a test that cannot run prints a line
//! starting with `SKIP` (`SKIP: name: reason` from `tailprobe_tests::skip`).

/// Counts of one lane (unit tests, root tests, a QEMU guest).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Lane {
    pub name: String,
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
    /// The SKIP lines themselves, to be shown again at the end.
    pub skips: Vec<String>,
}

impl Lane {
    pub fn new(name: &str) -> Lane {
        Lane {
            name: name.to_string(),
            ..Lane::default()
        }
    }

    /// Add what one line of libtest output says.
    pub fn line(&mut self, line: &str) {
        let l = line.trim_start();
        if let Some(rest) = l.strip_prefix("test result: ") {
            for part in rest.split(';') {
                let mut w = part.split_whitespace().rev();
                let (Some(what), Some(n)) = (w.next(), w.next()) else {
                    continue;
                };
                let n: u32 = n.trim_end_matches('.').parse().unwrap_or(0);
                match what.trim_end_matches('.') {
                    "passed" => self.passed += n,
                    "failed" => self.failed += n,
                    _ => {}
                }
            }
        }
        // A skip line may follow libtest's "test name ... " on the same line.
        if let Some(i) = l.find("SKIP") {
            let s = &l[i..];
            if s.starts_with("SKIP:") || s.starts_with("SKIP ") {
                self.skipped += 1;
                self.skips.push(s.trim_end().to_string());
            }
        }
    }

    pub fn text(&mut self, out: &str) {
        for l in out.lines() {
            self.line(l);
        }
    }
}

/// The closing block: one line a lane, every skip, and the plain total
/// line "N passed, N failed, N skipped".
pub fn summary(lanes: &[Lane]) -> String {
    let mut s = String::from("\nxtask test: summary\n");
    for l in lanes {
        s.push_str(&format!(
            "  {:<28} {:>4} passed, {:>3} failed, {:>3} skipped\n",
            l.name, l.passed, l.failed, l.skipped
        ));
    }
    let skips: Vec<(&str, &String)> = lanes
        .iter()
        .flat_map(|l| l.skips.iter().map(move |k| (l.name.as_str(), k)))
        .collect();
    if !skips.is_empty() {
        s.push_str("skipped tests:\n");
        for (lane, k) in skips {
            s.push_str(&format!("  [{lane}] {k}\n"));
        }
    }
    let (p, f, k) = lanes.iter().fold((0, 0, 0), |(p, f, k), l| {
        (p + l.passed, f + l.failed, k + l.skipped)
    });
    s.push_str(&format!("{p} passed, {f} failed, {k} skipped\n"));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_results_and_skips() {
        let mut l = Lane::new("root");
        l.text(
            "running 3 tests\n\
             test a ... SKIP: a: needs 2 CPUs\n\
             ok\n\
             test b ... ok\n\
             SKIP root_x: no se.nr_migrations\n\
             test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s\n\
             test result: FAILED. 1 passed; 2 failed; 0 ignored\n",
        );
        assert_eq!((l.passed, l.failed, l.skipped), (4, 2, 2));
        assert_eq!(l.skips[0], "SKIP: a: needs 2 CPUs");
        let s = summary(&[l]);
        assert!(s.ends_with("4 passed, 2 failed, 2 skipped\n"), "{s}");
        assert!(s.contains("[root] SKIP root_x: no se.nr_migrations"), "{s}");
    }

    #[test]
    fn words_that_merely_contain_skip_are_not_skips() {
        let mut l = Lane::new("unit");
        l.text("test skipper::SKIPPED_NAMES ... ok\nno SKIPPING here\n");
        assert_eq!(l.skipped, 0);
    }
}
