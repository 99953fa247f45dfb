//! The only code that talks to remotes: `git ls-remote` and `git push --porcelain` as child
//! processes.
//!
//! TO BE IMPLEMENTED (see the interface below).

use std::collections::BTreeMap;
use std::path::Path;

use git2::Oid;
use secrecy::SecretString;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::GitConfigPolicy;
use crate::mirror::refdiff::RefUpdate;
use crate::url::RemoteUrl;

/// A user name and password (or token) for an HTTP(S) remote.
#[derive(Clone)]
pub struct HttpCredentials {
    pub username: String,
    pub password: SecretString,
}

/// Everything needed to run git against one mirror's remote, for one update.
pub struct Remote<'a> {
    /// The local bare repository; git runs with `--git-dir` set to it.
    pub git_dir: &'a Path,
    pub url: &'a RemoteUrl,
    pub credentials: Option<HttpCredentials>,
    pub git_config: GitConfigPolicy,
    /// When the whole update must be over; a git child still running then is killed.
    pub deadline: Instant,
    /// Cancelled on daemon shutdown; a running git child is killed.
    pub cancel: CancellationToken,
}

/// The remote's branches and tags (symbolic refs and peeled `^{}` entries dropped).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteRefs {
    pub refs: BTreeMap<String, Oid>,
}

/// What git said of each ref of a push, keyed by the destination ref.
#[derive(Debug, Clone, Default)]
pub struct PushReport {
    pub results: Vec<RefResult>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefResult {
    pub refname: String,
    pub outcome: RefOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefOutcome {
    /// Created, updated, forced or deleted (`*`, ` `, `+`, `-`).
    Done,
    /// Already as wanted (`=`).
    UpToDate,
    /// Refused by our own git before sending (`!` with `[rejected]`). `stale` is true for
    /// `stale info`, `fetch first` and `non-fast-forward`: the remote moved since it was read.
    Rejected { reason: String, stale: bool },
    /// Refused by the remote (`!` with `[remote rejected]`), in the remote's words.
    RemoteRejected { reason: String },
}

/// Why talking to the remote failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("the remote refused the credentials: {detail}")]
    AuthRefused { detail: String },
    #[error("the remote repository was not found: {detail}")]
    NotFound { detail: String },
    #[error("cannot reach the remote: {detail}")]
    Unreachable { detail: String },
    #[error("the remote server failed: {detail}")]
    ServerError { detail: String },
    #[error("the remote repository is locked: {detail}")]
    Locked { detail: String },
    #[error("git {operation} did not finish within {timeout}; it was killed with its children")]
    Timeout {
        operation: &'static str,
        timeout: String,
    },
    #[error("git {operation} was cancelled by shutdown")]
    Cancelled { operation: &'static str },
    #[error("git {operation} failed: {detail}")]
    Failed {
        operation: &'static str,
        detail: String,
    },
    #[error("cannot run git {operation}")]
    Spawn {
        operation: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl RemoteError {
    /// Returns true for failures worth retrying: network, timeout, server error, lock.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            RemoteError::AuthRefused { .. } | RemoteError::NotFound { .. }
        )
    }
}

impl Remote<'_> {
    /// Returns the remote's branches and tags.
    pub async fn list_refs(&self) -> Result<RemoteRefs, RemoteError> {
        todo!()
    }

    /// Pushes `updates` in one `git push`, returning what happened to each ref.
    pub async fn push(&self, updates: &[RefUpdate]) -> Result<PushReport, RemoteError> {
        let _ = updates;
        todo!()
    }
}
