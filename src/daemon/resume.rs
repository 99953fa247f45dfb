//! What the daemon picks up that no request told it about: work pending at the last stop,
//! notifications spooled by hooks that could not reach it, and mirrors whose local refs
//! changed while nobody watched (SPEC.md section 7: three independent safety nets).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;
use tracing::{info, warn};

use super::{Daemon, Event};
use crate::config::{BranchFilter, Mirror, MirrorName};
use crate::error::chain;
use crate::mirror::fingerprint;
use crate::mirror::local::LocalRepo;
use crate::mirror::refdiff::LocalRefs;
use crate::store::queue::{Entry, Pending};
use crate::store::spool;
use crate::store::state::{
    Ending, MirrorState, RefCounts, StateStore, Timestamp, Trigger, UpdateStatus,
};

/// `last_error` of a disabled mirror whose update a stop or a crash cut short.
const INTERRUPTED_WHILE_DISABLED: &str = "the update was interrupted when the daemon stopped; the mirror is disabled, so it runs again once enabled";

impl Daemon {
    /// Schedules what was pending when the daemon stopped, takes in the spool, and starts the
    /// scan for mirrors whose local refs changed while nobody watched.
    pub(super) async fn resume(&mut self, pending: Pending) {
        let now = Instant::now();
        let names: Vec<MirrorName> = self.mirrors.keys().cloned().collect();
        let mut resumed = BTreeSet::new();
        for name in names {
            if self.resume_one(&name, &pending, now) {
                resumed.insert(name);
            }
        }
        if !resumed.is_empty() {
            info!(
                mirrors = resumed.len(),
                "resuming updates pending at the last stop"
            );
        }
        self.take_spool();
        self.scan_for_changes(&resumed);
    }

    /// Schedules `name` at once if it was pending in the queue, or `started`, `scheduled` or
    /// `to_retry` in its state; returns true if it did. A disabled mirror whose update was cut
    /// short is recorded as `to_retry`, so that its status stays true and it resumes once
    /// enabled.
    pub(super) fn resume_one(
        &mut self,
        name: &MirrorName,
        pending: &Pending,
        now: Instant,
    ) -> bool {
        let Some(tracked) = self.mirrors.get_mut(name) else {
            return false;
        };
        if tracked.schedule.is_pending() {
            return false; // running or waiting already
        }
        let (mut state, _) = match self.store.load(name) {
            Ok(loaded) => loaded,
            Err(e) => {
                warn!(mirror = %name, error = %chain(&e), "cannot read state");
                return false;
            }
        };
        self.exporter.metrics.track(name, &state);
        let cut_short = matches!(
            state.update_status,
            UpdateStatus::Started | UpdateStatus::Scheduled
        );
        if !tracked.mirror.enabled {
            if cut_short {
                state.end(
                    Timestamp::now(),
                    Trigger::Startup,
                    RefCounts::default(),
                    Ending::Failed {
                        error: INTERRUPTED_WHILE_DISABLED.into(),
                        retry: true,
                        divergent_refs: Vec::new(),
                        rejected_refs: Vec::new(),
                    },
                );
                save_state(&self.store, name, &state);
            }
            return false;
        }
        let interrupted = cut_short || state.update_status == UpdateStatus::ToRetry;
        if !interrupted && !pending.contains_key(name.as_str()) {
            return false;
        }
        if state.update_status == UpdateStatus::Started {
            // The update was cut short by a stop or a crash: say so until it runs again.
            state.update_status = UpdateStatus::Scheduled;
            save_state(&self.store, name, &state);
        }
        tracked.next_trigger = Trigger::Startup;
        let due = tracked.schedule.force(now);
        self.schedule_at(name.clone(), due);
        // What was pushed before the stop counts as waiting since the start.
        self.exporter
            .metrics
            .unmirrored(name, SystemTime::now(), false);
        true
    }

    /// Compares each enabled mirror's local refs with the fingerprint of its last success, off
    /// the loop; the mirrors that differ come back as [`Event::Changed`].
    pub(super) fn scan_for_changes(&self, skip: &BTreeSet<MirrorName>) {
        let mut by_repo: HashMap<PathBuf, Vec<Arc<Mirror>>> = HashMap::new();
        for (name, tracked) in &self.mirrors {
            if tracked.mirror.enabled && !skip.contains(name) {
                by_repo
                    .entry(tracked.mirror.repo.clone())
                    .or_default()
                    .push(tracked.mirror.clone());
            }
        }
        let store = self.store.clone();
        let events = self.events.clone();
        tokio::task::spawn_blocking(move || {
            let changed = changed_mirrors(&store, by_repo);
            let _ = events.send(Event::Changed(changed));
        });
    }

    /// Forces an update of the mirrors the scan found changed, unless one is pending anyway.
    pub(super) fn on_changed(&mut self, names: Vec<MirrorName>) {
        if !names.is_empty() {
            info!(
                mirrors = names.len(),
                "local refs changed since the last update"
            );
        }
        for name in names {
            if self
                .mirrors
                .get(&name)
                .is_some_and(|t| !t.schedule.is_pending())
            {
                self.force(&name, Trigger::Startup, None);
                // Pushed while no daemon watched: waiting since the scan found it, at least.
                self.exporter
                    .metrics
                    .unmirrored(&name, SystemTime::now(), false);
            }
        }
    }

    /// Takes in notifications spooled by hooks while the daemon was down or slow: into the
    /// queue first, then out of the spool.
    pub(super) fn take_spool(&mut self) {
        let spooled = spool::read_all(&self.config.daemon.state_dir);
        if spooled.is_empty() {
            return;
        }
        self.exporter.metrics.notifications(spooled.len());
        let mut names = BTreeSet::new();
        for item in &spooled {
            // Fleet: a spooled push to a repository created since the load, too.
            self.adopt_new_repository(&item.notification.repo);
            names.extend(self.matching_mirrors(&item.notification));
        }
        let events = self.events.clone();
        let names: Vec<MirrorName> = names.into_iter().collect();
        let durable = self.queue.append(Entry {
            mirrors: names.iter().map(MirrorName::to_string).collect(),
            forced: false,
        });
        self.unmarked_appends += 1;
        tokio::spawn(async move {
            match durable.await {
                Ok(()) => {
                    for item in &spooled {
                        if let Err(e) = spool::remove(item) {
                            // Taken in twice at worst: one more (no-op) update.
                            warn!(error = %chain(&e), "cannot remove a spooled notification");
                        }
                    }
                }
                Err(e) => {
                    warn!(error = %chain(&e), "cannot take in the spool; will try again")
                }
            }
            let _ = events.send(Event::Appended(names));
        });
    }
}

fn save_state(store: &StateStore, name: &MirrorName, state: &MirrorState) {
    if let Err(e) = store.save(name, state) {
        warn!(mirror = %name, error = %chain(&e), "cannot write state");
    }
}

/// Returns the mirrors of `by_repo` whose local refs differ from the fingerprint of their
/// last success. A mirror never synced (unless there is nothing to mirror yet), or whose
/// repository cannot be read, counts as changed: its update records why it fails.
fn changed_mirrors(
    store: &StateStore,
    by_repo: HashMap<PathBuf, Vec<Arc<Mirror>>>,
) -> Vec<MirrorName> {
    let nothing = fingerprint(&LocalRefs::default(), &BranchFilter::All);
    let mut changed = Vec::new();
    for (repo, mirrors) in by_repo {
        let local = LocalRepo::open(&repo).and_then(|r| r.refs());
        for mirror in mirrors {
            let stored = store
                .load(&mirror.name)
                .ok()
                .and_then(|(state, _)| state.fingerprint);
            let current = local
                .as_ref()
                .ok()
                .map(|refs| fingerprint(refs, &mirror.branches));
            let empty = stored.is_none() && current.as_deref() == Some(nothing.as_str());
            if !empty && (current.is_none() || stored != current) {
                changed.push(mirror.name.clone());
            }
        }
    }
    changed
}
