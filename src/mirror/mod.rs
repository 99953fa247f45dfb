//! One update of one mirror.
pub mod refdiff;
pub mod remote;
