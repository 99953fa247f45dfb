//! The `pushmirror` binary: parses arguments, sets up logging, calls one library function per
//! subcommand, and maps the result to an exit code.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pushmirror::cli;
use pushmirror::config::{Config, LogFormat};
use pushmirror::error::EXIT_USAGE;

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
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    init_logging(config.daemon.log_format, "warn");
    pushmirror::mirror::init_libgit2();
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
        Command::CheckConfig => unreachable!("handled above"),
        Command::Update { names, all } => {
            let selection = if all {
                cli::update::Selection::All
            } else {
                cli::update::Selection::Names(names)
            };
            runtime.block_on(cli::update::run(&config, selection, &mut out, &mut err))
        }
        Command::Status { name, json } => {
            cli::status::run(&config, name.as_deref(), json, &mut out, &mut err)
        }
    };
    ExitCode::from(code)
}

/// Logs to stderr, filtered by `RUST_LOG` (default `default_level`), as text or JSON.
fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
