//! Readers of `/proc`, rooted at a path so tests can use fixture trees.
pub mod parse;
pub mod process;
pub mod sysctl;

pub use process::ProcFs;
pub use sysctl::{sysctl, sysctl_parsed};
