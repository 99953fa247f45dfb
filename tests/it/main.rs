//! The single integration-test binary (see STYLE.md section 9).

mod chaos;
mod config;
mod daemon;
mod engine;
mod faults;
mod fleet;
mod formats;
mod hook;
mod lfs;
mod metrics;
mod ops;
mod plan;
mod servers;
mod socket;
mod ssh;
mod support;
mod transport;
