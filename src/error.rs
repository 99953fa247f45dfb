//! Rendering errors for people: a chain of causes on one line.

use std::error::Error;

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
