//! The single integration-test binary (see STYLE.md section 9).

mod config;
mod engine;
mod servers;
mod support;
mod transport;
