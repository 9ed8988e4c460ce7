//! Pure analysis of experiment data, each part unit-tested with known
//! answers: statistics over repeats, rank correlation, tail attribution,
//! capacity and fleet size.

pub mod attribution;
pub mod bootstrap;
pub mod capacity;
pub mod correlate;
pub mod gap;
pub mod interference;
pub mod rank;
pub mod stats;
