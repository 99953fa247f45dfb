//! `pushmirror pause NAME… | --all` and `pushmirror resume NAME… | --all`: per-mirror silent
//! mode, through the daemon (SPEC.md section 2). Like `status`, `sync` and `reload`, they need
//! only `[daemon]` to find the socket, so they work while the file has errors.

use std::io::Write;
use std::time::Duration;

use super::EXIT_OK;
use super::contact::{self, Contact};
use crate::client::call;
use crate::protocol::{Request, Response, SyncTarget};

/// Whether the command pauses or resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Pause,
    Resume,
}

/// Pauses or resumes the mirrors; returns 0 once the daemon has the change on disk, 2 for a
/// usage or connection error (an unknown mirror, no daemon).
pub async fn run(
    contact: &Contact,
    action: Action,
    target: SyncTarget,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let names = match &target {
        SyncTarget::Mirrors(names) => names.clone(),
        _ => Vec::new(),
    };
    let request = match action {
        Action::Pause => Request::Pause { target },
        Action::Resume => Request::Resume { target },
    };
    match call(&contact.socket, &request, Duration::from_secs(30)).await {
        Ok(Response::Paused { mirrors, silent }) => {
            let _ = writeln!(out, "paused: {}", list(&mirrors));
            if !mirrors.is_empty() {
                let _ = writeln!(
                    out,
                    "pushes are recorded and nothing is pushed to these mirrors until 'pushmirror resume'"
                );
            }
            if silent {
                let _ = writeln!(out, "silent mode is on as well ([daemon] silent = true)");
            }
            EXIT_OK
        }
        Ok(Response::Resumed {
            mirrors,
            started,
            silent,
        }) => {
            let _ = writeln!(out, "resumed: {}", list(&mirrors));
            if silent {
                let _ = writeln!(
                    out,
                    "silent mode is on ([daemon] silent = true): nothing runs until it is turned off"
                );
            } else if !started.is_empty() {
                let _ = writeln!(out, "pending updates started: {}", started.join(", "));
            }
            EXIT_OK
        }
        other => {
            let code = super::report_unwanted(other, err);
            contact::hint_reload(contact, &names, err);
            code
        }
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "no mirror".into()
    } else {
        names.join(", ")
    }
}
