//! `task_struct` field offsets of the running kernel, from its BTF.
//!
//! aya does not relocate struct accesses in Rust eBPF programs (no CO-RE), so
//! the programs read fields at offsets handed in as globals. Resolving them
//! here, at start-up, is what lets one binary run on 6.1, 6.12 and 6.18.
//!
//! The run-time path is the one-pass scanner in `btf_scan` (milliseconds);
//! btfparse, which builds the whole type graph (about 0.4 s on a 6.18
//! kernel's 5 MB of BTF), is kept only as the tests' oracle.

/// Byte offsets of the `task_struct` fields the programs read (the type
/// lives with the report that carries it).
pub use tailprobe_report::kernel::btf_offsets::TaskOffsets;

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

/// Resolve the offsets from raw BTF (the contents of `/sys/kernel/btf/vmlinux`).
pub fn resolve(btf: &[u8]) -> Result<TaskOffsets, BtfOffsetError> {
    super::btf_scan::resolve(btf)
}

/// Offset of `task_struct.prio` (for the Perfetto trace's priorities);
/// None when this kernel's BTF does not say.
pub fn resolve_prio(btf: &[u8]) -> Option<u32> {
    super::btf_scan::task_member(btf, "prio")
}

#[cfg(test)]
mod tests {
    use super::*;
    use btfparse::{Offset, Readable, TypeInformation};

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

    /// The oracle: the same offsets through btfparse's full type graph.
    pub(super) fn resolve_with_btfparse(btf: &[u8]) -> Result<TaskOffsets, BtfOffsetError> {
        let info = TypeInformation::new(&Bytes(btf))
            .map_err(|e| BtfOffsetError::Parse(format!("{e:?}")))?;
        let task = info
            .id_of("task_struct")
            .ok_or(BtfOffsetError::NoType("task_struct"))?;
        let field = |names: &[&str], what: &'static str| -> Result<u32, BtfOffsetError> {
            for name in names {
                if let Ok((_, off)) = info.offset_of(task, name) {
                    return match off {
                        Offset::ByteOffset(b) if b <= 0x7fff => Ok(b),
                        Offset::ByteOffset(b) => Err(BtfOffsetError::TooLarge(name.to_string(), b)),
                        Offset::BitOffsetAndSize(..) => {
                            Err(BtfOffsetError::BitField(name.to_string()))
                        }
                    };
                }
            }
            Err(BtfOffsetError::NoField(what, names.join(", ")))
        };
        let optional = |name: &str| field(&[name], "optional").unwrap_or(0);
        Ok(TaskOffsets {
            pid: field(&["pid"], "task_struct.pid")?,
            tgid: field(&["tgid"], "task_struct.tgid")?,
            cpu: field(&["cpu", "thread_info.cpu"], "task_struct.cpu")?,
            state: field(&["__state", "state"], "task_struct.__state")?,
            comm: field(&["comm"], "task_struct.comm")?,
            sum_exec_runtime: optional("se.sum_exec_runtime"),
            prev_sum_exec_runtime: optional("se.prev_sum_exec_runtime"),
        })
    }

    /// A minimal BTF blob with `int`, `struct thread_info { int cpu; }` and a
    /// `struct task_struct` laid out as given: (member name, type id, byte offset).
    fn btf_blob(members: &[(&str, u32, u32)]) -> Vec<u8> {
        let mut strings = vec![0u8];
        let mut name = |s: &str| -> u32 {
            if s.is_empty() {
                return 0; // anonymous
            }
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

    /// Both resolvers on the same bytes: the scanner must give btfparse's
    /// answer, or an error of the same kind.
    fn both(btf: &[u8]) -> Result<TaskOffsets, BtfOffsetError> {
        let fast = resolve(btf);
        let oracle = resolve_with_btfparse(btf);
        match (&fast, &oracle) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "scanner vs btfparse"),
            (Err(a), Err(b)) => assert_eq!(
                std::mem::discriminant(a),
                std::mem::discriminant(b),
                "scanner error {a} vs btfparse error {b}"
            ),
            _ => panic!("scanner {fast:?} vs btfparse {oracle:?}"),
        }
        fast
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
            both(&btf).unwrap(),
            TaskOffsets {
                pid: 2480,
                tgid: 2484,
                cpu: 52,
                state: 24,
                comm: 3000,
                sum_exec_runtime: 0,
                prev_sum_exec_runtime: 0,
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
            both(&btf).unwrap(),
            TaskOffsets {
                pid: 1200,
                tgid: 1204,
                cpu: 16,
                state: 40,
                comm: 1600,
                sum_exec_runtime: 0,
                prev_sum_exec_runtime: 0,
            }
        );
    }

    #[test]
    fn missing_field_is_named() {
        let btf = btf_blob(&[("thread_info", 2, 0), ("__state", 1, 24), ("pid", 1, 2480)]);
        let err = both(&btf).unwrap_err().to_string();
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
        assert!(matches!(both(&btf), Err(BtfOffsetError::TooLarge(..))));
    }

    #[test]
    fn garbage_is_a_parse_error_not_a_panic() {
        assert!(matches!(
            both(b"not btf at all"),
            Err(BtfOffsetError::Parse(_))
        ));
        assert!(matches!(both(&[]), Err(BtfOffsetError::Parse(_))));
        // Truncated real-looking BTF: every prefix of a valid blob.
        let btf = btf_blob(&[("pid", 1, 8), ("tgid", 1, 12)]);
        for n in 0..btf.len() {
            let _ = resolve(&btf[..n]);
        }
    }

    /// A kernel's BTF as captured under tests/fixtures/btf (xz-compressed),
    /// or None (with a SKIP line) where `xz` cannot be run.
    fn fixture(name: &str) -> Option<Vec<u8>> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/btf")
            .join(name);
        assert!(path.exists(), "{} is missing", path.display());
        match std::process::Command::new("xz")
            .arg("-dc")
            .arg(&path)
            .output()
        {
            Ok(o) if o.status.success() => Some(o.stdout),
            other => {
                eprintln!("SKIP: {name}: cannot run `xz -dc` here ({other:?})");
                None
            }
        }
    }

    /// Debian's 6.1 kernel (linux-image-6.1.0-50-amd64, the VM lane's):
    /// `__state`, `cpu` in task_struct; values checked against pahole's
    /// layout via btfparse.
    #[test]
    fn captured_6_1_blob_agrees_with_btfparse() {
        let Some(btf) = fixture("vmlinux-6.1.0-50-amd64.btf.xz") else {
            return;
        };
        let off = both(&btf).expect("offsets from Debian 6.1's BTF");
        assert_eq!(off.tgid, off.pid + 4, "{off:?}");
        // sched_entity: sum_exec_runtime, vruntime, prev_sum_exec_runtime.
        assert!(off.sum_exec_runtime > 0, "{off:?}");
        assert_eq!(
            off.prev_sum_exec_runtime,
            off.sum_exec_runtime + 16,
            "{off:?}"
        );
    }

    /// This project's machines' 6.18 kernel.
    #[test]
    fn captured_6_18_blob_agrees_with_btfparse() {
        let Some(btf) = fixture("vmlinux-6.18.44-fc-v1098.btf.xz") else {
            return;
        };
        let off = both(&btf).expect("offsets from 6.18's BTF");
        assert_eq!(off.tgid, off.pid + 4, "{off:?}");
        // sched_entity: sum_exec_runtime, prev_sum_exec_runtime (vruntime
        // moved away in 6.6's EEVDF rework).
        assert!(off.sum_exec_runtime > 0, "{off:?}");
        assert_eq!(
            off.prev_sum_exec_runtime,
            off.sum_exec_runtime + 8,
            "{off:?}"
        );
    }

    /// `task_struct.prio` (the Perfetto trace's priorities) from the scanner
    /// agrees with btfparse on the captured kernels.
    #[test]
    fn prio_offset_agrees_with_btfparse() {
        for name in [
            "vmlinux-6.1.0-50-amd64.btf.xz",
            "vmlinux-6.18.44-fc-v1098.btf.xz",
        ] {
            let Some(btf) = fixture(name) else {
                return;
            };
            let info = TypeInformation::new(&Bytes(&btf)).expect("btfparse");
            let task = info.id_of("task_struct").expect("task_struct");
            let want = match info.offset_of(task, "prio").expect("prio").1 {
                Offset::ByteOffset(b) => b,
                other => panic!("prio is not at a byte offset: {other:?}"),
            };
            assert_eq!(resolve_prio(&btf), Some(want), "{name}");
            assert_eq!(
                super::super::btf_scan::task_member(&btf, "no_such_member"),
                None
            );
        }
    }

    /// A member inside an anonymous union is found at the union's offset
    /// plus its own (btfparse does the same).
    #[test]
    fn member_inside_an_anonymous_union() {
        let mut btf = btf_blob(&[
            ("thread_info", 2, 0),
            ("__state", 1, 24),
            ("cpu", 1, 52),
            ("pid", 1, 2480),
            ("tgid", 1, 2484),
            ("", 4, 2992),
        ]);
        // Append [4] union { int x; int comm; } and fix the header's lengths.
        let hdr = 24;
        let type_len = u32::from_le_bytes(btf[12..16].try_into().unwrap()) as usize;
        let mut strings = btf[hdr + type_len..].to_vec();
        let comm_off = strings.len() as u32;
        strings.extend(b"comm\0");
        let x_off = strings.len() as u32;
        strings.extend(b"x\0");
        let mut types = btf[hdr..hdr + type_len].to_vec();
        for v in [0u32, (5 << 24) | 2, 8, x_off, 1, 0, comm_off, 1, 0] {
            types.extend(v.to_le_bytes());
        }
        btf.truncate(hdr);
        btf[12..16].copy_from_slice(&(types.len() as u32).to_le_bytes());
        btf[16..20].copy_from_slice(&(types.len() as u32).to_le_bytes());
        btf[20..24].copy_from_slice(&(strings.len() as u32).to_le_bytes());
        btf.extend(types);
        btf.extend(strings);
        assert_eq!(both(&btf).unwrap().comm, 2992);
    }

    /// Checks the offsets against this machine's kernel: `tgid` follows `pid`
    /// directly in every kernel since 2.6, and all four lie inside the struct.
    #[test]
    fn resolves_offsets_from_the_running_kernel() {
        let path = crate::privileges::VMLINUX_BTF;
        let t = std::time::Instant::now();
        let Ok(btf) = std::fs::read(path) else {
            eprintln!(
                "SKIP: resolves_offsets_from_the_running_kernel: {path} is not readable here"
            );
            return;
        };
        eprintln!("fs::read {:?}", t.elapsed());
        let t = std::time::Instant::now();
        let _ = aya::Btf::parse(&btf, aya::Endianness::default());
        eprintln!("aya parse {:?}", t.elapsed());
        let t = std::time::Instant::now();
        let off = resolve(&btf).expect("offsets from the running kernel's BTF");
        let fast = t.elapsed();
        let t = std::time::Instant::now();
        let oracle = resolve_with_btfparse(&btf).expect("btfparse on the running kernel's BTF");
        eprintln!("scanner {fast:?}, btfparse {:?}", t.elapsed());
        assert_eq!(off, oracle);
        assert_eq!(off.tgid, off.pid + 4, "{off:?}");
        assert!(off.pid > 0 && off.cpu > 0 && off.state < off.pid, "{off:?}");
    }
}
