//! `pushmirror check-config`: validates the configuration file and says what is wrong.
//!
//! Stricter than the daemon on purpose: problems that the daemon tolerates because they only
//! concern one mirror (`Config::mirror_problems`: a missing repository, an unsupported URL
//! scheme, a badly protected password file) are errors here, so that an operator finds them
//! before the mirror fails. The exit status keeps the two apart: 2 for a file the daemon
//! cannot load (it would not start, or a reload would be refused), 1 for a file it loads
//! while some mirrors cannot update, so that the unit's `ExecStartPre` refuses only the
//! first and one bad mirror never stops all the others. Output goes to the writers it is
//! given, so tests need no process.

use std::io::Write;
use std::path::Path;

use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::config::{Config, ConfigError};

/// Validates the configuration at `path`, writing a one-line summary to `out` or every error
/// to `err` (warnings go to `err` too). Returns the exit code: 0 if valid, 1 if the daemon
/// loads it but some mirrors have problems (each listed), 2 if the daemon cannot load it.
pub fn run(path: &Path, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    // A failed write (e.g. a closed pipe) cannot be reported anywhere better; the exit code
    // still says what happened.
    match Config::load(path) {
        Ok(config) => {
            for warning in &config.warnings {
                let _ = writeln!(err, "warning: {warning}");
            }
            // Fleet: a mirror whose repository has no hook silently stops.
            for forgotten in crate::hook::install::forgotten_hooks(&config.mirrors) {
                let _ = writeln!(err, "warning: {forgotten}");
            }
            if !config.mirror_problems.is_empty() {
                for problem in &config.mirror_problems {
                    let _ = writeln!(err, "error: {problem}");
                }
                return EXIT_FAILED;
            }
            let count = super::mirrors(config.mirrors.len());
            let _ = writeln!(out, "{}: ok, {count}", path.display());
            EXIT_OK
        }
        Err(ConfigError::Invalid { diagnostics }) => {
            for diagnostic in &diagnostics {
                let _ = writeln!(err, "error: {diagnostic}");
            }
            EXIT_USAGE
        }
        Err(error) => {
            let _ = writeln!(err, "error: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                let _ = writeln!(err, "  caused by: {cause}");
                source = cause.source();
            }
            EXIT_USAGE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_on(text: &str) -> (u8, String, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pushmirror.toml");
        std::fs::write(&path, text).expect("write config");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(&path, &mut out, &mut err);
        let show = |bytes: Vec<u8>| {
            String::from_utf8(bytes)
                .expect("utf-8 output")
                .replace(&path.display().to_string(), "CONFIG")
        };
        (code, show(out), show(err))
    }

    #[test]
    fn valid_without_mirrors() {
        let (code, out, err) = run_on("[daemon]\nstate_dir = \"state\"\n");
        assert_eq!(
            (code, out.as_str(), err.as_str()),
            (0, "CONFIG: ok, 0 mirrors\n", "")
        );
    }

    #[test]
    fn every_error_is_printed_with_its_position() {
        let (code, out, err) = run_on("[daemon]\nmax_parallel_pushes = 0\nbogus = 1\n");
        assert_eq!(code, 2);
        assert_eq!(out, "");
        assert_eq!(
            err,
            "error: CONFIG:2:23: `max_parallel_pushes` must be from 1 to 1024, not 0\n\
             error: CONFIG:3:1: unknown key `bogus`, expected one of `state_dir`, `socket`, \
             `socket_group`, `max_parallel_pushes`, `log_format`, `git_config`, `silent`, \
             `metrics_listen`\n"
        );
    }

    #[test]
    fn mirror_problems_are_errors_and_warnings_are_printed() {
        let (code, out, err) = run_on(
            "[[mirror]]\nname = \"app\"\nrepo = \"missing.git\"\n\
             url = \"https://bot:s3cret@example.com/app.git\"\n",
        );
        // 1, not 2: the daemon loads the file (issue 12, point 2).
        assert_eq!(code, 1);
        assert_eq!(out, "");
        assert!(!err.contains("s3cret"), "{err}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 2, "{err}");
        assert_eq!(
            lines[0],
            "warning: CONFIG:4:7: the url of mirror `app` embeds credentials \
             (https://*****:*****@example.com/app.git): move the password to `password_file` \
             (mode 600) and the user to `username`"
        );
        assert!(
            lines[1].starts_with("error: CONFIG:3:8: mirror `app`: repository /"),
            "{err}"
        );
        assert!(lines[1].ends_with("/missing.git does not exist"), "{err}");
    }

    #[test]
    fn missing_file_names_the_path_and_the_cause() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(Path::new("/nonexistent/pm.toml"), &mut out, &mut err);
        assert_eq!(code, 2);
        assert_eq!(
            String::from_utf8(err).expect("utf-8"),
            "error: cannot read configuration file /nonexistent/pm.toml\n  \
             caused by: No such file or directory (os error 2)\n"
        );
    }
}
