//! pushmirror: GitLab-style push mirroring for any git server that keeps bare repositories.
//!
//! # Layout
//!
//! One binary runs as three kinds of process; the modules are grouped by the process that
//! runs them, around what they share.
//!
//! **The daemon** (`pushmirror daemon`), long-running:
//! - [`daemon`]: run and shutdown, one module per request or event handler, start-up resume,
//!   the scheduler (pure) and its driver, the control socket (bind, serve, peer checks),
//!   provisioning of the demonstration repositories, silent mode and pause, the alerts
//!   task that announces failure streaks, and Prometheus metrics over HTTP.
//!
//! **git's hook process** (`pushmirror notify`, run by `post-receive`), short and never failing:
//! - [`hook`]: the notification, with its spool fallback, and the installation of the hook.
//!
//! **The admin commands** (`status`, `sync`, `reload`, `pause`, `resume`, `plan`, `verify`,
//! `update`, `check-config`, `install-hook`):
//! - [`cli`]: one file per subcommand and the table of exit codes;
//! - [`client`]: speaks [`protocol`] to a running daemon (the hook uses it too).
//!
//! **Shared** by all of them:
//! - [`config`]: the only reader of the configuration file; raw TOML -> validated `Config`;
//! - [`protocol`]: the only types that cross the control socket, and their framing;
//! - [`store`]: every on-disk format (state files, queue journal, spool, paused mirrors, alert
//!   streaks), written atomically;
//! - [`mirror`]: one update of one mirror (what the daemon and `pushmirror update` run):
//!   refdiff (pure), local reads (libgit2), credentials (HTTP passwords, SSH keys and pinned
//!   host keys), URLs, the scratch repository pushes run from, pushes split under
//!   `max_push_size`, the mass-change guard (pure), the dry run of `plan` and `verify`,
//!   and `remote`, the only code that talks to remotes;
//! - [`clock`]: deadlines and due times computed without overflow;
//! - [`paths`] and [`error`]: path and error-rendering helpers.

pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod error;
pub mod hook;
pub mod mirror;
pub mod paths;
pub mod protocol;
pub mod store;
