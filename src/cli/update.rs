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
use crate::mirror::job::{self, JobError, JobOutcome};
use crate::store::paused::PausedStore;
use crate::store::state::{StateStore, Trigger, UpdateStatus};

/// Which mirrors to update.
pub enum Selection {
    Names(Vec<String>),
    All,
}

/// Runs the updates; returns the exit code (0 all finished, 1 one failed or was busy, 2 usage
/// or state errors). `allow_mass_change` lets each of these updates pass the mass-change
/// guard.
pub async fn run(
    config: &Config,
    selection: Selection,
    allow_mass_change: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let mirrors = match selected_mirrors(config, &selection) {
        Ok(mirrors) => mirrors,
        Err(name) => {
            let _ = writeln!(
                err,
                "error: no mirror named {name:?} in {}",
                config.path.display()
            );
            return EXIT_USAGE;
        }
    };
    let store = match StateStore::open(&config.daemon.state_dir) {
        Ok(store) => store,
        Err(e) => {
            let _ = writeln!(err, "error: {}", chain(&e));
            return EXIT_USAGE;
        }
    };
    // Operations: silent mode and pause hold this command too: nothing is pushed.
    let paused = match PausedStore::new(&config.daemon.state_dir).load() {
        Ok((paused, _)) => paused,
        Err(e) => {
            let _ = writeln!(err, "error: {}", chain(&e));
            return EXIT_USAGE;
        }
    };
    let mut code = EXIT_OK;
    for mirror in mirrors {
        if config.daemon.silent || paused.contains(mirror.name.as_str()) {
            let why = if config.daemon.silent {
                "silent mode is on ([daemon] silent = true)"
            } else {
                "it is paused; 'pushmirror resume' it first"
            };
            let _ = writeln!(out, "{}: not updated: {why}", mirror.name);
            code = code.max(EXIT_FAILED);
            continue;
        }
        code = code.max(update_one(config, &store, mirror, allow_mass_change, out, err).await);
    }
    code
}

/// Returns the mirrors `selection` names (`--all`: the enabled ones), in its order; `Err`
/// carries the first name that no mirror has.
fn selected_mirrors<'c>(
    config: &'c Config,
    selection: &'c Selection,
) -> Result<Vec<&'c Mirror>, &'c str> {
    match selection {
        Selection::All => Ok(config.mirrors.iter().filter(|m| m.enabled).collect()),
        Selection::Names(names) => names
            .iter()
            .map(|name| config.mirror(name).ok_or(name.as_str()))
            .collect(),
    }
}

/// Updates `mirror` and reports how it went; returns its exit code (see [`run`]).
async fn update_one(
    config: &Config,
    store: &StateStore,
    mirror: &Mirror,
    allow_mass_change: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let started = std::time::Instant::now();
    let outcome = job::run(
        config,
        store,
        mirror,
        Trigger::Forced,
        false,
        CancellationToken::new(),
        allow_mass_change,
    )
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut code = EXIT_OK;
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
    code.max(report_outcome(mirror, outcome, elapsed, out, err))
}

/// Writes how the update of `mirror` ended, `elapsed` seconds after it started; returns its
/// exit code: 0 finished, 1 failed or busy, 2 not attempted.
fn report_outcome(
    mirror: &Mirror,
    outcome: Result<JobOutcome, JobError>,
    elapsed: f64,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    match outcome {
        Ok(JobOutcome::Ran { state, .. }) if state.update_status == UpdateStatus::Finished => {
            let _ = writeln!(
                out,
                "{}: finished in {elapsed:.1}s ({})",
                mirror.name,
                job::describe_counts(&state.counts)
            );
            EXIT_OK
        }
        Ok(JobOutcome::Ran { state, .. }) => {
            let error = state.last_error.unwrap_or_default();
            let _ = writeln!(
                out,
                "{}: failed after {elapsed:.1}s ({})\n{}",
                mirror.name,
                job::describe_counts(&state.counts),
                indent(&error)
            );
            EXIT_FAILED
        }
        Ok(JobOutcome::Busy) => {
            let _ = writeln!(
                out,
                "{}: skipped: another process is updating this mirror",
                mirror.name
            );
            EXIT_FAILED
        }
        Err(e) => {
            let _ = writeln!(err, "error: {}: {}", mirror.name, chain(&e));
            EXIT_USAGE
        }
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
