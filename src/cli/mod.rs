//! The admin subcommands, one file each. `main.rs` parses arguments and calls these.
pub mod check_config;
pub mod install_hook;
pub mod reload;
pub mod status;
pub mod sync;
pub mod update;
