//! `create = true`: makes a mirror's missing local repository (seeded with one commit, the
//! post-receive hook installed) and its missing local remote, so that the shipped
//! demonstration configuration works on a fresh checkout.
//!
//! Repositories are written with the git CLI (git2 is kept for local reads); nothing here
//! runs unless a mirror asks for it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tracing::info;

use crate::config::Mirror;
use crate::mirror::url::Scheme;

/// Why a repository could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("cannot run git to create {path}")]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create {path}: git {step} failed: {stderr}")]
    Git {
        path: PathBuf,
        step: String,
        stderr: String,
    },
    #[error("cannot move the new repository into {path}")]
    Rename {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot install the hook into {path}: {detail}")]
    Hook { path: PathBuf, detail: String },
}

/// Creates what `mirror` (with `create = true`) lacks; `config_path` goes into the hook.
/// Returns what was created, for the log.
pub fn ensure(mirror: &Mirror, config_path: &Path) -> Result<Vec<PathBuf>, ProvisionError> {
    let mut created = Vec::new();
    if !mirror.create {
        return Ok(created);
    }
    if !mirror.repo.exists() {
        create_whole(&mirror.repo, |repo| {
            init_bare(repo)?;
            seed(repo)?;
            crate::hook::install::install_into(repo, config_path).map_err(|detail| {
                ProvisionError::Hook {
                    path: mirror.repo.clone(),
                    detail,
                }
            })?;
            Ok(())
        })?;
        created.push(mirror.repo.clone());
    }
    if *mirror.url.scheme() == Scheme::File {
        let remote = PathBuf::from(mirror.url.for_git().trim_start_matches("file://"));
        if !remote.exists() {
            create_whole(&remote, init_bare)?;
            created.push(remote);
        }
    }
    for path in &created {
        info!(mirror = %mirror.name, path = %path.display(), "created repository");
    }
    Ok(created)
}

fn git(
    path: &Path,
    step: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, ProvisionError> {
    use std::io::Write;
    let mut command = Command::new("git");
    command
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "pushmirror")
        .env("GIT_AUTHOR_EMAIL", "pushmirror@localhost")
        .env("GIT_COMMITTER_NAME", "pushmirror")
        .env("GIT_COMMITTER_EMAIL", "pushmirror@localhost")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let spawn_error = |source| ProvisionError::Spawn {
        path: path.to_owned(),
        source,
    };
    let mut child = command.spawn().map_err(spawn_error)?;
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input.write_all(text.as_bytes()).map_err(spawn_error)?;
    }
    let output = child.wait_with_output().map_err(spawn_error)?;
    if !output.status.success() {
        return Err(ProvisionError::Git {
            path: path.to_owned(),
            step: step.to_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Makes the repository at `path` with `make` in a hidden sibling directory and renames it
/// into place, so that nobody (a clone, the first update) sees it half made.
fn create_whole(
    path: &Path,
    make: impl FnOnce(&Path) -> Result<(), ProvisionError>,
) -> Result<(), ProvisionError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let partial = path.with_file_name(format!(
        ".{}.creating-{}",
        name.unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&partial);
    let made = make(&partial).and_then(|()| {
        std::fs::rename(&partial, path).map_err(|source| ProvisionError::Rename {
            path: path.to_owned(),
            source,
        })
    });
    if made.is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    made
}

fn init_bare(path: &Path) -> Result<(), ProvisionError> {
    let text = path.to_string_lossy();
    git(
        path,
        "init",
        &["init", "--quiet", "--bare", "--initial-branch=main", &text],
        None,
    )?;
    Ok(())
}

/// Gives a new repository one commit on `main`, so that there is something to mirror.
fn seed(repo: &Path) -> Result<(), ProvisionError> {
    let dir = format!("--git-dir={}", repo.to_string_lossy());
    let readme = "# Demonstration repository\n\nCreated by pushmirror (`create = true`). Clone it, \
                  commit, push, and watch `pushmirror status`.\n";
    let blob = git(
        repo,
        "hash-object",
        &[&dir, "hash-object", "-w", "--stdin"],
        Some(readme),
    )?;
    let tree = git(
        repo,
        "mktree",
        &[&dir, "mktree"],
        Some(&format!("100644 blob {blob}\tREADME.md\n")),
    )?;
    let commit = git(
        repo,
        "commit-tree",
        &[&dir, "commit-tree", &tree, "-m", "Initial commit"],
        None,
    )?;
    git(
        repo,
        "update-ref",
        &[&dir, "update-ref", "refs/heads/main", &commit],
        None,
    )?;
    Ok(())
}
