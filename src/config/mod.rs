//! The configuration file: the only code that reads it.
//!
//! Loading is two steps, after ripgrep's `LowArgs` -> `HiArgs`: the TOML is deserialized
//! strictly into raw types (`raw.rs`, unknown keys rejected, positions kept), then validated
//! into the typed values below (`validate.rs`). Everything else in the crate only ever sees a
//! validated [`Config`].

mod duration;
mod error;
mod lenient;
mod pattern;
mod raw;
pub mod template;
mod validate;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use duration::parse_duration;
pub use error::{ConfigError, Diagnostic, MirrorProblem};
pub use lenient::{DaemonPaths, DaemonPathsError, daemon_paths, this_user, unreadable_fix};
pub use pattern::BranchPattern;
pub use template::{NewMirrors, TemplateOrigin, Templates};

use crate::mirror::url::RemoteUrl;

/// Where the configuration file is looked for when neither `--config` nor
/// `$PUSHMIRROR_CONFIG` names one.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/pushmirror/pushmirror.toml";

/// `[daemon] state_dir` when the file does not set it (the hook reads the same default).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/pushmirror";

/// Returns the control socket's path when `[daemon] socket` is not set.
pub fn default_socket(state_dir: &Path) -> PathBuf {
    state_dir.join("control.sock")
}

/// A whole, validated configuration file.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this was read from (absolute).
    pub path: PathBuf,
    pub daemon: DaemonConfig,
    /// In file order; names are unique.
    pub mirrors: Vec<Mirror>,
    /// Things that are allowed but worth changing (e.g. credentials embedded in a URL), in
    /// file order; `check-config` prints them. Each prints as
    /// `<path>:<line>:<column>: <message>`.
    pub warnings: Vec<Diagnostic>,
    /// Problems that make one mirror unable to update but must not stop the daemon serving
    /// the others (SPEC.md section 4): a missing or unreadable repository, an unsupported URL
    /// scheme, a password file that is missing or readable by group or others. In file
    /// order; each names its mirror and prints as `<path>:<line>:<column>: <message>`, the
    /// message naming the mirror too. `Config::load` succeeds with them; `check-config`
    /// reports them as errors.
    pub mirror_problems: Vec<MirrorProblem>,
    /// Fleet: the `[[mirror_template]]`s, kept so that a repository created after the load
    /// can be given its mirrors without a reload ([`Config::expand_new_repository`]).
    pub templates: Templates,
    // Operations: alerts.
    /// `[alerts]`: where the events of a mirror entering `failed` and recovering go; `None`
    /// when the table is absent.
    pub alerts: Option<AlertsConfig>,
}

/// The `[alerts]` table (SPEC.md sections 3 and 11). At least one of `webhook_url` and
/// `command` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertsConfig {
    /// Events are POSTed here as JSON.
    pub webhook_url: Option<String>,
    /// The bearer token's file (absolute), read at each delivery, under the rules of
    /// `password_file` (mode 0600).
    pub webhook_token_file: Option<PathBuf>,
    /// A program (absolute when written with a `/`, else looked up in `PATH`) and its
    /// arguments, run with each event on stdin; empty when not set.
    pub command: Vec<String>,
}

/// The `[daemon]` table.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Status, durable queue and spool live here. Default `/var/lib/pushmirror`.
    pub state_dir: PathBuf,
    /// The control socket. Default `<state_dir>/control.sock`.
    pub socket: PathBuf,
    /// Group allowed to use the socket (mode 0660); none means the daemon's own group.
    pub socket_group: Option<String>,
    /// Concurrent updates across all mirrors. Default 4, 1 to 1024.
    pub max_parallel_pushes: usize,
    /// `log_format = "text" | "json"`; default text.
    pub log_format: LogFormat,
    /// `git_config = "isolated" | "inherit"`: whether git children may read the user's and the
    /// system's git configuration. Default isolated.
    pub git_config: GitConfigPolicy,
    // Operations: silent mode.
    /// `silent = true`: GitLab's Silent Mode for the whole daemon. Notifications and forced
    /// syncs are recorded; no update runs (no git process talks to a remote) until it is
    /// turned off, by a reload or a restart. Default false.
    pub silent: bool,
    // Metrics (issue 10).
    /// `metrics_listen`: where the daemon serves `GET /metrics` and `GET /healthz` over HTTP;
    /// none (the default) serves nothing. An IP address and port, so that what is bound
    /// never depends on name resolution.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitConfigPolicy {
    /// `GIT_CONFIG_NOSYSTEM=1`, `GIT_CONFIG_GLOBAL=/dev/null`: nothing leaks in.
    Isolated,
    /// The operator opted in to the user's and system's git configuration.
    Inherit,
}

/// A mirror's name: `[A-Za-z0-9._-]+`, unique in the file. Also used as a file name under
/// `state_dir`, which is why the alphabet is so narrow.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MirrorName(String);

impl MirrorName {
    /// Returns the name if it is non-empty, at most 128 characters, and only `[A-Za-z0-9._-]`,
    /// and is not `.` or `..`.
    pub fn new(name: &str) -> Option<MirrorName> {
        let ok = !name.is_empty()
            && name.len() <= 128
            && name != "."
            && name != ".."
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
        ok.then(|| MirrorName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Lets maps keyed by name be looked up with the `&str` a request carries.
impl std::borrow::Borrow<str> for MirrorName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for MirrorName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which branches a mirror carries. Tags always pass whatever the filter.
#[derive(Debug, Clone)]
pub enum BranchFilter {
    /// Every branch (neither `only_protected_branches` nor `mirror_branch_regex`).
    All,
    /// `only_protected_branches = true` with an explicit `protected_branches` list.
    /// An empty list means no branches at all.
    Protected(Vec<BranchPattern>),
    /// `only_protected_branches = true` without `protected_branches`: the repository's default
    /// branch, resolved at each update.
    DefaultBranch,
    /// `mirror_branch_regex`, matched against the branch name without `refs/heads/`.
    Regex(regex::Regex),
}

/// What happens to refs that exist only on the remote (`prune`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prune {
    /// GitLab's rule: delete only if the remote commit is reachable from the local default branch.
    Merged,
    /// Delete every remote-only ref that passes the filter.
    All,
    /// Delete nothing.
    None,
}

/// Where a mirror's password or token comes from. The secret itself is read at update time,
/// so a rotated token file is picked up without a reload.
#[derive(Debug, Clone)]
pub enum PasswordSource {
    None,
    /// `password_file`, absolute after resolution against the config file's directory.
    File(PathBuf),
    /// `password_env`: the name of an environment variable of the daemon.
    Env(String),
    /// Embedded in the URL (`https://user:token@host/...`); the secret lives in the
    /// [`RemoteUrl`].
    Url,
}

/// One validated `[[mirror]]`, with `[defaults]` applied.
#[derive(Debug, Clone)]
pub struct Mirror {
    pub name: MirrorName,
    /// The local bare repository (absolute).
    pub repo: PathBuf,
    /// The remote, credentials split off. An unsupported scheme is kept here and reported by
    /// the update, so that one bad mirror does not stop the others.
    pub url: RemoteUrl,
    /// `create = true`: the daemon creates the local repository (with the hook installed)
    /// and, for a local remote, the remote, when they are absent. Used by the shipped
    /// demonstration; handy for provisioning.
    pub create: bool,
    pub enabled: bool,
    pub branches: BranchFilter,
    pub keep_divergent_refs: bool,
    pub prune: Prune,
    /// HTTP(S) user name: `username`, else the one embedded in the URL.
    pub username: Option<String>,
    pub password: PasswordSource,
    /// The window for mirrors of all branches (`delay`, default 5m, at most 7d).
    pub delay: Duration,
    /// The window for `only_protected_branches` mirrors (`protected_delay`, default 1m, at
    /// most 7d).
    pub protected_delay: Duration,
    /// Retries of a transient failure before `failed` (default 3, at most 100).
    pub retries: u32,
    /// Longest an update may run (1s to 7d); `None` means 1h, or 3h for a first sync.
    pub timeout: Option<Duration>,
    /// Most refs in one `git push` (default 100000, 1 to 1,000,000); more are split into
    /// several pushes.
    pub refs_per_push: usize,
    /// Most bytes of objects one `git push` sends (`max_push_size`, default 2 GiB, GitHub's
    /// limit; 0 = none); a larger push is split along history (see `mirror::split`).
    pub max_push_size: u64,
    // The mass-change guard (`mirror::guard`).
    /// Most refs one update may delete (`max_deletes`, default 100; 0 = no limit); an update
    /// that would delete more is refused unless `sync --allow-mass-change` lets it through.
    pub max_deletes: usize,
    /// Most refs one update may force (`max_forced`, default 100; 0 = no limit).
    pub max_forced: usize,
    /// The key and pinned host keys used when the URL is `ssh://` or scp-like.
    pub ssh: SshSettings,
    /// Fleet: the `[[mirror_template]]` that produced this mirror; `None` when written out.
    pub template: Option<TemplateOrigin>,
    /// Git LFS: whether, where to and from where LFS objects are uploaded.
    pub lfs: LfsSettings,
}

// Git LFS (SPEC sections 3 and 9).

/// `lfs`: whether updates upload LFS objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LfsMode {
    /// When the LFS object store (`lfs_objects`) exists.
    Auto,
    /// Always; a missing store is an error of the update.
    On,
    Off,
}

/// A mirror's LFS settings, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LfsSettings {
    pub mode: LfsMode,
    /// `lfs_url`, else the default derived from the remote URL; `None` when there is none
    /// (a local remote without `lfs_url`: an error only if LFS runs).
    pub url: Option<String>,
    /// `lfs_objects` (absolute), default `<repo>/lfs/objects`.
    pub objects: PathBuf,
}

/// How a mirror authenticates to an SSH remote and which host keys it trusts (SPEC.md
/// sections 3 and 8). Filled in for every mirror, so that `pushmirror ssh-keygen NAME` knows
/// where the key goes before the URL is switched to SSH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshSettings {
    /// `ssh_key`: the private key, absolute; default `<state_dir>/keys/<name>`. Only its
    /// path is kept: ssh reads the file itself, at each connection.
    pub key: PathBuf,
    /// `ssh_known_hosts`: the pinned host keys, one known_hosts line each, as written.
    pub known_hosts: Vec<String>,
    /// The file the engine writes `known_hosts` into for ssh to read:
    /// `<state_dir>/ssh/<name>.known_hosts`.
    pub known_hosts_file: PathBuf,
}

impl SshSettings {
    /// Returns the settings of mirror `name` when nothing SSH is written in the file.
    pub fn defaults_for(name: &MirrorName, state_dir: &Path) -> SshSettings {
        SshSettings {
            key: default_ssh_key(state_dir, name),
            known_hosts: Vec::new(),
            known_hosts_file: state_dir
                .join("ssh")
                .join(format!("{}.known_hosts", name.as_str())),
        }
    }
}

/// Returns where mirror `name`'s SSH key is when `ssh_key` is not set.
pub fn default_ssh_key(state_dir: &Path, name: &MirrorName) -> PathBuf {
    state_dir.join("keys").join(name.as_str())
}

impl Mirror {
    /// Returns the masked URL of the mirror, as status, logs and errors show it.
    pub fn display_url(&self) -> String {
        let with_credentials = self.username.is_some()
            || !matches!(self.password, PasswordSource::None)
            || self.url.has_embedded_credentials();
        self.url.display(with_credentials)
    }

    /// Returns the update window W of SPEC section 4.
    pub fn window(&self) -> Duration {
        match self.branches {
            BranchFilter::Protected(_) | BranchFilter::DefaultBranch => self.protected_delay,
            BranchFilter::All | BranchFilter::Regex(_) => self.delay,
        }
    }

    /// Returns the timeout of an update, given whether the mirror ever finished one.
    pub fn timeout_for(&self, first_sync: bool) -> Duration {
        const INCREMENTAL: Duration = Duration::from_secs(3600);
        const FIRST: Duration = Duration::from_secs(3 * 3600);
        match self.timeout {
            Some(t) => t,
            None if first_sync => FIRST,
            None => INCREMENTAL,
        }
    }
}

impl Config {
    /// Returns the path given by `--config`, else `$PUSHMIRROR_CONFIG`, else the default.
    pub fn locate(cli: Option<&Path>) -> PathBuf {
        if let Some(path) = cli {
            return path.to_owned();
        }
        match std::env::var_os("PUSHMIRROR_CONFIG") {
            Some(path) if !path.is_empty() => PathBuf::from(path),
            _ => PathBuf::from(DEFAULT_CONFIG_PATH),
        }
    }

    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        validate::load(path)
    }

    /// Returns the mirror called `name`.
    pub fn mirror(&self, name: &str) -> Option<&Mirror> {
        self.mirrors.iter().find(|m| m.name.as_str() == name)
    }

    /// Returns the mirrors that the templates make for `repo` (canonical), a repository that
    /// no mirror names, validated as a load would validate them, against the text this
    /// configuration was loaded from and the names it already has. `Ok` with no mirror when
    /// no template takes it; `Err` with the diagnostics when an expansion has errors.
    pub fn expand_new_repository(&self, repo: &Path) -> Result<NewMirrors, Vec<Diagnostic>> {
        validate::expand_new_repository(self, repo)
    }
}
