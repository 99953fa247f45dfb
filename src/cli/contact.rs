//! How the commands that only talk to the running daemon find it: `status`, `sync`, `reload`
//! (and `pause`, `resume`, `plan` when they come). SPEC.md section 2: they need only the
//! `[daemon]` table to find the socket, so a file with errors elsewhere (an operator
//! mid-edit) does not stop them; they say that the file has errors, with each diagnostic,
//! and that the daemon runs on the configuration it last loaded, then still answer.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::EXIT_USAGE;
use crate::config::{self, Config, ConfigError, DaemonPathsError};
use crate::error::chain;

/// What a command that talks to the daemon has to go on.
#[derive(Debug)]
pub struct Contact {
    /// The daemon's control socket.
    pub socket: PathBuf,
    /// The file's configuration when it is valid; `None` while it has errors, when only the
    /// socket could be found.
    pub config: Option<Config>,
    /// The configuration file, as named.
    pub path: PathBuf,
}

impl Contact {
    /// Returns whether the file names mirror `name` although the daemon does not know it,
    /// i.e. whether a `pushmirror reload` would help.
    pub fn file_knows(&self, name: &str) -> bool {
        self.config
            .as_ref()
            .is_some_and(|c| c.mirror(name).is_some())
    }
}

/// Returns how to reach the daemon configured in the file at `path`. A file with errors is
/// reported on `err` (each diagnostic with file:line:column, and that the daemon runs on the
/// configuration it last loaded), and the socket is found from `[daemon]` alone
/// (`config::daemon_paths`). Fails with exit code 2, after saying why on `err`, only when
/// not even that table can be read.
pub fn find(path: &Path, err: &mut dyn Write) -> Result<Contact, u8> {
    let error = match Config::load(path) {
        Ok(config) => {
            return Ok(Contact {
                socket: config.daemon.socket.clone(),
                config: Some(config),
                path: path.to_owned(),
            });
        }
        Err(error) => error,
    };
    // The lenient reader takes an absolute path, as `Config::load` makes it.
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    match config::daemon_paths(&absolute) {
        Ok(paths) => {
            report_errors(path, &error, err);
            Ok(Contact {
                socket: paths.socket,
                config: None,
                path: path.to_owned(),
            })
        }
        Err(DaemonPathsError::Read { path, source })
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            let _ = writeln!(err, "error: {}", config::unreadable_fix(&path));
            Err(EXIT_USAGE)
        }
        Err(_) => {
            // Not even `[daemon]` can be read: the load's own errors say it best.
            match &error {
                ConfigError::Invalid { diagnostics } => {
                    for diagnostic in diagnostics {
                        let _ = writeln!(err, "error: {diagnostic}");
                    }
                }
                other => {
                    let _ = writeln!(err, "error: {}", chain(other));
                }
            }
            Err(EXIT_USAGE)
        }
    }
}

/// Writes that the file has errors, each of them, and that the daemon is unaffected.
fn report_errors(path: &Path, error: &ConfigError, err: &mut dyn Write) {
    let _ = writeln!(
        err,
        "warning: {} has errors; the daemon runs on the configuration it last loaded",
        path.display()
    );
    match error {
        ConfigError::Invalid { diagnostics } => {
            for diagnostic in diagnostics {
                let _ = writeln!(err, "  {diagnostic}");
            }
        }
        other => {
            let _ = writeln!(err, "  {}", chain(other));
        }
    }
}

/// Writes the hint for names the daemon does not know but the file does: the daemon has not
/// loaded the file since they were added.
pub fn hint_reload(contact: &Contact, names: &[String], err: &mut dyn Write) {
    let known: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|name| contact.file_knows(name))
        .collect();
    if known.is_empty() {
        return;
    }
    let _ = writeln!(
        err,
        "hint: {} {} in {} but not in the configuration the daemon runs on; run 'pushmirror reload'",
        known.join(", "),
        if known.len() == 1 { "is" } else { "are" },
        contact.path.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find_in(text: &str) -> (tempfile::TempDir, Result<Contact, u8>, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pm.toml");
        std::fs::write(&path, text).expect("write config");
        let mut err = Vec::new();
        let found = find(&path, &mut err);
        let err = String::from_utf8(err)
            .expect("utf-8")
            .replace(&path.display().to_string(), "CONFIG");
        (dir, found, err)
    }

    #[test]
    fn a_valid_file_is_silent_and_kept() {
        let (dir, found, err) = find_in("[daemon]\nstate_dir = \"st\"\n");
        let contact = found.expect("found");
        assert_eq!(err, "");
        assert_eq!(contact.socket, dir.path().join("st/control.sock"));
        assert!(contact.config.is_some());
    }

    #[test]
    fn a_file_with_errors_gives_the_socket_and_says_so() {
        let (dir, found, err) =
            find_in("[daemon]\nstate_dir = \"st\"\n\n[[mirror]]\nname = \"a\"\nbogus = 1\n");
        let contact = found.expect("found");
        assert_eq!(contact.socket, dir.path().join("st/control.sock"));
        assert!(contact.config.is_none());
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(
            lines[0],
            "warning: CONFIG has errors; the daemon runs on the configuration it last loaded"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("  CONFIG:6:1: unknown key `bogus`")),
            "{err}"
        );
    }

    #[test]
    fn a_file_that_is_not_toml_is_a_usage_error() {
        let (_dir, found, err) = find_in("[daemon\n");
        assert_eq!(found.expect_err("not TOML"), EXIT_USAGE);
        assert!(err.starts_with("error: CONFIG:1:"), "{err}");
    }

    #[test]
    fn reload_is_suggested_only_for_names_the_file_knows() {
        let (_dir, found, _) =
            find_in("[[mirror]]\nname = \"new\"\nrepo = \"r.git\"\nurl = \"https://h/x.git\"\n");
        let contact = found.expect("found");
        let mut err = Vec::new();
        hint_reload(&contact, &["new".into(), "typo".into()], &mut err);
        let err = String::from_utf8(err).expect("utf-8");
        assert!(err.starts_with("hint: new is in "), "{err}");
        assert!(err.trim_end().ends_with("run 'pushmirror reload'"), "{err}");
        let mut err = Vec::new();
        hint_reload(&contact, &["typo".into()], &mut err);
        assert!(err.is_empty());
    }
}
