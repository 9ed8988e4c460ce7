//! Readers of `/sys`, rooted at a path so tests can use fixture trees.
pub mod cache;
pub mod topology;
