//! What runs in git's hook process, and how it gets there.
//!
//! - [`notify`]: `pushmirror notify`, the post-receive hook. It exits 0 whatever happens,
//!   within about a second: it tells the daemon which refs changed, or spools the
//!   notification to disk when the daemon does not answer.
//! - [`install`]: writes the post-receive hook that runs `notify` into a repository, chaining
//!   a hook that is already there (used by `pushmirror install-hook` and by provisioning).
//!
//! Neither links the daemon's code: the hook speaks [`crate::protocol`] through
//! [`crate::client`] and writes the spool of [`crate::store::spool`].

pub mod install;
pub mod notify;
