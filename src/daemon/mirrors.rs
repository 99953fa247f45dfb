//! The daemon's table of mirrors: one [`Tracked`] per configured mirror, found by name or by
//! repository, installed at start and at every reload without losing a schedule.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::oneshot;
use tracing::info;

use super::Daemon;
use super::scheduler::{MirrorSchedule, Phase};
use crate::config::{Config, Mirror, MirrorName};
use crate::mirror::refdiff::is_mirrored;
use crate::paths::canonical;
use crate::protocol::{ErrorKind, Notification, Response, SyncResult, SyncStatus, SyncTarget};
use crate::store::state::Trigger;

/// One mirror as the daemon tracks it.
pub(super) struct Tracked {
    pub(super) mirror: Arc<Mirror>,
    pub(super) schedule: MirrorSchedule,
    /// What the next update is for (a retry is recognised from the schedule).
    pub(super) next_trigger: Trigger,
    /// `sync --wait` callers of the next update, then of the running one.
    pub(super) waiting_next: Vec<oneshot::Sender<SyncResult>>,
    pub(super) waiting_running: Vec<oneshot::Sender<SyncResult>>,
    /// Set by the dispatched job once it holds a permit, before it reads any ref. Until then
    /// a trigger needs no follow-up update: the job will read the new refs anyway.
    pub(super) reading: Arc<AtomicBool>,
    /// `sync NAME --allow-mass-change`: the next update passes the mass-change guard (taken
    /// by the update that starts next, so it lets exactly one through).
    pub(super) allow_mass_change: bool,
}

impl Tracked {
    pub(super) fn new(mirror: Arc<Mirror>) -> Tracked {
        let schedule = MirrorSchedule::new(mirror.window(), mirror.retries);
        Tracked {
            mirror,
            schedule,
            next_trigger: Trigger::Push,
            waiting_next: Vec::new(),
            waiting_running: Vec::new(),
            reading: Arc::new(AtomicBool::new(false)),
            allow_mass_change: false,
        }
    }

    /// Returns true if an update was dispatched but has not read anything yet (it waits for
    /// a permit), so that a new trigger can fold into it.
    pub(super) fn dispatched_unread(&self) -> bool {
        // SeqCst pairs with the job's store: if this reads false, the job's reads of the
        // repository come after this point, hence after the push being notified.
        matches!(self.schedule.phase, Phase::Running { .. }) && !self.reading.load(Ordering::SeqCst)
    }

    /// Tells every `sync --wait` caller of this mirror that it was removed.
    fn tell_removed(self, name: &MirrorName) {
        for waiter in self.waiting_next.into_iter().chain(self.waiting_running) {
            let _ = waiter.send(SyncResult {
                name: name.to_string(),
                update_status: SyncStatus::Removed,
                last_error: Some("the mirror was removed from the configuration".into()),
                next_update_at: None,
            });
        }
    }
}

impl Daemon {
    /// Tracks the mirrors of `config`, keeping the schedule of those already tracked.
    pub(super) fn install_mirrors(&mut self, config: &Config) {
        let mut mirrors = HashMap::new();
        let mut by_repo: HashMap<PathBuf, Vec<MirrorName>> = HashMap::new();
        for mirror in &config.mirrors {
            let mirror = Arc::new(mirror.clone());
            let tracked = match self.mirrors.remove(&mirror.name) {
                Some(mut old) => {
                    old.schedule.window = mirror.window();
                    old.schedule.retries = mirror.retries;
                    if !mirror.enabled {
                        // Disabled: what waited is dropped now (a running update ends).
                        old.schedule.cancel();
                        self.exporter.metrics.nothing_pending(&mirror.name);
                    }
                    old.mirror = mirror.clone();
                    old
                }
                None => Tracked::new(mirror.clone()),
            };
            by_repo
                .entry(canonical(&mirror.repo))
                .or_default()
                .push(mirror.name.clone());
            mirrors.insert(mirror.name.clone(), tracked);
        }
        for (name, dropped) in self.mirrors.drain() {
            info!(mirror = %name, "mirror removed from the configuration");
            self.exporter.metrics.forget(&name);
            dropped.tell_removed(&name);
        }
        self.mirrors = mirrors;
        self.by_repo = by_repo;
    }

    /// Returns the enabled mirrors of the notified repository whose filter admits one of the
    /// changed refs (tags always do); all of them when the notification is for all refs.
    pub(super) fn matching_mirrors(&self, notification: &Notification) -> Vec<MirrorName> {
        let repo = canonical(&notification.repo);
        let Some(names) = self.by_repo.get(&repo) else {
            return Vec::new();
        };
        let default_branch = read_default_branch(&repo);
        names
            .iter()
            .filter(|name| {
                self.mirrors.get(*name).is_some_and(|t| {
                    t.mirror.enabled
                        && (notification.all_refs
                            || notification.refs.iter().any(|r| {
                                is_mirrored(&r.name, &t.mirror.branches, default_branch.as_deref())
                            }))
                })
            })
            .cloned()
            .collect()
    }

    /// Resolves a sync target to mirror names, or the error to answer.
    pub(super) fn resolve_target(&self, target: &SyncTarget) -> Result<Vec<MirrorName>, Response> {
        let not_found = |message: String| Response::Error {
            kind: ErrorKind::NotFound,
            message,
        };
        match target {
            SyncTarget::All => Ok(self.enabled_mirrors()),
            SyncTarget::Mirrors(names) => names
                .iter()
                .map(|name| match self.mirrors.get(name.as_str()) {
                    None => Err(not_found(format!("no mirror named {name:?}"))),
                    Some(t) if !t.mirror.enabled => {
                        Err(not_found(format!("mirror {name:?} is disabled")))
                    }
                    Some(t) => Ok(t.mirror.name.clone()),
                })
                .collect(),
            SyncTarget::Repo(repo) => {
                let names: Vec<MirrorName> = self
                    .by_repo
                    .get(&canonical(repo))
                    .into_iter()
                    .flatten()
                    .filter(|n| self.mirrors.get(*n).is_some_and(|t| t.mirror.enabled))
                    .cloned()
                    .collect();
                if names.is_empty() {
                    return Err(not_found(format!(
                        "no enabled mirror of repository {}",
                        repo.display()
                    )));
                }
                Ok(names)
            }
        }
    }

    /// Returns the enabled mirrors, in configuration order.
    pub(super) fn enabled_mirrors(&self) -> Vec<MirrorName> {
        self.config
            .mirrors
            .iter()
            .filter(|m| m.enabled)
            .map(|m| m.name.clone())
            .collect()
    }
}

/// Returns the target of the repository's `HEAD` (e.g. `refs/heads/main`), read directly.
fn read_default_branch(repo: &Path) -> Option<String> {
    let head = std::fs::read_to_string(repo.join("HEAD")).ok()?;
    head.strip_prefix("ref: ").map(|r| r.trim().to_owned())
}
