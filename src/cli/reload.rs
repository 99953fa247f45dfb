//! `pushmirror reload`: asks the daemon to re-read its configuration, as SIGHUP does, and
//! reports a bad file.

use std::io::Write;
use std::time::Duration;

use super::contact::Contact;
use super::{EXIT_OK, EXIT_USAGE};
use crate::client::call;
use crate::protocol::{Request, Response};

/// Returns 0 when the new configuration is in force, 2 when it was rejected or the daemon
/// could not be reached.
pub async fn run(contact: &Contact, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let timeout = Duration::from_secs(30);
    match call(&contact.socket, &Request::Reload, timeout).await {
        Ok(Response::Reloaded { mirrors }) => {
            let _ = writeln!(out, "configuration reloaded: {}", super::mirrors(mirrors));
            EXIT_OK
        }
        Ok(Response::Error { message, .. }) => {
            let _ = writeln!(err, "error: the daemon kept its configuration: {message}");
            EXIT_USAGE
        }
        other => super::report_unwanted(other, err),
    }
}
