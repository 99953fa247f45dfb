//! The admin subcommands, one file each, and the exit codes they share. `main.rs` parses
//! arguments and calls these; they print and never decide policy.

pub mod check_config;
pub mod completions;
pub mod contact;
pub mod detect_host_keys;
pub mod install_hook;
pub mod pause;
pub mod plan;
pub mod reload;
pub mod ssh_keygen;
pub mod status;
pub mod sync;
pub mod update;
pub mod verify;

use std::io::Write;

use crate::client::ClientError;
use crate::error::chain;
use crate::protocol::Response;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: the operation failed (e.g. a mirror update failed).
pub const EXIT_FAILED: u8 = 1;
/// Exit code: usage, configuration or connection error.
pub const EXIT_USAGE: u8 = 2;

/// Returns "1 mirror", "2 mirrors": a count of mirrors in words.
pub fn mirrors(count: usize) -> String {
    format!("{count} mirror{}", if count == 1 { "" } else { "s" })
}

/// Runs `work` to completion on a multi-threaded tokio runtime; returns its exit code, or 2
/// if no runtime can be started.
pub fn block_on(work: impl Future<Output = u8>) -> u8 {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(work),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            EXIT_USAGE
        }
    }
}

/// Prints why the daemon's answer is not the one a command wanted; returns exit code 2.
fn report_unwanted(answer: Result<Response, ClientError>, err: &mut dyn Write) -> u8 {
    let _ = match answer {
        Ok(Response::Error { message, .. }) => writeln!(err, "error: {message}"),
        Ok(other) => writeln!(err, "error: unexpected answer from the daemon: {other:?}"),
        Err(e) => writeln!(err, "error: {}", chain(&e)),
    };
    EXIT_USAGE
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_mirror_is_singular() {
        assert_eq!(super::mirrors(0), "0 mirrors");
        assert_eq!(super::mirrors(1), "1 mirror");
        assert_eq!(super::mirrors(2), "2 mirrors");
    }
}
