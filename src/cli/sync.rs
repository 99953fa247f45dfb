//! `pushmirror sync NAME… | --repo PATH | --all [--wait]`: forces updates through the daemon.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::client::call;
use crate::config::Config;
use crate::error::EXIT_FAILED;
use crate::protocol::{Request, Response, SyncTarget};

/// How long `--wait` waits at most: longer than any update's timeout.
const WAIT_LIMIT: Duration = Duration::from_secs(4 * 3600);

/// Forces the updates; returns 0 on success, 1 if an awaited update failed, 2 for usage or
/// connection errors.
pub async fn run(
    config: &Config,
    target: SyncTarget,
    wait: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let target = match target {
        SyncTarget::Repo(path) => SyncTarget::Repo(absolute(path)),
        other => other,
    };
    let limit = if wait {
        WAIT_LIMIT
    } else {
        Duration::from_secs(30)
    };
    match call(
        &config.daemon.socket,
        &Request::Sync { target, wait },
        limit,
    )
    .await
    {
        Ok(Response::Synced { mirrors }) => {
            let mut code = 0;
            for result in mirrors {
                let _ = writeln!(out, "{}: {}", result.name, result.update_status);
                if wait && result.update_status != "finished" {
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
        other => super::report_unwanted(other, err),
    }
}

fn absolute(path: PathBuf) -> PathBuf {
    let path = std::path::absolute(&path).unwrap_or(path);
    std::fs::canonicalize(&path).unwrap_or(path)
}
