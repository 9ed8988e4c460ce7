//! tracefs: finding (or mounting) it, and parsing tracepoint format files,
//! the kernel's own description of each classic tracepoint's record layout.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

/// One field of a tracepoint record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub decl: String,
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
}

/// A parsed `format` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Format {
    pub name: String,
    pub id: Option<u32>,
    pub fields: BTreeMap<String, Field>,
    pub print_fmt: String,
}

impl Format {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.get(name)
    }

    /// Value names that `print fmt` gives a field with `__print_symbolic`,
    /// e.g. the migrate reasons of `mm_migrate_pages`.
    pub fn symbols(&self, field: &str) -> BTreeMap<i64, String> {
        let mut out = BTreeMap::new();
        let needle = format!("__print_symbolic(REC->{field},");
        let Some(start) = self.print_fmt.find(&needle) else {
            return out;
        };
        let rest = &self.print_fmt[start + needle.len()..];
        // Walk `{N, "name"}` pairs until the closing parenthesis.
        let mut depth = 1i32;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        for pair in rest[..end].split('{').skip(1) {
            let Some((num, name)) = pair.split_once(',') else {
                continue;
            };
            let name = name.trim().trim_end_matches(['}', ',', ' ']).trim();
            let name = name.trim_matches('"');
            let num = num.trim();
            let v = if let Some(h) = num.strip_prefix("0x") {
                i64::from_str_radix(h, 16).ok()
            } else {
                num.parse().ok()
            };
            if let Some(v) = v {
                out.insert(v, name.to_string());
            }
        }
        out
    }
}

/// Parse a tracepoint format file.
pub fn parse_format(s: &str) -> Format {
    let mut f = Format::default();
    for line in s.lines() {
        let line = line.trim();
        if let Some(n) = line.strip_prefix("name:") {
            f.name = n.trim().to_string();
        } else if let Some(n) = line.strip_prefix("ID:") {
            f.id = n.trim().parse().ok();
        } else if let Some(p) = line.strip_prefix("print fmt:") {
            f.print_fmt = p.trim().to_string();
        } else if line.starts_with("field:") {
            if let Some((name, field)) = parse_field(line) {
                f.fields.insert(name, field);
            }
        }
    }
    f
}

/// `field:unsigned long succeeded;\toffset:8;\tsize:8;\tsigned:0;`
fn parse_field(line: &str) -> Option<(String, Field)> {
    let mut decl = None;
    let (mut offset, mut size, mut signed) = (None, None, false);
    for part in line.split(';') {
        let part = part.trim();
        if let Some(d) = part.strip_prefix("field:") {
            decl = Some(d.trim().to_string());
        } else if let Some(v) = part.strip_prefix("offset:") {
            offset = v.trim().parse().ok();
        } else if let Some(v) = part.strip_prefix("size:") {
            size = v.trim().parse().ok();
        } else if let Some(v) = part.strip_prefix("signed:") {
            signed = v.trim() == "1";
        }
    }
    let decl = decl?;
    // The name is the last identifier, before any array brackets.
    let base = decl.split('[').next()?.trim();
    let name = base
        .rsplit(|c: char| c.is_whitespace() || c == '*')
        .next()?
        .to_string();
    Some((
        name,
        Field {
            decl,
            offset: offset?,
            size: size?,
            signed,
        },
    ))
}

/// Where tracefs is, mounting it at /sys/kernel/tracing when nothing is
/// mounted. Returns (path, whether we mounted it).
pub fn ensure_mounted() -> std::io::Result<(PathBuf, bool)> {
    for p in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(p).join("events").is_dir() {
            return Ok((PathBuf::from(p), false));
        }
    }
    let target = c"/sys/kernel/tracing";
    let (src, fstype) = (c"nodev", c"tracefs");
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((PathBuf::from("/sys/kernel/tracing"), true))
}

/// Undo `ensure_mounted` when it mounted tracefs (leave the node as found).
pub fn unmount(path: &Path) {
    if let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) {
        // SAFETY: valid NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIGRATE_6_18: &str = "name: mm_migrate_pages
ID: 713
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:unsigned long succeeded;\toffset:8;\tsize:8;\tsigned:0;
\tfield:unsigned long failed;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned long large_folio_split;\toffset:48;\tsize:8;\tsigned:0;
\tfield:enum migrate_mode mode;\toffset:56;\tsize:4;\tsigned:0;
\tfield:int reason;\toffset:60;\tsize:4;\tsigned:1;

print fmt: \"nr_succeeded=%lu mode=%s reason=%s\", REC->succeeded, __print_symbolic(REC->mode, {0, \"MIGRATE_ASYNC\"}, {1, \"MIGRATE_SYNC_LIGHT\"}, {2, \"MIGRATE_SYNC\"}), __print_symbolic(REC->reason, {0, \"compaction\"}, {1, \"memory_failure\"}, {5, \"numa_misplaced\"}, {9, \"damon\"})
";

    /// 6.1 has no large_folio_split: reason sits 8 bytes earlier.
    const MIGRATE_6_1: &str = "name: mm_migrate_pages
ID: 512
format:
\tfield:unsigned long succeeded;\toffset:8;\tsize:8;\tsigned:0;
\tfield:unsigned long failed;\toffset:16;\tsize:8;\tsigned:0;
\tfield:enum migrate_mode mode;\toffset:48;\tsize:4;\tsigned:0;
\tfield:int reason;\toffset:52;\tsize:4;\tsigned:1;

print fmt: \"reason=%s\", __print_symbolic(REC->reason, {0, \"compaction\"})
";

    #[test]
    fn fields_and_ids() {
        let f = parse_format(MIGRATE_6_18);
        assert_eq!(f.name, "mm_migrate_pages");
        assert_eq!(f.id, Some(713));
        assert_eq!(f.field("succeeded").unwrap().offset, 8);
        assert_eq!(
            f.field("reason").unwrap(),
            &Field {
                decl: "int reason".into(),
                offset: 60,
                size: 4,
                signed: true
            }
        );
        assert_eq!(f.field("mode").unwrap().offset, 56);
        assert_eq!(
            parse_format(MIGRATE_6_1).field("reason").unwrap().offset,
            52
        );
    }

    #[test]
    fn symbolic_names() {
        let f = parse_format(MIGRATE_6_18);
        let r = f.symbols("reason");
        assert_eq!(r.get(&5).map(String::as_str), Some("numa_misplaced"));
        assert_eq!(r.get(&9).map(String::as_str), Some("damon"));
        assert_eq!(r.len(), 4);
        assert_eq!(f.symbols("mode").len(), 3);
        assert!(f.symbols("nope").is_empty());
    }

    #[test]
    fn array_and_pointer_fields() {
        let f = parse_format(
            "\tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
             \tfield:const char * name;\toffset:24;\tsize:8;\tsigned:0;\n",
        );
        assert_eq!(f.field("prev_comm").unwrap().size, 16);
        assert_eq!(f.field("name").unwrap().offset, 24);
    }
}
