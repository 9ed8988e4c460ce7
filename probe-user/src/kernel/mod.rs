//! Everything that touches the kernel's BPF side: the embedded object, the
//! `task_struct` offsets from BTF, and loading/attaching the programs.
pub mod btf_offsets;
mod btf_scan;
pub mod loader;
pub mod plan;
pub mod startup;
pub mod tracefs;

/// The eBPF object built by `build.rs` from `probe-ebpf`.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe-ebpf"));
