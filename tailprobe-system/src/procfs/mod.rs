//! Readers of `/proc`, rooted at a path so tests can use fixture trees.
pub mod parse;
pub mod process;

pub use process::ProcFs;
