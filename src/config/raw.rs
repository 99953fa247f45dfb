//! The configuration file exactly as written: serde types, nothing checked beyond TOML types.
//!
//! Every table denies unknown keys, and nothing is flattened, because `#[serde(flatten)]`
//! silently disables `deny_unknown_fields`. Values that `validate.rs` checks further are kept
//! as [`Spanned`] so that each of its errors can point at the value's line and column; every
//! key is optional here, even the required ones, so that a missing key is reported by
//! validation together with every other problem of the file instead of stopping
//! deserialization. Defaults are applied in `validate.rs`, not here, so that a value from
//! `[defaults]` can be told apart from one written in the mirror.

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawConfig {
    pub daemon: Option<RawDaemon>,
    pub defaults: Option<RawOptions>,
    /// The `[[mirror]]` tables; each span is the table's header.
    #[serde(default)]
    pub mirror: Vec<Spanned<RawMirror>>,
    /// Fleet: `[[mirror_template]]` is taken out of the tree and validated from its TOML
    /// values (`validate/templates.rs`); named here so that the unknown-key message lists it.
    #[allow(dead_code)]
    pub mirror_template: Option<serde::de::IgnoredAny>,
    // Operations: alerts.
    /// The `[alerts]` table; no alerts when absent.
    pub alerts: Option<Spanned<RawAlerts>>,
}

/// The `[alerts]` table (operations: alerts).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawAlerts {
    /// An `http://` or `https://` URL the events are POSTed to.
    pub webhook_url: Option<Spanned<String>>,
    /// A file holding the bearer token; relative to the file's directory; mode 0600.
    pub webhook_token_file: Option<Spanned<String>>,
    /// A program and its arguments, run with each event on stdin.
    pub command: Option<Spanned<Vec<Spanned<String>>>>,
}

/// The `[daemon]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawDaemon {
    /// Default `/var/lib/pushmirror`; relative to the file's directory.
    pub state_dir: Option<Spanned<String>>,
    /// Default `<state_dir>/control.sock`; relative to the file's directory.
    pub socket: Option<Spanned<String>>,
    /// Default: the daemon's own group.
    pub socket_group: Option<Spanned<String>>,
    /// Default 4; 1 to 1024.
    pub max_parallel_pushes: Option<Spanned<usize>>,
    /// Default `"text"`.
    pub log_format: Option<RawLogFormat>,
    /// Default `"isolated"`.
    pub git_config: Option<RawGitConfig>,
    // Operations: silent mode.
    /// Default false: silent mode records everything and pushes nothing.
    pub silent: Option<bool>,
    // Metrics (issue 10).
    /// `"address:port"` of the Prometheus listener; off when absent.
    pub metrics_listen: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawLogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawGitConfig {
    Isolated,
    Inherit,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawPrune {
    Merged,
    All,
    None,
}

/// `lfs = "auto" | "on" | "off"`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum RawLfsMode {
    Auto,
    On,
    Off,
}

/// The per-mirror options, as the `[defaults]` table holds them. Every field is also a field of
/// [`RawMirror`], where it overrides the default; [`RawMirror::split`] turns a mirror into its
/// identity and one of these so that both go through the same validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawOptions {
    /// Default true.
    pub enabled: Option<Spanned<bool>>,
    /// Default false.
    pub only_protected_branches: Option<Spanned<bool>>,
    /// GitLab patterns; default: the repository's default branch.
    pub protected_branches: Option<Spanned<Vec<Spanned<String>>>>,
    /// Not together with `only_protected_branches = true`.
    pub mirror_branch_regex: Option<Spanned<String>>,
    /// Default false.
    pub keep_divergent_refs: Option<Spanned<bool>>,
    /// Default `"merged"`.
    pub prune: Option<Spanned<RawPrune>>,
    /// Default: the user embedded in the URL.
    pub username: Option<Spanned<String>>,
    /// Relative to the file's directory; not together with `password_env`.
    pub password_file: Option<Spanned<String>>,
    pub password_env: Option<Spanned<String>>,
    /// A duration; default `"5m"`; 0s to 7d.
    pub delay: Option<Spanned<String>>,
    /// A duration; default `"1m"`; 0s to 7d.
    pub protected_delay: Option<Spanned<String>>,
    /// Default 3; 0 to 100.
    pub retries: Option<Spanned<u32>>,
    /// A duration; default none (1h, or 3h for a first sync); 1s to 7d.
    pub timeout: Option<Spanned<String>>,
    /// Default 10000; 1 to 1,000,000.
    pub refs_per_push: Option<Spanned<usize>>,
    /// The private key for SSH remotes; relative to the file's directory; default
    /// `<state_dir>/keys/<name>`.
    pub ssh_key: Option<Spanned<String>>,
    /// The pinned host keys of an SSH remote, as known_hosts lines; required for SSH.
    pub ssh_known_hosts: Option<Spanned<Vec<Spanned<String>>>>,
    /// Bytes; default 2 GiB (GitHub's limit); 0 = no limit; at most 1 TiB.
    pub max_push_size: Option<Spanned<u64>>,
    // The mass-change guard (`mirror::guard`).
    /// Most refs one update may delete; default 100; 0 = no limit.
    pub max_deletes: Option<Spanned<usize>>,
    /// Most refs one update may force; default 100; 0 = no limit.
    pub max_forced: Option<Spanned<usize>>,
    // Git LFS (SPEC sections 3 and 9); checked in `validate/lfs.rs`.
    /// `"auto"` (default), `"on"`, `"off"`.
    pub lfs: Option<Spanned<RawLfsMode>>,
    /// http(s); default: the https form of `url` + `.git/info/lfs`.
    pub lfs_url: Option<Spanned<String>>,
    /// Relative to the file's directory; default `<repo>/lfs/objects`.
    pub lfs_objects: Option<Spanned<String>>,
}

/// One `[[mirror]]` table exactly as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub(super) struct RawMirror {
    /// Required; `[A-Za-z0-9._-]+`, unique.
    pub name: Option<Spanned<String>>,
    /// Required; relative to the file's directory.
    pub repo: Option<Spanned<String>>,
    /// Required.
    pub url: Option<Spanned<String>>,
    /// Create the local repository (with the hook) and a local remote when absent.
    pub create: Option<Spanned<bool>>,
    pub enabled: Option<Spanned<bool>>,
    pub only_protected_branches: Option<Spanned<bool>>,
    pub protected_branches: Option<Spanned<Vec<Spanned<String>>>>,
    pub mirror_branch_regex: Option<Spanned<String>>,
    pub keep_divergent_refs: Option<Spanned<bool>>,
    pub prune: Option<Spanned<RawPrune>>,
    pub username: Option<Spanned<String>>,
    pub password_file: Option<Spanned<String>>,
    pub password_env: Option<Spanned<String>>,
    pub delay: Option<Spanned<String>>,
    pub protected_delay: Option<Spanned<String>>,
    pub retries: Option<Spanned<u32>>,
    pub timeout: Option<Spanned<String>>,
    pub refs_per_push: Option<Spanned<usize>>,
    pub ssh_key: Option<Spanned<String>>,
    pub ssh_known_hosts: Option<Spanned<Vec<Spanned<String>>>>,
    pub max_push_size: Option<Spanned<u64>>,
    // The mass-change guard.
    pub max_deletes: Option<Spanned<usize>>,
    pub max_forced: Option<Spanned<usize>>,
    // Git LFS
    pub lfs: Option<Spanned<RawLfsMode>>,
    pub lfs_url: Option<Spanned<String>>,
    pub lfs_objects: Option<Spanned<String>>,
}

/// What identifies a mirror: the keys that `[defaults]` cannot hold.
#[derive(Debug)]
pub(super) struct RawIdentity {
    pub name: Option<Spanned<String>>,
    pub repo: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    pub create: Option<Spanned<bool>>,
}

impl RawMirror {
    /// Returns the mirror's identity and its own options (without `[defaults]` applied).
    pub fn split(self) -> (RawIdentity, RawOptions) {
        let identity = RawIdentity {
            name: self.name,
            repo: self.repo,
            url: self.url,
            create: self.create,
        };
        let options = RawOptions {
            enabled: self.enabled,
            only_protected_branches: self.only_protected_branches,
            protected_branches: self.protected_branches,
            mirror_branch_regex: self.mirror_branch_regex,
            keep_divergent_refs: self.keep_divergent_refs,
            prune: self.prune,
            username: self.username,
            password_file: self.password_file,
            password_env: self.password_env,
            delay: self.delay,
            protected_delay: self.protected_delay,
            retries: self.retries,
            timeout: self.timeout,
            refs_per_push: self.refs_per_push,
            ssh_key: self.ssh_key,
            ssh_known_hosts: self.ssh_known_hosts,
            max_push_size: self.max_push_size,
            // The mass-change guard.
            max_deletes: self.max_deletes,
            max_forced: self.max_forced,
            lfs: self.lfs,
            lfs_url: self.lfs_url,
            lfs_objects: self.lfs_objects,
        };
        (identity, options)
    }
}
