//! `sync` and SIGUSR1: forced updates, bypassing the window. With `wait`, the answer comes
//! when every selected mirror's update ended.

use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::warn;

use super::super::Daemon;
use crate::config::MirrorName;
use crate::error::chain;
use crate::protocol::{ErrorKind, Response, SyncResult, SyncStatus, SyncTarget};
use crate::store::queue::Entry;
use crate::store::state::Trigger;

impl Daemon {
    pub(super) fn sync(
        &mut self,
        target: SyncTarget,
        wait: bool,
        allow_mass_change: bool,
        reply: oneshot::Sender<Response>,
    ) {
        let names = match self.resolve_target(&target) {
            Ok(names) => names,
            Err(response) => {
                let _ = reply.send(response);
                return;
            }
        };
        // A held mirror (paused, silent mode) records the forced update and answers
        // `paused` at once, waiting or not: nothing runs until it is released.
        let mut waiters = Vec::new();
        for name in &names {
            let held = self.is_held(name.as_str());
            let (tx, rx) = oneshot::channel();
            if wait && !held {
                waiters.push(Some(rx));
            } else if wait {
                waiters.push(None);
            }
            if allow_mass_change {
                self.allow_mass_change(name);
            }
            self.force(name, Trigger::Forced, (wait && !held).then_some(tx));
        }
        let held: Vec<bool> = names.iter().map(|n| self.is_held(n.as_str())).collect();
        let durable = self.queue.append(forced_entry(&names));
        tokio::spawn(async move {
            if let Err(e) = durable.await {
                let _ = reply.send(Response::Error {
                    kind: ErrorKind::Unavailable,
                    message: chain(&e),
                });
                return;
            }
            let mut results = Vec::new();
            if wait {
                for (name, rx) in names.iter().zip(waiters) {
                    let Some(rx) = rx else {
                        results.push(paused_result(name));
                        continue;
                    };
                    results.push(rx.await.unwrap_or_else(|_| SyncResult {
                        name: name.to_string(),
                        update_status: SyncStatus::Cancelled,
                        last_error: Some("the daemon stopped before the update ran".into()),
                        next_update_at: None,
                    }));
                }
            } else {
                results = names
                    .iter()
                    .zip(held)
                    .map(|(name, held)| match held {
                        true => paused_result(name),
                        false => SyncResult {
                            name: name.to_string(),
                            update_status: SyncStatus::Scheduled,
                            last_error: None,
                            next_update_at: None,
                        },
                    })
                    .collect();
            }
            let _ = reply.send(Response::Synced { mirrors: results });
        });
    }

    /// Forces an update of `name`, optionally registering a waiter for its end.
    pub(in crate::daemon) fn force(
        &mut self,
        name: &MirrorName,
        trigger: Trigger,
        waiter: Option<oneshot::Sender<SyncResult>>,
    ) {
        let Some(tracked) = self.mirrors.get_mut(name) else {
            return;
        };
        // An allowance for a mass change is for an update that has not started: it does not
        // fold into a dispatched one (which took its word at dispatch).
        if tracked.dispatched_unread() && !tracked.allow_mass_change {
            tracked.waiting_running.extend(waiter);
            return;
        }
        tracked.next_trigger = trigger;
        tracked.waiting_next.extend(waiter);
        let due = tracked.schedule.force(Instant::now());
        self.schedule_at(name.clone(), due);
    }

    /// Lets the next update of `name` that starts pass the mass-change guard. An update
    /// dispatched but not yet reading is not that update: it may already have taken the
    /// word, so the forced update that follows gets it (see [`Daemon::force`]).
    fn allow_mass_change(&mut self, name: &MirrorName) {
        if let Some(tracked) = self.mirrors.get_mut(name) {
            tracked.allow_mass_change = true;
        }
    }

    /// Forces an update of every enabled mirror (SIGUSR1).
    pub(super) fn force_all(&mut self) {
        let names = self.enabled_mirrors();
        for name in &names {
            self.force(name, Trigger::Forced, None);
        }
        let durable = self.queue.append(forced_entry(&names));
        tokio::spawn(async move {
            if let Err(e) = durable.await {
                warn!(error = %chain(&e), "cannot record the forced updates");
            }
        });
    }
}

/// Returns the answer for a held mirror (paused, or silent mode): recorded, not run.
fn paused_result(name: &MirrorName) -> SyncResult {
    SyncResult {
        name: name.to_string(),
        update_status: SyncStatus::Paused,
        last_error: None,
        next_update_at: None,
    }
}

/// Returns the queue entry of a forced update of `names`.
fn forced_entry(names: &[MirrorName]) -> Entry {
    Entry {
        mirrors: names.iter().map(MirrorName::to_string).collect(),
        forced: true,
    }
}
