//! `pushmirror status [NAME] [--json]`: the status of SPEC section 6.
//!
//! Asked of the daemon, which adds what only it knows (`scheduled`, `next_update_at`); when
//! no daemon runs, read from the state files, with a note on stderr. Without `--json`, all
//! mirrors print as a table and `status NAME` as the details of one (`table.rs`).

mod table;

pub use table::{ago, until};

use std::io::Write;
use std::time::SystemTime;

use serde::Serialize;

use super::contact::{self, Contact};
use super::{EXIT_OK, EXIT_USAGE};
use crate::client::{ClientError, call};
use crate::config::{Config, Mirror};
use crate::error::chain;
use crate::protocol::{MirrorStatus, Request, Response};
use crate::store::paused::PausedStore;
use crate::store::state::{MirrorState, StateStore};

#[derive(Debug, Serialize)]
struct StatusDocument {
    mirrors: Vec<MirrorStatus>,
}

/// Prints the status; returns the exit code.
pub async fn run(
    contact: &Contact,
    name: Option<&str>,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let entries = match from_daemon(&contact.socket, name).await {
        Ok(Some(entries)) => entries,
        Ok(None) => {
            let Some(config) = &contact.config else {
                let _ = writeln!(
                    err,
                    "error: the daemon is not running, and the recorded status cannot be listed until {} is fixed",
                    contact.path.display()
                );
                return EXIT_USAGE;
            };
            let _ = writeln!(
                err,
                "pushmirror: the daemon is not running; showing the last recorded status"
            );
            match from_files(config, name, err) {
                Ok(entries) => entries,
                Err(code) => return code,
            }
        }
        Err(message) => {
            let _ = writeln!(err, "error: {message}");
            if let Some(name) = name {
                contact::hint_reload(contact, &[name.to_owned()], err);
            }
            return EXIT_USAGE;
        }
    };
    if json {
        let doc = StatusDocument { mirrors: entries };
        let text = serde_json::to_string_pretty(&doc).expect("status always serializes");
        let _ = writeln!(out, "{text}");
    } else if name.is_some() {
        for entry in &entries {
            let _ = out.write_all(table::details(entry, SystemTime::now()).as_bytes());
        }
    } else {
        let width = table::terminal_width();
        let _ = out.write_all(table::table(&entries, SystemTime::now(), width).as_bytes());
    }
    EXIT_OK
}

/// Returns the daemon's answer, `None` when no daemon runs, or the error to print.
async fn from_daemon(
    socket: &std::path::Path,
    name: Option<&str>,
) -> Result<Option<Vec<MirrorStatus>>, String> {
    let request = Request::Status {
        name: name.map(str::to_owned),
    };
    match call(socket, &request, std::time::Duration::from_secs(10)).await {
        Ok(Response::Status { mirrors }) => Ok(Some(mirrors)),
        Err(ClientError::NotRunning { .. }) => Ok(None),
        Ok(Response::Error { message, .. }) => Err(message),
        Ok(other) => Err(format!("unexpected answer from the daemon: {other:?}")),
        Err(e) => Err(chain(&e)),
    }
}

/// Returns the status recorded in the state files, or the exit code of an error.
fn from_files(
    config: &Config,
    name: Option<&str>,
    err: &mut dyn Write,
) -> Result<Vec<MirrorStatus>, u8> {
    let mirrors: Vec<&Mirror> = match name {
        Some(name) => match config.mirror(name) {
            Some(m) => vec![m],
            None => {
                let _ = writeln!(
                    err,
                    "error: no mirror named {name:?} in {}",
                    config.path.display()
                );
                return Err(EXIT_USAGE);
            }
        },
        None => config.mirrors.iter().collect(),
    };
    let store = match StateStore::open(&config.daemon.state_dir) {
        Ok(store) => store,
        Err(e) => {
            let _ = writeln!(err, "error: {}", chain(&e));
            return Err(EXIT_USAGE);
        }
    };
    // Operations: silent mode and pause, as the daemon would say at its next start.
    let paused = PausedStore::new(&config.daemon.state_dir)
        .load()
        .map(|(paused, _)| paused)
        .unwrap_or_default();
    let mut entries = Vec::new();
    let mut hooks = crate::hook::install::HookCache::default();
    for mirror in mirrors {
        let state = match store.load(&mirror.name) {
            Ok((state, _)) => state,
            Err(e) => {
                let _ = writeln!(err, "warning: {}: {}", mirror.name, chain(&e));
                MirrorState::default()
            }
        };
        let mut entry = MirrorStatus::from_state(mirror, state);
        entry.silent = config.daemon.silent;
        entry.paused = entry.silent || paused.contains(mirror.name.as_str());
        entry.hook_installed = hooks.runs_pushmirror(&mirror.repo);
        entries.push(entry);
    }
    Ok(entries)
}
