//! A one-pass scanner over raw BTF that finds the few `task_struct` member
//! offsets the programs need, without building the kernel's whole type graph.
//!
//! The kernel's BTF (`/sys/kernel/btf/vmlinux`, about 5 MB and 100k+ types)
//! is a header, a type section of variable-length records, and a string
//! section. Parsing every record into an owned graph (what btfparse and aya
//! do) took about 0.37 s at start-up for five numbers. Here the type section
//! is walked once, remembering only where each record starts (4 bytes per
//! type), and the walk stops as soon as `struct task_struct` and the types
//! its looked-up members refer to have been seen. btfparse stays the test
//! oracle (`btf_offsets::resolve_with_btfparse`).

use super::btf_offsets::{BtfOffsetError, TaskOffsets};

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;
const KIND_MAX: u32 = 19;

/// How deep anonymous members and typedef chains are followed.
const MAX_DEPTH: usize = 16;

/// The type section, with the start of every record seen so far.
struct Scan<'a> {
    types: &'a [u8],
    strings: &'a [u8],
    /// `starts[id - 1]`: byte offset of type `id`'s record in `types`.
    starts: Vec<u32>,
    /// Where the next unseen record begins.
    next: usize,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn err(what: &str) -> BtfOffsetError {
    BtfOffsetError::Parse(what.to_string())
}

/// Bytes that follow a record's 12-byte common part, by kind.
fn extra_len(kind: u32, vlen: usize) -> Option<usize> {
    Some(match kind {
        KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
        KIND_ARRAY => 12,
        KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => vlen.checked_mul(12)?,
        KIND_ENUM | KIND_FUNC_PROTO => vlen.checked_mul(8)?,
        k if k <= KIND_MAX => 0,
        _ => return None,
    })
}

impl<'a> Scan<'a> {
    fn new(btf: &'a [u8]) -> Result<Self, BtfOffsetError> {
        let magic = btf
            .get(0..2)
            .map(|m| u16::from_le_bytes([m[0], m[1]]))
            .ok_or_else(|| err("shorter than a BTF header"))?;
        if magic != MAGIC {
            return Err(err("bad magic (not little-endian BTF)"));
        }
        let field = |i: usize| u32_at(btf, 4 + 4 * i).map(|v| v as usize);
        let (hdr_len, type_off, type_len, str_off, str_len) =
            match (field(0), field(1), field(2), field(3), field(4)) {
                (Some(a), Some(b), Some(c), Some(d), Some(e)) if a >= HEADER_LEN => (a, b, c, d, e),
                _ => return Err(err("truncated BTF header")),
            };
        let section = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off)?;
            btf.get(start..start.checked_add(len)?)
        };
        let types = section(type_off, type_len).ok_or_else(|| err("type section out of bounds"))?;
        let strings =
            section(str_off, str_len).ok_or_else(|| err("string section out of bounds"))?;
        Ok(Scan {
            types,
            strings,
            starts: Vec::with_capacity(type_len / 24),
            next: 0,
        })
    }

    /// Step over the next record; its id is `starts.len()` afterwards.
    fn step(&mut self) -> Result<bool, BtfOffsetError> {
        if self.next >= self.types.len() {
            return Ok(false);
        }
        let info = u32_at(self.types, self.next + 4).ok_or_else(|| err("truncated type"))?;
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let extra = extra_len(kind, vlen).ok_or_else(|| err("unknown type kind"))?;
        let start = u32::try_from(self.next).map_err(|_| err("type section too large"))?;
        self.starts.push(start);
        self.next = self
            .next
            .checked_add(12 + extra)
            .filter(|n| *n <= self.types.len())
            .ok_or_else(|| err("type record runs past the section"))?;
        Ok(true)
    }

    /// The record of type `id` (1-based), scanning further if needed.
    fn record(&mut self, id: u32) -> Result<usize, BtfOffsetError> {
        let idx = (id as usize)
            .checked_sub(1)
            .ok_or_else(|| err("type id 0 (void) where a struct was expected"))?;
        while self.starts.len() <= idx {
            if !self.step()? {
                return Err(err("type id beyond the type section"));
            }
        }
        Ok(self.starts[idx] as usize)
    }

    fn name(&self, name_off: u32) -> &'a [u8] {
        let rest = self.strings.get(name_off as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    fn header(&self, at: usize) -> (u32, u32, u32) {
        let w = |i: usize| u32_at(self.types, at + 4 * i).unwrap_or(0);
        (w(0), w(1), w(2))
    }

    /// The id of the first `struct NAME` with members (not a forward
    /// declaration), scanning no further than it.
    fn find_struct(&mut self, name: &str) -> Result<Option<u32>, BtfOffsetError> {
        // Records already seen first (they are few when this is the first call).
        for i in 0..self.starts.len() {
            if self.is_struct_named(self.starts[i] as usize, name) {
                return Ok(Some(i as u32 + 1));
            }
        }
        while self.step()? {
            let at = *self.starts.last().unwrap_or(&0) as usize;
            if self.is_struct_named(at, name) {
                return Ok(Some(self.starts.len() as u32));
            }
        }
        Ok(None)
    }

    fn is_struct_named(&self, at: usize, name: &str) -> bool {
        let (name_off, info, _) = self.header(at);
        (info >> 24) & 0x1f == KIND_STRUCT
            && info & 0xffff != 0
            && self.name(name_off) == name.as_bytes()
    }

    /// Through typedefs and qualifiers to the underlying type id.
    fn strip(&mut self, mut id: u32) -> Result<u32, BtfOffsetError> {
        for _ in 0..MAX_DEPTH {
            let at = self.record(id)?;
            let (_, info, ty) = self.header(at);
            match (info >> 24) & 0x1f {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty
                }
                _ => return Ok(id),
            }
        }
        Err(err("typedef chain too deep"))
    }

    /// Bit offset of member `name` of struct/union `id`, looking inside
    /// anonymous struct/union members. `None` when absent.
    fn member_bits(
        &mut self,
        id: u32,
        name: &str,
        depth: usize,
    ) -> Result<Option<Member>, BtfOffsetError> {
        if depth > MAX_DEPTH {
            return Ok(None);
        }
        let at = self.record(id)?;
        let (_, info, _) = self.header(at);
        let kind = (info >> 24) & 0x1f;
        if kind != KIND_STRUCT && kind != KIND_UNION {
            return Ok(None);
        }
        let kind_flag = info >> 31 == 1;
        for i in 0..(info & 0xffff) as usize {
            let m = at + 12 + 12 * i;
            let w = |k: usize| u32_at(self.types, m + 4 * k).unwrap_or(0);
            let (m_name, m_type, m_off) = (w(0), w(1), w(2));
            let (bits, bitfield) = if kind_flag {
                (m_off & 0x00ff_ffff, m_off >> 24 != 0)
            } else {
                (m_off, false)
            };
            let m_name = self.name(m_name);
            if m_name == name.as_bytes() {
                return Ok(Some(Member {
                    bits,
                    bitfield: bitfield || bits % 8 != 0,
                    type_id: m_type,
                }));
            }
            if m_name.is_empty() {
                let inner = self.strip(m_type)?;
                if let Some(found) = self.member_bits(inner, name, depth + 1)? {
                    return Ok(Some(Member {
                        bits: bits + found.bits,
                        ..found
                    }));
                }
            }
        }
        Ok(None)
    }

    /// Byte offset of a dotted member path (`thread_info.cpu`) in `id`.
    fn path_offset(&mut self, id: u32, path: &str) -> Result<Option<Member>, BtfOffsetError> {
        let mut ty = id;
        let mut total: Option<Member> = None;
        for part in path.split('.') {
            let Some(m) = self.member_bits(ty, part, 0)? else {
                return Ok(None);
            };
            ty = self.strip(m.type_id)?;
            total = Some(match total {
                None => m,
                Some(t) => Member {
                    bits: t.bits + m.bits,
                    ..m
                },
            });
        }
        Ok(total)
    }
}

#[derive(Debug, Clone, Copy)]
struct Member {
    bits: u32,
    bitfield: bool,
    type_id: u32,
}

/// Resolve the offsets by scanning raw BTF (the contents of
/// `/sys/kernel/btf/vmlinux`). Same answers and errors as btfparse.
pub fn resolve(btf: &[u8]) -> Result<TaskOffsets, BtfOffsetError> {
    let mut scan = Scan::new(btf)?;
    let task = scan
        .find_struct("task_struct")?
        .ok_or(BtfOffsetError::NoType("task_struct"))?;
    let mut field = |names: &[&str], what: &'static str| -> Result<u32, BtfOffsetError> {
        for name in names {
            if let Some(m) = scan.path_offset(task, name)? {
                if m.bitfield {
                    return Err(BtfOffsetError::BitField(name.to_string()));
                }
                let bytes = m.bits / 8;
                if bytes > 0x7fff {
                    return Err(BtfOffsetError::TooLarge(name.to_string(), bytes));
                }
                return Ok(bytes);
            }
        }
        Err(BtfOffsetError::NoField(what, names.join(", ")))
    };
    let pid = field(&["pid"], "task_struct.pid")?;
    let tgid = field(&["tgid"], "task_struct.tgid")?;
    let cpu = field(&["cpu", "thread_info.cpu"], "task_struct.cpu")?;
    let state = field(&["__state", "state"], "task_struct.__state")?;
    let comm = field(&["comm"], "task_struct.comm")?;
    // Optional: without them an untraced switch-in is counted, not rebuilt.
    let mut optional = |name: &str| field(&[name], "optional").unwrap_or(0);
    Ok(TaskOffsets {
        pid,
        tgid,
        cpu,
        state,
        comm,
        sum_exec_runtime: optional("se.sum_exec_runtime"),
        prev_sum_exec_runtime: optional("se.prev_sum_exec_runtime"),
    })
}

/// Byte offset of one more `task_struct` member (e.g. `prio` for the
/// Perfetto trace); None when absent, a bit-field, or beyond 0x7fff.
pub fn task_member(btf: &[u8], name: &str) -> Option<u32> {
    let mut scan = Scan::new(btf).ok()?;
    let task = scan.find_struct("task_struct").ok()??;
    let m = scan.path_offset(task, name).ok()??;
    let bytes = m.bits / 8;
    (!m.bitfield && bytes <= 0x7fff).then_some(bytes)
}
