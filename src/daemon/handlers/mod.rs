//! One module per control request and signal the daemon's loop handles. Each handler runs on
//! the loop, changes the schedules at once, and answers through the request's `reply`, from a
//! spawned task when the answer must wait for a disk write or a running update.

mod notify;
mod plan;
// Operations: silent mode and pause.
mod pause;
mod reload;
mod status;
mod sync;

use tracing::{error, info};

use super::Daemon;
use super::control::Incoming;
use crate::protocol::{PROTOCOL_VERSION, Request, Response};

impl Daemon {
    /// Handles one control request.
    pub(super) fn handle(&mut self, incoming: Incoming) {
        let Incoming { request, reply, .. } = incoming;
        match request {
            Request::Ping => {
                let _ = reply.send(Response::Pong {
                    version: PROTOCOL_VERSION,
                    pid: std::process::id(),
                });
            }
            Request::Notify(notification) => self.notify(notification, reply),
            Request::Sync {
                target,
                wait,
                allow_mass_change,
            } => self.sync(target, wait, allow_mass_change, reply),
            Request::Status { name } => self.status(name, reply),
            Request::Reload => self.reload_request(reply),
            Request::Plan { target } => self.plan(target, reply),
            Request::Pause { target } => self.pause_request(target, reply),
            Request::Resume { target } => self.resume_request(target, reply),
        }
    }

    /// SIGHUP: reloads the configuration.
    pub(super) fn on_hangup(&mut self) {
        if let Err(message) = self.reload() {
            error!(error = %message, "configuration not reloaded; the old one stays in force");
        }
    }

    /// SIGUSR1: forces an update of every enabled mirror.
    pub(super) fn on_user1(&mut self) {
        info!("SIGUSR1: forcing an update of every enabled mirror");
        self.force_all();
    }
}
