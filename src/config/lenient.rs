//! The lenient reading of the configuration file: only `[daemon] state_dir` and `socket`, for
//! the processes that must work while the rest of the file is broken (SPEC.md section 2): the
//! hook, so that an operator mid-edit loses no push, and the admin commands that only talk to
//! the running daemon (`status`, `sync`, `reload`, and later `pause`, `resume`, `plan`), which
//! runs on the configuration it last loaded.
//!
//! It is the one place besides `validate.rs` that reads the file, and it reads it as a plain
//! TOML table: anything but those two keys, valid or not, is ignored, and values of the wrong
//! type take their defaults.

use std::path::{Path, PathBuf};

use super::{DEFAULT_STATE_DIR, default_socket};

/// The two paths a process needs to find the daemon: its socket, and the state directory
/// (whose spool takes notifications while no daemon answers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonPaths {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
}

impl DaemonPaths {
    /// Returns the paths of a file without a `[daemon]` table: the default state directory
    /// and its socket.
    pub fn defaults() -> DaemonPaths {
        let state_dir = PathBuf::from(DEFAULT_STATE_DIR);
        let socket = default_socket(&state_dir);
        DaemonPaths { state_dir, socket }
    }
}

/// Why [`daemon_paths`] found no paths.
#[derive(Debug, thiserror::Error)]
pub enum DaemonPathsError {
    /// The file cannot be read (missing, or not readable by this user).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not TOML at all; `first` is the first line of the parser's message.
    #[error("{} is not valid TOML ({first})", path.display())]
    NotToml { path: PathBuf, first: String },
}

/// Returns what to do about a configuration file this user may not read (permission
/// denied): one clause, said by the hook and by the admin commands alike.
pub fn unreadable_fix(path: &Path) -> String {
    format!(
        "user {} cannot read {} (permission denied): add it to the group that owns the file (the daemon's group), or make the file readable by it",
        this_user(),
        path.display()
    )
}

/// Returns the name of the user this process runs as, for messages: `$USER`, else
/// `$LOGNAME`, else the numeric id.
pub fn this_user() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
        // SAFETY: geteuid has no preconditions and cannot fail.
        .unwrap_or_else(|| format!("uid {}", unsafe { libc::geteuid() }))
}

/// Reads `[daemon] state_dir` and `socket` from the file at `config_path` (absolute),
/// leniently: anything else in the file, valid or not, is ignored, and values of the wrong
/// type take their defaults. Fails only when the file cannot be read or is not TOML.
pub fn daemon_paths(config_path: &Path) -> Result<DaemonPaths, DaemonPathsError> {
    let text = std::fs::read_to_string(config_path).map_err(|source| DaemonPathsError::Read {
        path: config_path.to_owned(),
        source,
    })?;
    // A server with thousands of mirrors has a large file; only `[daemon]` matters here, so
    // parse that table's text alone when it can be cut out cleanly.
    let cut = daemon_table_text(&text).and_then(|t| t.parse::<toml::Table>().ok());
    let table: toml::Table = match cut {
        Some(table) => Ok(table),
        None => text.parse(),
    }
    .map_err(|e: toml::de::Error| {
        let first = e.to_string();
        DaemonPathsError::NotToml {
            path: config_path.to_owned(),
            first: first.lines().next().unwrap_or("").to_owned(),
        }
    })?;
    let base = config_path.parent().unwrap_or(Path::new("/"));
    let daemon = table.get("daemon").and_then(toml::Value::as_table);
    let path_of = |key: &str| {
        daemon
            .and_then(|d| d.get(key))
            .and_then(toml::Value::as_str)
            .filter(|s| !s.is_empty())
            .map(|s| crate::paths::resolve(base, s))
    };
    let state_dir = path_of("state_dir").unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    let socket = path_of("socket").unwrap_or_else(|| default_socket(&state_dir));
    Ok(DaemonPaths { state_dir, socket })
}

/// Returns the `[daemon]` table of a configuration file's text, header included: from its
/// header line to the next table header. `None` if there is no such header line.
fn daemon_table_text(text: &str) -> Option<String> {
    let mut lines = text.lines();
    lines.by_ref().find(|line| {
        let line = line.trim_start();
        line.strip_prefix("[daemon]")
            .is_some_and(|rest| rest.trim_start().is_empty() || rest.trim_start().starts_with('#'))
    })?;
    let mut table = String::from("[daemon]\n");
    for line in lines.take_while(|line| !line.trim_start().starts_with('[')) {
        table.push_str(line);
        table.push('\n');
    }
    Some(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_read_leniently() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = dir.path().join("pm.toml");
        std::fs::write(
            &config,
            "[daemon]\nstate_dir = \"st\"\nbogus = 1\n[[mirror]]\nname = 3\n",
        )
        .expect("write");
        assert_eq!(
            daemon_paths(&config).expect("lenient"),
            DaemonPaths {
                state_dir: dir.path().join("st"),
                socket: dir.path().join("st/control.sock"),
            }
        );
        std::fs::write(&config, "[daemon]\nsocket = \"/run/pm.sock\"\n").expect("write");
        assert_eq!(
            daemon_paths(&config).expect("lenient"),
            DaemonPaths {
                state_dir: PathBuf::from(DEFAULT_STATE_DIR),
                socket: PathBuf::from("/run/pm.sock"),
            }
        );
        std::fs::write(&config, "[daemon\n").expect("write");
        let error = daemon_paths(&config).expect_err("not TOML").to_string();
        assert!(error.contains("is not valid TOML"), "{error}");
        assert!(!error.contains('\n'), "{error}");
    }

    #[test]
    fn the_daemon_table_is_cut_out_of_a_large_file() {
        let text = "# comment\n[daemon] # the daemon\nstate_dir = \"s\"\nsocket = \"s/c.sock\"\n\n\
                    [[mirror]]\nname = \"a\"\n";
        assert_eq!(
            daemon_table_text(text).as_deref(),
            Some("[daemon]\nstate_dir = \"s\"\nsocket = \"s/c.sock\"\n\n")
        );
        assert_eq!(daemon_table_text("[[mirror]]\nname = \"a\"\n"), None);
    }

    #[test]
    fn a_missing_file_is_a_read_error() {
        let error = daemon_paths(Path::new("/nonexistent/pm.toml")).expect_err("missing");
        assert!(matches!(error, DaemonPathsError::Read { .. }), "{error:?}");
        assert!(
            error
                .to_string()
                .starts_with("cannot read /nonexistent/pm.toml: "),
            "{error}"
        );
    }

    #[test]
    fn defaults_are_those_of_a_file_without_daemon_table() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = dir.path().join("pm.toml");
        std::fs::write(&config, "[[mirror]]\n").expect("write");
        assert_eq!(
            daemon_paths(&config).expect("lenient"),
            DaemonPaths::defaults()
        );
    }
}
