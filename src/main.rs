//! The `pushmirror` binary: parses arguments, sets up logging, calls one library function per
//! subcommand, and maps the result to an exit code.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pushmirror::config::{Config, LogFormat};
use pushmirror::error::{EXIT_FAILED, EXIT_USAGE, chain};
use pushmirror::protocol::SyncTarget;
use pushmirror::{cli, control, daemon};

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
    },
    /// Asks the daemon to re-read the configuration (as SIGHUP)
    Reload,
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
    },
    /// The post-receive hook: tells the daemon which refs a push changed; always exits 0
    Notify,
    /// Installs the post-receive hook into repositories, chaining an existing hook
    InstallHook {
        /// Repositories (bare, or the top of a work tree)
        #[arg(required = true, value_name = "REPO")]
        repos: Vec<PathBuf>,
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
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    if let Command::CheckConfig = args.command {
        return ExitCode::from(cli::check_config::run(&path, &mut out, &mut err));
    }
    // Neither needs a valid configuration: the hook must work while it is broken.
    if let Command::Notify = args.command {
        return ExitCode::from(pushmirror::hook::main(&path));
    }
    if let Command::InstallHook { repos } = &args.command {
        return ExitCode::from(cli::install_hook::main(repos, &path));
    }
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let default_level = if matches!(args.command, Command::Daemon) {
        "info"
    } else {
        "warn"
    };
    init_logging(config.daemon.log_format, default_level);
    pushmirror::mirror::init_libgit2();
    // The socket is bound before the runtime starts: a second daemon stops here, and the
    // umask that gives the socket its mode is set while no other thread runs.
    let listener = match &args.command {
        Command::Daemon => {
            match control::bind(&config.daemon.socket, config.daemon.socket_group.as_deref()) {
                Ok(listener) => Some(listener),
                Err(e) => {
                    let _ = writeln!(err, "error: {}", chain(&e));
                    return ExitCode::from(EXIT_USAGE);
                }
            }
        }
        _ => None,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = writeln!(err, "error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let code = match args.command {
        Command::CheckConfig | Command::Notify | Command::InstallHook { .. } => {
            unreachable!("handled above")
        }
        Command::Daemon => {
            let Some(listener) = listener else {
                unreachable!("bound above for the daemon")
            };
            match runtime.block_on(daemon::run(config, listener, shutdown_signal())) {
                Ok(()) => 0,
                Err(e) => {
                    let _ = writeln!(err, "error: {}", chain(&e));
                    EXIT_FAILED
                }
            }
        }
        Command::Sync {
            names,
            repo,
            all,
            wait,
        } => {
            let target = match (all, repo) {
                (true, _) => SyncTarget::All,
                (false, Some(repo)) => SyncTarget::Repo(repo),
                (false, None) => SyncTarget::Mirrors(names),
            };
            runtime.block_on(cli::sync::run(&config, target, wait, &mut out, &mut err))
        }
        Command::Reload => runtime.block_on(cli::reload::run(&config, &mut out, &mut err)),
        Command::Update { names, all } => {
            let selection = if all {
                cli::update::Selection::All
            } else {
                cli::update::Selection::Names(names)
            };
            runtime.block_on(cli::update::run(&config, selection, &mut out, &mut err))
        }
        Command::Status { name, json } => runtime.block_on(cli::status::run(
            &config,
            name.as_deref(),
            json,
            &mut out,
            &mut err,
        )),
    };
    ExitCode::from(code)
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without handlers the default action (exit) still applies.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
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
