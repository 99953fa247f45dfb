//! Why a configuration file was refused, with file, line and column for every problem.
//!
//! A file that cannot be read is one error with its I/O cause. A file that was read is checked
//! completely, so that an operator fixes every mistake in one round: all its problems come back
//! together as [`Diagnostic`]s, each printed `<path>:<line>:<column>: <message>` like a
//! compiler's, one per line.
//!
//! A file that is valid may still carry [`Diagnostic`]s: warnings, and [`MirrorProblem`]s,
//! which stop one mirror but not the daemon. They are typed so that a consumer can tell where
//! each one is and which mirror it concerns, and they print exactly like an error does.

use std::path::PathBuf;

use super::MirrorName;

/// One problem found in a configuration file, at a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as it was named to [`super::Config::load`].
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong and what was expected; lowercase, no trailing period.
    pub message: String,
}

impl Diagnostic {
    /// Returns a diagnostic at byte `offset` of `source`, the text of the file at `path`.
    pub fn at(
        path: impl Into<PathBuf>,
        source: &str,
        offset: usize,
        message: impl Into<String>,
    ) -> Diagnostic {
        let (line, column) = line_and_column(source, offset);
        Diagnostic {
            path: path.into(),
            line,
            column,
            message: message.into(),
        }
    }
}

/// Prints `<path>:<line>:<column>: <message>` on one line: control characters that a quoted
/// value or a path brings in are escaped (`\n`), so that a value cannot start a line that
/// reads like another diagnostic.
impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.path.display().to_string();
        write!(
            f,
            "{}:{}:{}: {}",
            one_line(&path),
            self.line,
            self.column,
            one_line(&self.message)
        )
    }
}

/// Returns `text` with its control characters escaped as Rust writes them.
fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// A problem that makes one mirror unable to update but does not stop the daemon serving the
/// others (see [`super::Config::mirror_problems`]). Prints as its [`Diagnostic`], whose
/// message names the mirror too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorProblem {
    /// The mirror it concerns.
    pub mirror: MirrorName,
    /// Where the problem was written and what it is.
    pub diagnostic: Diagnostic,
}

impl std::fmt::Display for MirrorProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.diagnostic.fmt(f)
    }
}

/// Why [`super::Config::load`] refused a file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all (missing, unreadable, a directory, ...).
    #[error("cannot read configuration file {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration: every problem found, in file order.
    #[error("{}", lines(diagnostics))]
    Invalid { diagnostics: Vec<Diagnostic> },
}

impl ConfigError {
    /// Returns the positioned problems (empty for an I/O error).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Io { .. } => &[],
            ConfigError::Invalid { diagnostics } => diagnostics,
        }
    }
}

fn lines(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(Diagnostic::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Returns the 1-based line and character column of byte `offset` in `source`. An offset past
/// the end, or inside a multi-byte character, is clamped to a character boundary before it.
pub(super) fn line_and_column(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let source = "a = 1\nbé = 'x'\n";
        assert_eq!(line_and_column(source, 0), (1, 1));
        assert_eq!(line_and_column(source, 4), (1, 5));
        assert_eq!(line_and_column(source, 6), (2, 1));
        // 'é' is two bytes but one column.
        let eq = source.rfind(" =").expect("present");
        assert_eq!(line_and_column(source, eq), (2, 3));
        assert_eq!(line_and_column(source, 1000), (3, 1));
    }

    #[test]
    fn invalid_prints_one_diagnostic_per_line() {
        let source = "x\ny\n";
        let error = ConfigError::Invalid {
            diagnostics: vec![
                Diagnostic::at("c.toml", source, 0, "first"),
                Diagnostic::at("c.toml", source, 2, "second"),
            ],
        };
        assert_eq!(error.to_string(), "c.toml:1:1: first\nc.toml:2:1: second");
        assert_eq!(error.diagnostics().len(), 2);
    }

    #[test]
    fn io_error_names_the_path_without_its_cause() {
        let error = ConfigError::Io {
            path: PathBuf::from("/etc/x.toml"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        assert_eq!(
            error.to_string(),
            "cannot read configuration file /etc/x.toml"
        );
        assert!(std::error::Error::source(&error).is_some());
    }

    #[test]
    fn a_mirror_problem_prints_as_its_diagnostic() {
        let diagnostic = Diagnostic::at("c.toml", "x\n", 2, "mirror `app`: gone");
        let problem = MirrorProblem {
            mirror: MirrorName::new("app").expect("a valid name"),
            diagnostic: diagnostic.clone(),
        };
        assert_eq!(problem.to_string(), diagnostic.to_string());
        assert_eq!(problem.to_string(), "c.toml:2:1: mirror `app`: gone");
    }
}
