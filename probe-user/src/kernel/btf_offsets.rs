//! `task_struct` field offsets of the running kernel, from its BTF.
//!
//! aya does not relocate struct accesses in Rust eBPF programs (no CO-RE), so
//! the programs read fields at offsets handed in as globals. Resolving them
//! here, at start-up, is what lets one binary run on 6.1, 6.12 and 6.18.

use btfparse::{Offset, Readable, TypeInformation};

/// Byte offsets of the `task_struct` fields the programs read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TaskOffsets {
    pub pid: u32,
    pub tgid: u32,
    /// `task_struct.cpu` (5.16+) or `task_struct.thread_info.cpu`.
    pub cpu: u32,
    /// `task_struct.__state` (5.14+) or `task_struct.state`.
    pub state: u32,
    /// `task_struct.comm`.
    pub comm: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum BtfOffsetError {
    #[error("cannot parse the kernel's BTF: {0}")]
    Parse(String),
    #[error("the kernel's BTF has no `struct {0}`")]
    NoType(&'static str),
    #[error("the kernel's BTF has no field {0} (tried: {1})")]
    NoField(&'static str, String),
    #[error("field {0} is a bit-field; tailprobe needs a byte offset")]
    BitField(String),
    #[error("offset {1} of {0} is beyond what the programs accept (0x7fff)")]
    TooLarge(String, u32),
}

struct Bytes<'a>(&'a [u8]);

impl Readable for Bytes<'_> {
    fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.checked_add(buffer.len());
        match end.and_then(|end| self.0.get(start..end)) {
            Some(src) => {
                buffer.copy_from_slice(src);
                Ok(())
            }
            None => Err(btfparse::Error::new(
                btfparse::ErrorKind::IOError,
                "read past the end of the BTF data",
            )),
        }
    }
}

/// Resolve the offsets from raw BTF (the contents of `/sys/kernel/btf/vmlinux`).
pub fn resolve(btf: &[u8]) -> Result<TaskOffsets, BtfOffsetError> {
    let info =
        TypeInformation::new(&Bytes(btf)).map_err(|e| BtfOffsetError::Parse(format!("{e:?}")))?;
    let task = info
        .id_of("task_struct")
        .ok_or(BtfOffsetError::NoType("task_struct"))?;
    let field = |names: &[&str], what: &'static str| -> Result<u32, BtfOffsetError> {
        for name in names {
            if let Ok((_, off)) = info.offset_of(task, name) {
                return match off {
                    Offset::ByteOffset(b) if b <= 0x7fff => Ok(b),
                    Offset::ByteOffset(b) => Err(BtfOffsetError::TooLarge(name.to_string(), b)),
                    Offset::BitOffsetAndSize(..) => Err(BtfOffsetError::BitField(name.to_string())),
                };
            }
        }
        Err(BtfOffsetError::NoField(what, names.join(", ")))
    };
    Ok(TaskOffsets {
        pid: field(&["pid"], "task_struct.pid")?,
        tgid: field(&["tgid"], "task_struct.tgid")?,
        cpu: field(&["cpu", "thread_info.cpu"], "task_struct.cpu")?,
        state: field(&["__state", "state"], "task_struct.__state")?,
        comm: field(&["comm"], "task_struct.comm")?,
    })
}

/// Offset of `task_struct.prio` (for the Perfetto trace's priorities);
/// None when this kernel's BTF does not say.
pub fn resolve_prio(btf: &[u8]) -> Option<u32> {
    let info = TypeInformation::new(&Bytes(btf)).ok()?;
    let task = info.id_of("task_struct")?;
    match info.offset_of(task, "prio").ok()?.1 {
        Offset::ByteOffset(b) if b <= 0x7fff => Some(b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal BTF blob with `int`, `struct thread_info { int cpu; }` and a
    /// `struct task_struct` laid out as given: (member name, type id, byte offset).
    fn btf_blob(members: &[(&str, u32, u32)]) -> Vec<u8> {
        let mut strings = vec![0u8];
        let mut name = |s: &str| -> u32 {
            let off = strings.len() as u32;
            strings.extend_from_slice(s.as_bytes());
            strings.push(0);
            off
        };
        let mut types: Vec<u32> = Vec::new();
        // [1] int: INT kind 1, size 4, 32-bit signed.
        types.extend([name("int"), 1 << 24, 4, (1 << 24) | 32]);
        // [2] struct thread_info { int cpu; } (x86 before 5.16 keeps cpu here).
        types.extend([name("thread_info"), (4 << 24) | 1, 8]);
        types.extend([name("cpu"), 1, 0]);
        // [3] struct task_struct.
        types.extend([name("task_struct"), (4 << 24) | members.len() as u32, 9000]);
        for (m, ty, off) in members {
            types.extend([name(m), *ty, off * 8]);
        }
        let type_bytes: Vec<u8> = types.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut out = Vec::new();
        out.extend(0xeb9fu16.to_le_bytes());
        out.extend([1u8, 0]);
        out.extend(24u32.to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend((type_bytes.len() as u32).to_le_bytes());
        out.extend((type_bytes.len() as u32).to_le_bytes());
        out.extend((strings.len() as u32).to_le_bytes());
        out.extend(type_bytes);
        out.extend(strings);
        out
    }

    /// The 6.12/6.18 layout: `__state`, and `cpu` directly in task_struct.
    #[test]
    fn new_layout() {
        let btf = btf_blob(&[
            ("thread_info", 2, 0),
            ("__state", 1, 24),
            ("cpu", 1, 52),
            ("pid", 1, 2480),
            ("tgid", 1, 2484),
            ("comm", 1, 3000),
        ]);
        assert_eq!(
            resolve(&btf).unwrap(),
            TaskOffsets {
                pid: 2480,
                tgid: 2484,
                cpu: 52,
                state: 24,
                comm: 3000,
            }
        );
    }

    /// The pre-5.14 / pre-5.16 layout: `state`, and `cpu` in thread_info.
    #[test]
    fn old_layout() {
        let btf = btf_blob(&[
            ("thread_info", 2, 16),
            ("state", 1, 40),
            ("pid", 1, 1200),
            ("tgid", 1, 1204),
            ("comm", 1, 1600),
        ]);
        assert_eq!(
            resolve(&btf).unwrap(),
            TaskOffsets {
                pid: 1200,
                tgid: 1204,
                cpu: 16,
                state: 40,
                comm: 1600,
            }
        );
    }

    #[test]
    fn missing_field_is_named() {
        let btf = btf_blob(&[("thread_info", 2, 0), ("__state", 1, 24), ("pid", 1, 2480)]);
        let err = resolve(&btf).unwrap_err().to_string();
        assert!(err.contains("task_struct.tgid"), "{err}");
    }

    #[test]
    fn offset_beyond_the_mask_is_refused() {
        let btf = btf_blob(&[
            ("thread_info", 2, 0),
            ("__state", 1, 24),
            ("pid", 1, 40000),
            ("tgid", 1, 40004),
        ]);
        assert!(matches!(resolve(&btf), Err(BtfOffsetError::TooLarge(..))));
    }

    #[test]
    fn garbage_is_a_parse_error_not_a_panic() {
        assert!(matches!(
            resolve(b"not btf at all"),
            Err(BtfOffsetError::Parse(_))
        ));
        assert!(matches!(resolve(&[]), Err(BtfOffsetError::Parse(_))));
    }

    /// Checks the offsets against this machine's kernel: `tgid` follows `pid`
    /// directly in every kernel since 2.6, and all four lie inside the struct.
    #[test]
    fn resolves_offsets_from_the_running_kernel() {
        let path = crate::privileges::VMLINUX_BTF;
        let Ok(btf) = std::fs::read(path) else {
            eprintln!(
                "SKIP: resolves_offsets_from_the_running_kernel: {path} is not readable here"
            );
            return;
        };
        let off = resolve(&btf).expect("offsets from the running kernel's BTF");
        assert_eq!(off.tgid, off.pid + 4, "{off:?}");
        assert!(off.pid > 0 && off.cpu > 0 && off.state < off.pid, "{off:?}");
    }
}
