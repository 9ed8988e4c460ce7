//! The report of a recording: its model (serialised as `--json`) and the
//! human rendering.
pub mod agreement;
pub mod model;
pub mod text;

pub use model::*;
