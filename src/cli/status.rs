//! `pushmirror status [NAME] [--json]`: the status of SPEC section 6.
//!
//! Asked of the daemon, which adds what only it knows (`scheduled`, `next_update_at`); when
//! no daemon runs, read from the state files, with a note on stderr.

use std::io::Write;
use std::time::SystemTime;

use serde::Serialize;

use super::contact::{self, Contact};
use super::{EXIT_OK, EXIT_USAGE};
use crate::client::{ClientError, call};
use crate::config::{Config, Mirror};
use crate::error::chain;
use crate::protocol::{MirrorStatus, Request, Response};
use crate::store::state::{MirrorState, StateStore, Timestamp};

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
    } else {
        let _ = out.write_all(table(&entries, SystemTime::now(), terminal_width()).as_bytes());
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
    let mut entries = Vec::new();
    for mirror in mirrors {
        let state = match store.load(&mirror.name) {
            Ok((state, _)) => state,
            Err(e) => {
                let _ = writeln!(err, "warning: {}: {}", mirror.name, chain(&e));
                MirrorState::default()
            }
        };
        entries.push(MirrorStatus::from_state(mirror, state));
    }
    Ok(entries)
}

/// Returns the human table: one row per mirror, its error on an indented line below; long
/// repository paths and URLs are shortened in the middle to fit `width` columns.
fn table(entries: &[MirrorStatus], now: SystemTime, width: usize) -> String {
    let name_width = entries
        .iter()
        .map(|e| e.name.chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    let fixed = name_width + 2 + 9 + 2 + 16 + 2;
    // What is left goes to the repository and the URL, two fifths and three fifths.
    let rest = width.saturating_sub(fixed + 2).max(30);
    let repo_width = rest * 2 / 5;
    let url_width = rest - repo_width;
    let mut text = format!(
        "{:<name_width$}  {:<9}  {:<16}  {:<repo_width$}  URL\n",
        "NAME", "STATUS", "LAST SUCCESS", "REPOSITORY"
    );
    for e in entries {
        let status = if e.enabled {
            e.update_status.as_str()
        } else {
            "disabled"
        };
        let success = e
            .last_successful_update_at
            .map(|t| ago(t, now))
            .unwrap_or_else(|| "never".into());
        text.push_str(&format!(
            "{:<name_width$}  {status:<9}  {success:<16}  {:<repo_width$}  {}\n",
            e.name,
            fit(&e.repo, repo_width),
            fit(&e.url, url_width)
        ));
        if let Some(error) = &e.last_error {
            let first = error.lines().next().unwrap_or_default();
            let more = error
                .lines()
                .filter(|l| !l.is_empty())
                .count()
                .saturating_sub(1);
            let suffix = if more > 0 {
                format!(" (+{more} more lines; --json for all)")
            } else {
                String::new()
            };
            let line = format!("{first}{suffix}");
            text.push_str(&format!(
                "  error: {}\n",
                fit(&line, width.saturating_sub(9).max(40))
            ));
        }
    }
    text
}

/// Returns `text` shortened to `max` characters by replacing its middle with `…`.
fn fit(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max || max < 5 {
        return text.to_owned();
    }
    let head = (max - 1) / 2;
    let tail = max - 1 - head;
    let start: String = text.chars().take(head).collect();
    let end: String = text.chars().skip(count - tail).collect();
    format!("{start}…{end}")
}

/// Returns the terminal's width from `$COLUMNS`, else 120.
fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|&c: &usize| c >= 40)
        .unwrap_or(120)
}

/// Returns `t` relative to `now` in words: "just now", "2 minutes ago", "3 days ago".
pub fn ago(t: Timestamp, now: SystemTime) -> String {
    let secs = now.duration_since(t.0).map(|d| d.as_secs()).unwrap_or(0);
    let (n, unit) = match secs {
        0..10 => return "just now".into(),
        10..60 => (secs, "second"),
        60..3600 => (secs / 60, "minute"),
        3600..86400 => (secs / 3600, "hour"),
        _ => (secs / 86400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn long_paths_are_shortened_in_the_middle() {
        assert_eq!(fit("short", 10), "short");
        assert_eq!(
            fit("/srv/git/very/long/path/app.git", 15),
            "/srv/gi…app.git"
        );
        assert_eq!(
            fit("/srv/git/very/long/path/app.git", 15).chars().count(),
            15
        );
    }

    #[test]
    fn ages_read_as_words() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |secs_ago: u64| Timestamp(now - Duration::from_secs(secs_ago));
        assert_eq!(ago(at(3), now), "just now");
        assert_eq!(ago(at(45), now), "45 seconds ago");
        assert_eq!(ago(at(60), now), "1 minute ago");
        assert_eq!(ago(at(150), now), "2 minutes ago");
        assert_eq!(ago(at(7200), now), "2 hours ago");
        assert_eq!(ago(at(3 * 86400), now), "3 days ago");
    }
}
