//! The plain types of probe-user's kernel side that a report carries, at
//! the paths probe-user gives them (`kernel::btf_offsets::TaskOffsets`,
//! `kernel::plan::LeftOut`, `kernel::startup::Phases`; it re-exports them
//! there).

pub mod btf_offsets {
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
        /// `task_struct.se.sum_exec_runtime` and `se.prev_sum_exec_runtime`
        /// (the slice of an untraced switch-in, `probe_common::untraced`);
        /// 0 when this kernel's BTF does not have them.
        pub sum_exec_runtime: u32,
        pub prev_sum_exec_runtime: u32,
    }
}

pub mod plan {
    /// An optional program that the run does not load, and why.
    #[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
    pub struct LeftOut {
        pub program: &'static str,
        pub reason: String,
    }
}

pub mod startup {
    /// Where the time to attach went (`attach_ms.phases`), in ms.
    #[derive(Debug, Clone, Default, serde::Serialize)]
    pub struct Phases {
        /// From the first line of `main` to the start of the recording's set-up
        /// (argument parsing, the launched command started).
        pub before_setup: f64,
        /// Target resolved, priority set (from the start of the set-up).
        pub target: f64,
        /// `/sys/kernel/btf/vmlinux` read.
        pub btf_read: f64,
        /// `task_struct` offsets found by the one-pass scan.
        pub btf_offsets: f64,
        /// The BTF parsed once for the attach points (and the loader).
        pub btf_parse: f64,
        /// Topology, NUMA facts and map sizes read.
        pub config: f64,
        /// The object loaded: maps created and filled.
        pub load: f64,
        /// Programs verified and attached.
        pub attach: f64,
    }
}
