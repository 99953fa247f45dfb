//! `pushmirror ssh-keygen NAME [--force]`: makes mirror NAME's ed25519 key pair at its
//! `ssh_key` path and prints the public key to register downstream (a GitHub deploy key with
//! write access, a GitLab deploy key, an `authorized_keys` line).
//!
//! OpenSSH's own `ssh-keygen` makes the pair, so the key format is exactly what ssh reads. It
//! writes to a temporary name in the key's directory and the pair is renamed into place, so
//! an update running meanwhile reads the old key or the new one, never half a file. The
//! directory is made 0700 when missing, and one readable by group or others is refused: the
//! private key must be readable by the daemon's user only.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::config::Config;
use crate::mirror::credentials::too_open;

/// Makes the key pair of mirror `name`; returns the exit code (0 made, 1 refused or failed,
/// 2 no such mirror).
pub fn run(
    config: &Config,
    name: &str,
    force: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let Some(mirror) = config.mirror(name) else {
        let _ = writeln!(
            err,
            "error: no mirror named {name:?} in {}",
            config.path.display()
        );
        return EXIT_USAGE;
    };
    let key = &mirror.ssh.key;
    let public = with_suffix(key, ".pub");
    if !force && (key.exists() || public.exists()) {
        let _ = writeln!(
            err,
            "error: {} exists already; `pushmirror ssh-keygen {name} --force` replaces it \
             (register the new public key downstream before removing the old one)",
            key.display()
        );
        return EXIT_FAILED;
    }
    match generate(key, &format!("pushmirror:{name}")) {
        Ok(line) => {
            let _ = writeln!(out, "{line}");
            let _ = writeln!(
                err,
                "wrote {} (mode 0600) and {}; register the public key above on the remote \
                 with write access (a GitHub deploy key with \"Allow write access\", a GitLab \
                 deploy key with write access, or an authorized_keys line)",
                key.display(),
                public.display()
            );
            EXIT_OK
        }
        Err(message) => {
            let _ = writeln!(err, "error: {message}");
            EXIT_FAILED
        }
    }
}

/// Returns `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Makes an ed25519 key pair at `key` and `key.pub` with `comment`; returns the public line.
fn generate(key: &Path, comment: &str) -> Result<String, String> {
    let dir = key
        .parent()
        .ok_or_else(|| format!("{} names no file", key.display()))?;
    key_directory(dir)?;
    let file_name = key
        .file_name()
        .ok_or_else(|| format!("{} names no file", key.display()))?;
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(file_name);
    temporary_name.push(format!(".new-{}", std::process::id()));
    let temporary = dir.join(temporary_name);
    let temporary_public = with_suffix(&temporary, ".pub");
    for leftover in [&temporary, &temporary_public] {
        let _ = std::fs::remove_file(leftover);
    }
    let output = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(&temporary)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ssh-keygen (is OpenSSH installed?): {e}"))?;
    if !output.status.success() {
        for leftover in [&temporary, &temporary_public] {
            let _ = std::fs::remove_file(leftover);
        }
        return Err(format!(
            "ssh-keygen failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let rename = |from: &Path, to: &Path| {
        std::fs::rename(from, to)
            .map_err(|e| format!("cannot move the key to {}: {e}", to.display()))
    };
    std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("cannot chmod 600 {}: {e}", temporary.display()))?;
    let public = with_suffix(key, ".pub");
    rename(&temporary_public, &public)?;
    rename(&temporary, key)?;
    let line = std::fs::read_to_string(&public)
        .map_err(|e| format!("cannot read {}: {e}", public.display()))?;
    Ok(line.trim_end().to_owned())
}

/// Makes `dir` (mode 0700) when missing; refuses one that group or others can read.
fn key_directory(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Ok(meta) if too_open(meta.permissions().mode()) => Err(format!(
            "refusing to put a private key in {}: it is readable by group or others (mode \
             {:04o}); chmod 700 it, or set `ssh_key` to a path in a private directory",
            dir.display(),
            meta.permissions().mode() & 0o7777
        )),
        Ok(_) => Ok(()),
        Err(_) => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display())),
    }
}
