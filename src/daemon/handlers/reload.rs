//! `reload` and SIGHUP: re-read the configuration. On error the old one stays in force;
//! unchanged mirrors keep their schedule, removed ones are dropped (their waiters are told),
//! new ones are scanned for changed refs as at start.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{info, warn};

use super::super::{Daemon, permit_count, provision};
use crate::config::{Config, MirrorName};
use crate::protocol::{ErrorKind, Response};
use crate::store::queue::Pending;

impl Daemon {
    pub(super) fn reload_request(&mut self, reply: oneshot::Sender<Response>) {
        let response = match self.reload() {
            Ok(mirrors) => Response::Reloaded { mirrors },
            Err(message) => Response::Error {
                kind: ErrorKind::BadConfig,
                message,
            },
        };
        let _ = reply.send(response);
    }

    /// Re-reads the configuration file; returns the number of mirrors, or why the file was
    /// refused (the old configuration then stays in force).
    pub(super) fn reload(&mut self) -> Result<usize, String> {
        let config = Config::load(&self.config.path).map_err(|e| e.to_string())?;
        provision(&config);
        if config.daemon.state_dir != self.config.daemon.state_dir
            || config.daemon.socket != self.config.daemon.socket
        {
            warn!("state_dir and socket changes take effect at the next daemon start");
        }
        self.resize_permits(config.daemon.max_parallel_pushes);
        self.exporter.reconfigure(config.daemon.metrics_listen);
        let known: BTreeSet<MirrorName> = self.mirrors.keys().cloned().collect();
        let watched: BTreeSet<MirrorName> = self
            .mirrors
            .iter()
            .filter(|(_, t)| t.mirror.enabled)
            .map(|(name, _)| name.clone())
            .collect();
        self.log_deleted_repositories(&config);
        let config = Arc::new(config);
        self.install_mirrors(&config);
        let was_silent = self.config.daemon.silent;
        self.alerts.configure(&config);
        self.config = config;
        self.silent_changed(was_silent);
        let added = self.mirrors.keys().filter(|n| !known.contains(*n)).count();
        // Mirrors new or enabled again resume what was cut short, as at start; the others'
        // refs are watched already, so only these are scanned.
        let mut skip = watched;
        let now = Instant::now();
        let unwatched: Vec<MirrorName> = self
            .mirrors
            .keys()
            .filter(|n| !skip.contains(*n))
            .cloned()
            .collect();
        for name in unwatched {
            if self.resume_one(&name, &Pending::new(), now) {
                skip.insert(name);
            }
        }
        self.scan_for_changes(&skip);
        info!(
            mirrors = self.mirrors.len(),
            added, "configuration reloaded"
        );
        Ok(self.mirrors.len())
    }

    /// Sets the number of concurrent updates to `wanted` (clamped as at start); running ones
    /// keep their permits.
    fn resize_permits(&mut self, wanted: usize) {
        let wanted = permit_count(wanted);
        if wanted > self.permits_total {
            self.permits.add_permits(wanted - self.permits_total);
        } else {
            self.permits.forget_permits(self.permits_total - wanted);
        }
        self.permits_total = wanted;
    }
}
