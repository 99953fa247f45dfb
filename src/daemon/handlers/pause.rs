//! `pause` and `resume`, and silent mode (`[daemon] silent = true`): GitLab's Silent Mode,
//! for the whole daemon or per mirror (SPEC.md sections 2 and 9).
//!
//! A held mirror (paused, or any mirror while silent) is scheduled exactly as any other:
//! notifications and forced syncs go to the durable queue and into its schedule, so what is
//! pending survives a stop or a crash like everything else. Only the start of its update is
//! held back ([`Daemon::is_held`], asked by the driver), so no git process talks to its remote.
//! Resuming, or leaving silent mode, starts every held update at once, bypassing the window:
//! the operator asked for the mirrors to catch up. An update already running when a mirror is
//! paused runs to its end; nothing starts after it.

use std::collections::BTreeSet;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{info, warn};

use super::super::Daemon;
use super::super::scheduler::Phase;
use crate::config::MirrorName;
use crate::error::chain;
use crate::paths::canonical;
use crate::protocol::{ErrorKind, Response, SyncTarget};

impl Daemon {
    /// Returns true if no update of `name` may start now: the daemon is silent, or the
    /// mirror is paused.
    pub(in crate::daemon) fn is_held(&self, name: &str) -> bool {
        self.config.daemon.silent || self.paused.contains(name)
    }

    /// Returns true if `name` is paused by `pushmirror pause`.
    pub(in crate::daemon) fn is_paused(&self, name: &str) -> bool {
        self.paused.contains(name)
    }

    pub(super) fn pause_request(&mut self, target: SyncTarget, reply: oneshot::Sender<Response>) {
        let names = match self.pause_target(&target) {
            Ok(names) => names,
            Err(response) => {
                let _ = reply.send(response);
                return;
            }
        };
        for name in &names {
            self.paused.insert(name.to_string());
        }
        info!(mirrors = %join(&names), "paused");
        let silent = self.config.daemon.silent;
        let mirrors: Vec<String> = names.iter().map(MirrorName::to_string).collect();
        self.persist_paused(reply, Response::Paused { mirrors, silent });
    }

    pub(super) fn resume_request(&mut self, target: SyncTarget, reply: oneshot::Sender<Response>) {
        let names: Vec<String> = match &target {
            // Also names a reload removed: `resume --all` leaves nothing paused.
            SyncTarget::All => self.paused.iter().cloned().collect(),
            SyncTarget::Mirrors(names) => {
                let unknown: Vec<&String> = names
                    .iter()
                    .filter(|n| !self.mirrors.contains_key(n.as_str()) && !self.paused.contains(*n))
                    .collect();
                if let Some(name) = unknown.first() {
                    let _ = reply.send(not_found(format!("no mirror named {name:?}")));
                    return;
                }
                names.clone()
            }
            SyncTarget::Repo(_) => match self.pause_target(&target) {
                Ok(names) => names.iter().map(MirrorName::to_string).collect(),
                Err(response) => {
                    let _ = reply.send(response);
                    return;
                }
            },
        };
        for name in &names {
            self.paused.remove(name);
        }
        let silent = self.config.daemon.silent;
        let started = if silent {
            Vec::new()
        } else {
            self.release(names.iter().filter_map(|n| MirrorName::new(n)))
        };
        info!(mirrors = %names.join(", "), started = started.len(), "resumed");
        self.persist_paused(
            reply,
            Response::Resumed {
                mirrors: names,
                started: started.iter().map(MirrorName::to_string).collect(),
                silent,
            },
        );
    }

    /// Starts at once the held updates of `names` that are no longer held; returns the
    /// mirrors whose update was started.
    pub(in crate::daemon) fn release(
        &mut self,
        names: impl IntoIterator<Item = MirrorName>,
    ) -> Vec<MirrorName> {
        let now = Instant::now();
        let mut started = Vec::new();
        for name in names {
            if self.is_held(name.as_str()) {
                continue;
            }
            let Some(tracked) = self.mirrors.get_mut(&name) else {
                continue;
            };
            if !tracked.mirror.enabled || !matches!(tracked.schedule.phase, Phase::Waiting { .. }) {
                continue;
            }
            // What the next update is for stays (a push, a forced sync); only the window
            // is bypassed.
            let due = tracked.schedule.force(now);
            self.schedule_at(name.clone(), due);
            started.push(name);
        }
        started
    }

    /// After a reload: leaving silent mode starts every held update of mirrors not paused;
    /// entering it holds what is not running yet.
    pub(in crate::daemon) fn silent_changed(&mut self, was_silent: bool) {
        match (was_silent, self.config.daemon.silent) {
            (false, true) => info!("silent mode on: no update starts until it is turned off"),
            (true, false) => {
                let names: Vec<MirrorName> = self.mirrors.keys().cloned().collect();
                let started = self.release(names);
                info!(
                    started = started.len(),
                    "silent mode off: held updates start now"
                );
            }
            _ => {}
        }
    }

    /// Resolves the mirrors a `pause` (or `resume --repo`) names: every configured mirror for
    /// `all`, enabled or not.
    fn pause_target(&self, target: &SyncTarget) -> Result<Vec<MirrorName>, Response> {
        match target {
            SyncTarget::All => Ok(self.config.mirrors.iter().map(|m| m.name.clone()).collect()),
            SyncTarget::Mirrors(names) => names
                .iter()
                .map(|name| match self.mirrors.get(name.as_str()) {
                    Some(t) => Ok(t.mirror.name.clone()),
                    None => Err(not_found(format!("no mirror named {name:?}"))),
                })
                .collect(),
            SyncTarget::Repo(repo) => {
                let names = self
                    .by_repo
                    .get(&canonical(repo))
                    .cloned()
                    .unwrap_or_default();
                if names.is_empty() {
                    return Err(not_found(format!(
                        "no mirror of repository {}",
                        repo.display()
                    )));
                }
                Ok(names)
            }
        }
    }

    /// Writes the paused set off the loop and answers `done` once it is on disk (or an
    /// `unavailable` error, the change then being in force until the daemon stops).
    fn persist_paused(&mut self, reply: oneshot::Sender<Response>, done: Response) {
        self.paused_generation += 1;
        let (store, generation) = (self.paused_store.clone(), self.paused_generation);
        let paused: BTreeSet<String> = self.paused.clone();
        tokio::task::spawn_blocking(move || {
            let response = match store.save(generation, &paused) {
                Ok(()) => done,
                Err(e) => {
                    warn!(error = %chain(&e), "cannot record the paused mirrors");
                    Response::Error {
                        kind: ErrorKind::Unavailable,
                        message: format!("{}; the change holds until the daemon stops", chain(&e)),
                    }
                }
            };
            let _ = reply.send(response);
        });
    }
}

fn not_found(message: String) -> Response {
    Response::Error {
        kind: ErrorKind::NotFound,
        message,
    }
}

fn join(names: &[MirrorName]) -> String {
    names
        .iter()
        .map(MirrorName::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}
