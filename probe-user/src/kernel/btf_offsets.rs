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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
            eprintln!("SKIP resolves_offsets_from_the_running_kernel: {path} is not readable here");
            return;
        };
        let off = resolve(&btf).expect("offsets from the running kernel's BTF");
        assert_eq!(off.tgid, off.pid + 4, "{off:?}");
        assert!(off.pid > 0 && off.cpu > 0 && off.state < off.pid, "{off:?}");
    }
}
