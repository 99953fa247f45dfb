//! Error helpers for the binaries: rendering a chain of causes, exit codes.

use std::error::Error;

/// Exit code: the operation failed (e.g. a mirror update failed).
pub const EXIT_FAILED: u8 = 1;
/// Exit code: usage, configuration or connection error.
pub const EXIT_USAGE: u8 = 2;

/// Returns `e` and its causes as one line, `a: b: c`.
pub fn chain(e: &dyn Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
