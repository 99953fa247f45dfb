//! Pure: local refs x remote refs x policy -> the ref updates of one mirror update.
//!
//! TO BE COMPLETED.

use git2::Oid;

/// One ref change to make on the remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    /// Full name, `refs/heads/...` or `refs/tags/...`.
    pub refname: String,
    pub kind: UpdateKind,
    /// The remote's value when it was read; `None` for a create.
    pub old: Option<Oid>,
    /// The value to set; `None` for a delete.
    pub new: Option<Oid>,
}

/// How a ref update is pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    /// The remote lacks the ref: `<new>:<ref>`, no force.
    Create,
    /// The remote value is an ancestor of the new one: `<new>:<ref>`, no force; git's own
    /// fast-forward check protects against a remote that moved meanwhile.
    FastForward,
    /// Anything else (diverged branch, moved tag): `--force-with-lease=<ref>:<old>` and
    /// `<new>:<ref>`.
    Force,
    /// The ref exists only on the remote: `--force-with-lease=<ref>:<old>` and `:<ref>`.
    Delete,
}
