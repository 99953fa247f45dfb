//! `pushmirror update NAME… | --all`: runs updates in this process, now, without a daemon.
//!
//! For operators debugging a mirror, and for hosts that prefer a plain hook or cron job. It
//! takes the same per-mirror lock as the daemon, so the two never update one mirror at once,
//! and records status the same way.

use std::io::Write;

use tokio_util::sync::CancellationToken;

use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::config::{Config, Mirror};
use crate::error::chain;
use crate::mirror::job::{self, JobOutcome};
use crate::store::state::{StateStore, Trigger, UpdateStatus};

/// Which mirrors to update.
pub enum Selection {
    Names(Vec<String>),
    All,
}

/// Runs the updates; returns the exit code (0 all finished, 1 one failed or was busy, 2 usage
/// or state errors).
pub async fn run(
    config: &Config,
    selection: Selection,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let mirrors: Vec<&Mirror> = match &selection {
        Selection::All => config.mirrors.iter().filter(|m| m.enabled).collect(),
        Selection::Names(names) => {
            let mut found = Vec::new();
            for name in names {
                match config.mirror(name) {
                    Some(m) => found.push(m),
                    None => {
                        let _ = writeln!(
                            err,
                            "error: no mirror named {name:?} in {}",
                            config.path.display()
                        );
                        return EXIT_USAGE;
                    }
                }
            }
            found
        }
    };
    let store = match StateStore::open(&config.daemon.state_dir) {
        Ok(store) => store,
        Err(e) => {
            let _ = writeln!(err, "error: {}", chain(&e));
            return EXIT_USAGE;
        }
    };
    let mut code = EXIT_OK;
    for mirror in mirrors {
        let started = std::time::Instant::now();
        let outcome = job::run(
            config,
            &store,
            mirror,
            Trigger::Forced,
            false,
            CancellationToken::new(),
        )
        .await;
        let elapsed = started.elapsed().as_secs_f64();
        if let Ok(JobOutcome::Ran {
            unsaved: Some(e), ..
        }) = &outcome
        {
            code = EXIT_USAGE;
            let _ = writeln!(
                err,
                "error: {}: status not recorded: {}",
                mirror.name,
                chain(e)
            );
        }
        match outcome {
            Ok(JobOutcome::Ran { state, .. }) if state.update_status == UpdateStatus::Finished => {
                let _ = writeln!(
                    out,
                    "{}: finished in {elapsed:.1}s ({})",
                    mirror.name,
                    job::describe_counts(&state.counts)
                );
            }
            Ok(JobOutcome::Ran { state, .. }) => {
                code = code.max(EXIT_FAILED);
                let error = state.last_error.unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{}: failed after {elapsed:.1}s ({})\n{}",
                    mirror.name,
                    job::describe_counts(&state.counts),
                    indent(&error)
                );
            }
            Ok(JobOutcome::Busy) => {
                code = code.max(EXIT_FAILED);
                let _ = writeln!(
                    out,
                    "{}: skipped: another process is updating this mirror",
                    mirror.name
                );
            }
            Err(e) => {
                code = EXIT_USAGE;
                let _ = writeln!(err, "error: {}: {}", mirror.name, chain(&e));
            }
        }
    }
    code
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
