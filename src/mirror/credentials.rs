//! The HTTP(S) credentials of a mirror, read at the moment of each update.
//!
//! Reading late means a rotated token file is used by the next update without a reload. The
//! password lives in a `SecretString` from the moment it is read; `mirror::remote` is the only
//! place that exposes it, into a git child's environment.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use secrecy::SecretString;

use crate::config::{Mirror, PasswordSource};
use crate::mirror::remote::HttpCredentials;

/// Why a mirror's credentials could not be had.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("cannot read password_file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "refusing password_file {path}: it is readable by group or others (mode {mode:04o}); \
         chmod 600 it"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("password_file {path} is empty")]
    Empty { path: PathBuf },
    /// Worded for both processes that update: the daemon, and `pushmirror update`.
    #[error("password_env {name} is not set in the environment of the process that ran the update")]
    EnvMissing { name: String },
    #[error("a password is configured but no username: set `username` for this mirror")]
    NoUsername,
}

/// Returns the credentials to use for `mirror`'s remote: `None` when none are configured or the
/// transport is not HTTP(S).
pub fn resolve(mirror: &Mirror) -> Result<Option<HttpCredentials>, CredentialError> {
    if !mirror.url.is_http() {
        return Ok(None);
    }
    resolve_for_http_service(mirror)
}

/// Returns the mirror's HTTP credentials whatever the transport of its URL: the LFS server
/// of an SSH remote is still spoken to over HTTP(S), with the mirror's `username` and
/// password. `None` when none are configured.
pub fn resolve_for_http_service(
    mirror: &Mirror,
) -> Result<Option<HttpCredentials>, CredentialError> {
    let password = match &mirror.password {
        PasswordSource::None => return Ok(None),
        PasswordSource::Url => match mirror.url.password() {
            Some(secret) => secret.clone(),
            None => return Ok(None),
        },
        PasswordSource::Env(name) => match std::env::var(name) {
            Ok(value) if !value.is_empty() => SecretString::from(value),
            _ => return Err(CredentialError::EnvMissing { name: name.clone() }),
        },
        PasswordSource::File(path) => read_password_file(path)?,
    };
    let username = mirror
        .username
        .clone()
        .or_else(|| {
            mirror
                .url
                .user()
                .filter(|_| mirror.url.is_http())
                .map(str::to_owned)
        })
        .ok_or(CredentialError::NoUsername)?;
    Ok(Some(HttpCredentials { username, password }))
}

/// Returns true if a file of mode `mode` is readable or writable by group or others, which a
/// file holding a secret must not be (SPEC.md section 8). The one place this rule is written:
/// `check-config` and every update apply it.
pub fn too_open(mode: u32) -> bool {
    mode & 0o077 != 0
}

fn read_password_file(path: &std::path::Path) -> Result<SecretString, CredentialError> {
    let read_error = |source| CredentialError::Read {
        path: path.to_owned(),
        source,
    };
    let mode = std::fs::metadata(path)
        .map_err(read_error)?
        .permissions()
        .mode();
    if too_open(mode) {
        return Err(CredentialError::TooOpen {
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read_error)?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(CredentialError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(SecretString::from(secret.to_owned()))
}
