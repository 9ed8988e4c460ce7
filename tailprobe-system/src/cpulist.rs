//! The kernel's CPU-list format (`0-3,8,10-11`), as in `cpus_allowed_list`,
//! `/sys/devices/system/node/node0/cpulist` and `taskset -c`.

use std::fmt;

/// Error in a CPU list, naming the offending part.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CpuListError {
    #[error("empty CPU list")]
    Empty,
    #[error("bad CPU number {0:?} in CPU list")]
    BadNumber(String),
    #[error("bad range {0:?} in CPU list: the start is above the end")]
    BadRange(String),
    #[error("CPU {0} is above the limit of {1}")]
    TooLarge(u32, u32),
}

/// Largest CPU number accepted (the kernel's NR_CPUS is at most 8192).
pub const MAX_CPU: u32 = 8191;

/// Parse a CPU list into sorted, de-duplicated CPU numbers. Whitespace around
/// the list and its parts is ignored; an empty string is an error, since
/// sysfs writes an empty line for "no CPUs" and callers should decide.
pub fn parse(s: &str) -> Result<Vec<u32>, CpuListError> {
    let s = s.trim();
    if s.is_empty() {
        return Err(CpuListError::Empty);
    }
    let mut cpus = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(CpuListError::BadNumber(part.to_string()));
        }
        // Stride form "0-15:2" is accepted by the kernel's bitmap parser.
        let (range, stride) = match part.split_once(':') {
            Some((r, st)) => (r, number(st, part)?.max(1)),
            None => (part, 1),
        };
        let (lo, hi) = match range.split_once('-') {
            Some((a, b)) => (number(a, part)?, number(b, part)?),
            None => {
                let n = number(range, part)?;
                (n, n)
            }
        };
        if lo > hi {
            return Err(CpuListError::BadRange(part.to_string()));
        }
        if hi > MAX_CPU {
            return Err(CpuListError::TooLarge(hi, MAX_CPU));
        }
        cpus.extend((lo..=hi).step_by(stride as usize));
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// Parse a list that may legitimately be empty (an empty sysfs file).
pub fn parse_maybe_empty(s: &str) -> Result<Vec<u32>, CpuListError> {
    if s.trim().is_empty() {
        Ok(Vec::new())
    } else {
        parse(s)
    }
}

fn number(s: &str, part: &str) -> Result<u32, CpuListError> {
    s.trim()
        .parse::<u32>()
        .map_err(|_| CpuListError::BadNumber(part.to_string()))
}

/// Formats CPU numbers back into the compact list form.
pub struct Display<'a>(pub &'a [u32]);

impl fmt::Display for Display<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sorted = self.0.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut first = true;
        let mut i = 0;
        while i < sorted.len() {
            let start = sorted[i];
            let mut end = start;
            while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
                i += 1;
                end = sorted[i];
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
            i += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ranges_singles_and_strides() {
        assert_eq!(parse("0-3,8,10-11").unwrap(), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse(" 5 \n").unwrap(), vec![5]);
        assert_eq!(parse("0-7:2").unwrap(), vec![0, 2, 4, 6]);
        assert_eq!(parse("3,1,3,2").unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn rejects_bad_input_with_the_offending_part() {
        assert_eq!(parse(""), Err(CpuListError::Empty));
        assert_eq!(parse("1,,2"), Err(CpuListError::BadNumber(String::new())));
        assert_eq!(parse("a-3"), Err(CpuListError::BadNumber("a-3".into())));
        assert_eq!(parse("5-2"), Err(CpuListError::BadRange("5-2".into())));
        assert_eq!(parse("-1"), Err(CpuListError::BadNumber("-1".into())));
        assert_eq!(parse("0-9000"), Err(CpuListError::TooLarge(9000, MAX_CPU)));
    }

    #[test]
    fn empty_sysfs_file_is_no_cpus() {
        assert_eq!(parse_maybe_empty("\n").unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn display_round_trips() {
        for s in ["0-3,8,10-11", "0", "1,3,5", "0-63"] {
            assert_eq!(Display(&parse(s).unwrap()).to_string(), s);
        }
    }
}
