//! `pushmirror sync NAME… | --repo PATH | --all [--wait] [--allow-mass-change]`: forces
//! updates through the daemon.

use std::io::Write;
use std::time::Duration;

use super::contact::{self, Contact};
use super::{EXIT_FAILED, EXIT_OK};
use crate::client::call;
use crate::protocol::{Request, Response, SyncStatus, SyncTarget};

/// How long `--wait` waits at most: longer than any update's timeout.
const WAIT_LIMIT: Duration = Duration::from_secs(4 * 3600);

/// Forces the updates; returns 0 on success, 1 if an awaited update failed (also when the
/// daemon will retry it: the line then says when), 2 for usage or connection errors.
/// `allow_mass_change` lets each named mirror's next update pass the mass-change guard.
pub async fn run(
    contact: &Contact,
    target: SyncTarget,
    wait: bool,
    allow_mass_change: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let target = match target {
        SyncTarget::Repo(path) => SyncTarget::Repo(crate::paths::canonical(&path)),
        other => other,
    };
    let names = match &target {
        SyncTarget::Mirrors(names) => names.clone(),
        _ => Vec::new(),
    };
    let limit = if wait {
        WAIT_LIMIT
    } else {
        Duration::from_secs(30)
    };
    let request = Request::Sync {
        target,
        wait,
        allow_mass_change,
    };
    match call(&contact.socket, &request, limit).await {
        Ok(Response::Synced { mirrors }) => {
            let mut code = EXIT_OK;
            let now = std::time::SystemTime::now();
            for result in mirrors {
                // A failure the daemon will retry says when: it is not the end.
                match result
                    .next_update_at
                    .filter(|_| result.update_status == SyncStatus::ToRetry)
                {
                    Some(at) => {
                        let _ = writeln!(
                            out,
                            "{}: {}, will retry {} ({})",
                            result.name,
                            result.update_status,
                            super::status::until(at, now),
                            at.rfc3339()
                        );
                    }
                    None if result.update_status == SyncStatus::Paused => {
                        let _ = writeln!(
                            out,
                            "{}: paused; the update is recorded and runs on 'pushmirror resume' (or when silent mode ends)",
                            result.name
                        );
                    }
                    None => {
                        let _ = writeln!(out, "{}: {}", result.name, result.update_status);
                    }
                }
                if wait && result.update_status != SyncStatus::Finished {
                    code = EXIT_FAILED;
                }
                if let Some(error) = result.last_error.filter(|_| wait) {
                    for line in error.lines() {
                        let _ = writeln!(out, "  {line}");
                    }
                }
            }
            code
        }
        other => {
            let code = super::report_unwanted(other, err);
            contact::hint_reload(contact, &names, err);
            code
        }
    }
}
