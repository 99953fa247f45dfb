//! The `pushmirror` binary: parses arguments, sets up logging, calls one library function per
//! subcommand, and maps the result to an exit code.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use pushmirror::config::{Config, LogFormat};
use pushmirror::protocol::SyncTarget;
use pushmirror::{cli, daemon, hook};

/// GitLab-style push mirroring for any git server that keeps bare repositories.
#[derive(Debug, Parser)]
#[command(name = "pushmirror", version, about)]
struct Args {
    /// The configuration file [default: $PUSHMIRROR_CONFIG, else /etc/pushmirror/pushmirror.toml]
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the daemon in the foreground (logs to stderr)
    Daemon,
    /// Forces updates now, bypassing the window, through the daemon
    Sync {
        /// Mirrors to update
        #[arg(required_unless_present_any = ["all", "repo"], conflicts_with_all = ["all", "repo"])]
        names: Vec<String>,
        /// Every enabled mirror of this repository
        #[arg(long, value_name = "PATH", conflicts_with = "all")]
        repo: Option<PathBuf>,
        /// Every enabled mirror
        #[arg(long)]
        all: bool,
        /// Waits until the updates end; exits 1 if one failed
        #[arg(long)]
        wait: bool,
        /// Lets the next update of each named mirror pass the mass-change guard
        /// (`max_deletes`, `max_forced`)
        #[arg(long, conflicts_with_all = ["all", "repo"])]
        allow_mass_change: bool,
    },
    /// Asks the daemon to re-read the configuration (as SIGHUP)
    Reload,
    /// Pauses mirrors: pushes are recorded, nothing is pushed until `resume` (kept across restarts)
    Pause {
        /// Mirrors to pause
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        names: Vec<String>,
        /// Every mirror
        #[arg(long)]
        all: bool,
    },
    /// Resumes paused mirrors; what became pending runs at once
    Resume {
        /// Mirrors to resume
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        names: Vec<String>,
        /// Every paused mirror
        #[arg(long)]
        all: bool,
    },
    /// Validates the configuration; prints file, line and column of each error
    CheckConfig,
    /// Updates mirrors now, in this process, without the daemon; exits 1 if one failed
    Update {
        /// Mirrors to update
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        names: Vec<String>,
        /// Every enabled mirror
        #[arg(long)]
        all: bool,
        /// Lets these updates pass the mass-change guard (`max_deletes`, `max_forced`)
        #[arg(long, conflicts_with = "all")]
        allow_mass_change: bool,
    },
    /// The post-receive hook: tells the daemon which refs a push changed; always exits 0
    Notify,
    /// Installs the post-receive hook into repositories, chaining an existing hook
    InstallHook {
        /// Repositories (bare, or the top of a work tree)
        #[arg(
            required_unless_present = "all",
            conflicts_with = "all",
            value_name = "REPO"
        )]
        repos: Vec<PathBuf>,
        /// Every repository that a mirror or a mirror template of the configuration names
        #[arg(long)]
        all: bool,
    },
    /// Makes mirror NAME's ed25519 key pair at its `ssh_key` path; prints the public key
    SshKeygen {
        /// The mirror
        name: String,
        /// Replaces an existing key
        #[arg(long)]
        force: bool,
    },
    /// Prints the SSH host keys of URL, with their fingerprints, for `ssh_known_hosts`
    DetectHostKeys {
        /// An ssh:// or scp-like URL
        url: String,
    },
    /// Prints shell completions (bash, zsh, fish) to standard output
    Completions {
        /// The shell
        #[arg(required_unless_present = "assets")]
        shell: Option<cli::completions::Shell>,
        /// Writes the man page and every packaged completion into DIR instead (packaging)
        #[arg(long, value_name = "DIR", hide = true, conflicts_with = "shell")]
        assets: Option<PathBuf>,
    },
    /// Shows what the next update of NAME would do, ref by ref; pushes nothing
    Plan {
        /// The mirror
        name: String,
        /// The stable machine form
        #[arg(long)]
        json: bool,
    },
    /// Lists the refs where remotes differ from what the mirrors should hold; exits 1 if any
    Verify {
        /// Mirrors to verify
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        names: Vec<String>,
        /// Every enabled mirror
        #[arg(long)]
        all: bool,
        /// The stable machine form
        #[arg(long)]
        json: bool,
        /// Prints only the mirrors that differ or cannot be read (for cron)
        #[arg(long, short)]
        quiet: bool,
    },
    /// Shows each mirror's status
    Status {
        /// Only this mirror
        name: Option<String>,
        /// The stable machine form
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let path = Config::locate(args.config.as_deref());
    ExitCode::from(run(args.command, &path))
}

/// Runs one subcommand; returns its exit code.
fn run(command: Command, path: &Path) -> u8 {
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    match command {
        // These three need no valid configuration: the hook must work while it is broken.
        Command::CheckConfig => cli::check_config::run(path, &mut out, &mut err),
        Command::Notify => hook::notify::main(path),
        Command::InstallHook { repos, all: false } => cli::install_hook::main(&repos, path),
        // Fleet: the repositories come from a valid configuration, templates expanded.
        Command::InstallHook { all: true, .. } => with_config(path, "warn", |config| {
            cli::install_hook::main(&cli::install_hook::configured_repos(&config), path)
        }),
        // Needs no configuration: generated from the argument definitions.
        Command::Completions { shell, assets } => match (shell, assets) {
            (_, Some(dir)) => cli::completions::write_assets(Args::command(), &dir, &mut err),
            (Some(shell), None) => cli::completions::run(Args::command(), shell, &mut out),
            (None, None) => cli::EXIT_USAGE, // clap requires one of them
        },
        // Needs no configuration: it only asks the host of a URL.
        Command::DetectHostKeys { url } => cli::detect_host_keys::run(&url, &mut out, &mut err),
        Command::SshKeygen { name, force } => with_config(path, "warn", |config| {
            cli::ssh_keygen::run(&config, &name, force, &mut out, &mut err)
        }),
        Command::Daemon => with_config(path, "info", |config| match daemon::main(config) {
            Ok(()) => cli::EXIT_OK,
            Err(e) => {
                eprintln!("error: {}", pushmirror::error::chain(&e));
                match e {
                    // As a configuration error: the socket is taken or cannot be made.
                    daemon::DaemonError::Bind(_) => cli::EXIT_USAGE,
                    // The same for the metrics port (`metrics_listen`).
                    daemon::DaemonError::Metrics(_) => cli::EXIT_USAGE,
                    _ => cli::EXIT_FAILED,
                }
            }
        }),
        Command::Sync {
            names,
            repo,
            all,
            wait,
            allow_mass_change,
        } => {
            let target = match (all, repo) {
                (true, _) => SyncTarget::All,
                (false, Some(repo)) => SyncTarget::Repo(repo),
                (false, None) => SyncTarget::Mirrors(names),
            };
            with_daemon(path, |contact| {
                cli::block_on(cli::sync::run(
                    &contact,
                    target,
                    wait,
                    allow_mass_change,
                    &mut out,
                    &mut err,
                ))
            })
        }
        Command::Plan { name, json } => with_daemon(path, |contact| {
            cli::block_on(cli::plan::run(&contact, &name, json, &mut out, &mut err))
        }),
        Command::Verify {
            names,
            all,
            json,
            quiet,
        } => {
            let target = if all {
                SyncTarget::All
            } else {
                SyncTarget::Mirrors(names)
            };
            with_daemon(path, |contact| {
                cli::block_on(cli::verify::run(
                    &contact, target, json, quiet, &mut out, &mut err,
                ))
            })
        }
        Command::Pause { names, all } => {
            pause_or_resume(path, cli::pause::Action::Pause, names, all)
        }
        Command::Resume { names, all } => {
            pause_or_resume(path, cli::pause::Action::Resume, names, all)
        }
        Command::Reload => with_daemon(path, |contact| {
            cli::block_on(cli::reload::run(&contact, &mut out, &mut err))
        }),
        Command::Update {
            names,
            all,
            allow_mass_change,
        } => {
            let selection = if all {
                cli::update::Selection::All
            } else {
                cli::update::Selection::Names(names)
            };
            with_config(path, "warn", |config| {
                cli::block_on(cli::update::run(
                    &config,
                    selection,
                    allow_mass_change,
                    &mut out,
                    &mut err,
                ))
            })
        }
        Command::Status { name, json } => with_daemon(path, |contact| {
            cli::block_on(cli::status::run(
                &contact,
                name.as_deref(),
                json,
                &mut out,
                &mut err,
            ))
        }),
    }
}

/// Runs `pause` or `resume` through the daemon configured at `path`.
fn pause_or_resume(path: &Path, action: cli::pause::Action, names: Vec<String>, all: bool) -> u8 {
    let target = if all {
        SyncTarget::All
    } else {
        SyncTarget::Mirrors(names)
    };
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    with_daemon(path, |contact| {
        cli::block_on(cli::pause::run(
            &contact, action, target, &mut out, &mut err,
        ))
    })
}

/// Loads the configuration at `path`, starts logging (at `default_level` unless `RUST_LOG`
/// says otherwise) and runs `command` with it; exit code 2 if the file is invalid.
fn with_config(path: &Path, default_level: &str, command: impl FnOnce(Config) -> u8) -> u8 {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return cli::EXIT_USAGE;
        }
    };
    init_logging(config.daemon.log_format, default_level);
    pushmirror::mirror::init_libgit2();
    command(config)
}

/// Finds the daemon configured at `path` and runs `command`, which only talks to it; a file
/// with errors is reported and does not stop it (SPEC.md section 2). Exit code 2 if not even
/// the `[daemon]` table can be read.
fn with_daemon(path: &Path, command: impl FnOnce(cli::contact::Contact) -> u8) -> u8 {
    let contact = match cli::contact::find(path, &mut std::io::stderr()) {
        Ok(contact) => contact,
        Err(code) => return code,
    };
    let format = contact
        .config
        .as_ref()
        .map_or(LogFormat::Text, |c| c.daemon.log_format);
    init_logging(format, "warn");
    command(contact)
}

/// Logs to stderr, filtered by `RUST_LOG` (default `default_level`), as text or JSON.
fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colours only for a person at a terminal, not for journald or a log file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
