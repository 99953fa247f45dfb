//! The single integration-test binary (see STYLE.md section 9).

mod chaos;
mod config;
mod daemon;
mod engine;
mod faults;
mod hook;
mod metrics;
mod servers;
mod socket;
mod ssh;
mod support;
mod transport;
