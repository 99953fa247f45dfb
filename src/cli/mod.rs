//! The admin subcommands, one file each. `main.rs` parses arguments and calls these.
pub mod check_config;
pub mod install_hook;
pub mod reload;
pub mod status;
pub mod sync;
pub mod update;

use std::io::Write;

use crate::client::ClientError;
use crate::error::{EXIT_USAGE, chain};
use crate::protocol::Response;

/// Prints why the daemon's answer is not the one a command wanted; returns exit code 2.
fn report_unwanted(answer: Result<Response, ClientError>, err: &mut dyn Write) -> u8 {
    let _ = match answer {
        Ok(Response::Error { message, .. }) => writeln!(err, "error: {message}"),
        Ok(other) => writeln!(err, "error: unexpected answer from the daemon: {other:?}"),
        Err(e) => writeln!(err, "error: {}", chain(&e)),
    };
    EXIT_USAGE
}
