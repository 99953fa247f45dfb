//! The admin subcommands, one file each. `main.rs` parses arguments and calls these.
pub mod check_config;
pub mod status;
pub mod update;
