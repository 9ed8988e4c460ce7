//! What tailprobe reads from the running system, with no eBPF: every reader
//! of `/proc` and `/sys` takes a root path so tests point it at fixture
//! trees captured from real machines.
//!
//! - `procfs`: a process and its threads (`stat`, `status`, `schedstat`,
//!   `comm`, `cmdline`), our own `self/` files, and `/proc/sys` knobs (`sysctl`).
//! - `sysfs`: CPU topology (`topology`) and the one last-level cache reader
//!   (`cache::llc`) that topology, the node inventory and the noise
//!   generator share.
//! - `cpulist`: the kernel's CPU list format (`0-3,8`), parsed and printed.
//! - `affinity`: thread CPU affinity, online CPUs, thread start times.
//! - `clock`: CLOCK_MONOTONIC (the probes' clock), absolute sleeps, CPU time.
//! - `signals`: SIGINT/SIGTERM as a process-wide stop flag that loops poll.

pub mod affinity;
pub mod clock;
pub mod cpulist;
pub mod procfs;
pub mod signals;
pub mod sysfs;
