//! `pushmirror install-hook REPO... | --all`: installs the post-receive hook that runs
//! `pushmirror notify` into each repository (see [`crate::hook::install`]), one line each.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{EXIT_OK, EXIT_USAGE};
use crate::hook::install;

/// Runs `pushmirror install-hook` for the binary: installs the hook for this very binary
/// (`/proc/self/exe`) and `config_path` into each of `repos`. Returns the exit code.
pub fn main(repos: &[PathBuf], config_path: &Path) -> u8 {
    let (mut out, mut err) = (io::stdout(), io::stderr());
    let binary = match std::env::current_exe() {
        Ok(binary) => binary,
        Err(e) => {
            let _ = writeln!(
                err,
                "error: cannot find the path of this pushmirror binary: {e}"
            );
            return EXIT_USAGE;
        }
    };
    crate::mirror::init_libgit2();
    run(repos, config_path, &binary, &mut out, &mut err)
}

/// Installs the hook into each of `repos`, for `binary` run with `config_path` (both made
/// absolute here). Prints one line per repository to `out`, problems to `err`. Returns 0
/// when every repository got its hook, 2 otherwise (after trying them all).
pub fn run(
    repos: &[PathBuf],
    config_path: &Path,
    binary: &Path,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let config_path = crate::paths::canonical(config_path);
    let binary = crate::paths::canonical(binary);
    // A failed write (e.g. a closed pipe) cannot be reported anywhere better.
    if !config_path.exists() {
        let _ = writeln!(
            err,
            "warning: {} does not exist; the hook reads it at every push",
            config_path.display()
        );
    }
    let mut code = EXIT_OK;
    for repo in repos {
        match install::install(repo, &config_path, &binary) {
            Ok(report) => {
                if let Some(dir) = &report.shared_hooks_dir {
                    let _ = writeln!(
                        out,
                        "note: {} uses core.hooksPath {}; the hook there serves every repository using that hooks path",
                        repo.display(),
                        dir.display()
                    );
                }
                let _ = writeln!(
                    out,
                    "{}: {} ({})",
                    repo.display(),
                    report.installed.describe(),
                    report.hook.display()
                );
            }
            Err(e) => {
                let _ = writeln!(err, "error: {}", crate::error::chain(&e));
                code = EXIT_USAGE;
            }
        }
    }
    code
}

/// Fleet: returns every repository that a mirror of `config` names (templates expanded),
/// once each, in configuration order: what `install-hook --all` installs into.
pub fn configured_repos(config: &crate::config::Config) -> Vec<PathBuf> {
    let mut seen = std::collections::HashSet::new();
    config
        .mirrors
        .iter()
        .filter(|mirror| seen.insert(mirror.repo.clone()))
        .map(|mirror| mirror.repo.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_a_repository_fails_after_trying_the_others() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let good = dir.path().join("good.git");
        git2::Repository::init_bare(&good).expect("init bare repository");
        let bad = dir.path().join("plain");
        std::fs::create_dir(&bad).expect("mkdir");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = run(
            &[bad.clone(), good.clone()],
            Path::new("/c.toml"),
            Path::new("/pm"),
            &mut out,
            &mut err,
        );
        assert_eq!(code, EXIT_USAGE);
        let err = String::from_utf8_lossy(&err);
        assert!(
            err.contains(&format!("error: {} is not a git repository", bad.display())),
            "{err}"
        );
        let out = String::from_utf8_lossy(&out);
        assert!(out.contains(": installed ("), "{out}");
        assert!(good.join("hooks").join("post-receive").exists());
    }
}
