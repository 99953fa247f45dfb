//! The scheduler's driver: a heap of due times over the per-mirror state machines, the start
//! of each due update behind the `max_parallel_pushes` permits, and its end.
//!
//! The heap uses lazy deletion: an entry is valid only while it equals its mirror's
//! `next_due()`, so rescheduling pushes a new entry and idle mirrors cost nothing. An update
//! runs as two tasks: the job (which takes a permit, marks itself `reading`, then runs the
//! [`Updater`]), and a watcher that turns the job's panic into a recorded failure, so that
//! neither the status nor the schedule can stay `started`.

use std::cmp::Reverse;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::scheduler::Ended;
use super::{Daemon, Event};
use crate::config::{Config, Mirror, MirrorName};
use crate::error::chain;
use crate::mirror::job::{self, JobError, JobOutcome};
use crate::protocol::{SyncResult, SyncStatus};
use crate::store::queue::Pending;
use crate::store::state::{Ending, RefCounts, StateStore, Timestamp, Trigger, UpdateStatus};

/// Everything one update needs, handed to the [`Updater`].
pub(crate) struct UpdateJob {
    pub(crate) config: Arc<Config>,
    pub(crate) store: StateStore,
    pub(crate) mirror: Arc<Mirror>,
    pub(crate) trigger: Trigger,
    /// Whether a transient failure may become `to_retry` rather than `failed`.
    pub(crate) retries_left: bool,
    /// Cancelled when the daemon gives up on the update (shutdown grace over).
    pub(crate) kill: CancellationToken,
    /// `sync NAME --allow-mass-change`: this update passes the mass-change guard.
    pub(crate) allow_mass_change: bool,
}

/// The future of one recorded update.
pub(crate) type UpdateFuture = Pin<Box<dyn Future<Output = Result<JobOutcome, JobError>> + Send>>;

/// Runs one recorded update: the daemon's only door to the mirror engine, so that the
/// daemon's handlers can be tested in process with updates whose length and outcome the test
/// decides.
pub(crate) trait Updater: Send + Sync + 'static {
    fn update(&self, job: UpdateJob) -> UpdateFuture;
}

/// The real thing: [`job::run`], git processes and all.
pub(crate) struct GitUpdater;

impl Updater for GitUpdater {
    fn update(&self, job: UpdateJob) -> UpdateFuture {
        Box::pin(async move {
            job::run(
                &job.config,
                &job.store,
                &job.mirror,
                job.trigger,
                job.retries_left,
                job.kill,
                job.allow_mass_change,
            )
            .await
        })
    }
}

/// What one job sends back when it ends.
pub(super) struct Done {
    name: MirrorName,
    /// The mirror configuration the job ran with (a reload may have replaced it since).
    mirror: Arc<Mirror>,
    outcome: Result<JobOutcome, JobError>,
}

impl Daemon {
    /// Returns the earliest due time still valid.
    pub(super) fn next_due(&mut self) -> Option<Instant> {
        while let Some(Reverse((due, name))) = self.due.peek() {
            let valid = self
                .mirrors
                .get(name)
                .is_some_and(|t| t.schedule.next_due() == Some(*due));
            if valid {
                return Some(*due);
            }
            self.due.pop();
        }
        None
    }

    /// Remembers that `name` is due at `due` (when the schedule said so).
    pub(super) fn schedule_at(&mut self, name: MirrorName, due: Option<Instant>) {
        if let Some(due) = due {
            self.due.push(Reverse((due, name)));
        }
    }

    /// Starts every update due at `now`.
    pub(super) fn dispatch_due(&mut self, now: Instant) {
        while let Some(due) = self.next_due() {
            if due > now {
                break;
            }
            let Some(Reverse((_, name))) = self.due.pop() else {
                break;
            };
            self.start(&name, now);
        }
    }

    fn start(&mut self, name: &MirrorName, now: Instant) {
        let Some(tracked) = self.mirrors.get_mut(name) else {
            return;
        };
        if !tracked.mirror.enabled {
            // Disabled by a reload while it waited.
            tracked.schedule.cancel();
            return;
        }
        if self.config.daemon.silent || self.paused.contains(name.as_str()) {
            // Silent mode or paused: the update stays pending (schedule and queue) and is
            // started when the mirror is released (`handlers/pause.rs`).
            return;
        }
        let trigger = if tracked.schedule.is_retry() {
            Trigger::Retry
        } else {
            tracked.next_trigger
        };
        let retries_left = tracked.schedule.retries_left();
        tracked.schedule.start(now);
        tracked.next_trigger = Trigger::Push;
        let allow_mass_change = std::mem::take(&mut tracked.allow_mass_change);
        tracked.waiting_running = std::mem::take(&mut tracked.waiting_next);
        tracked.reading = Arc::new(AtomicBool::new(false));
        let reading = tracked.reading.clone();
        let mirror = tracked.mirror.clone();
        self.running += 1;

        let update = UpdateJob {
            config: self.config.clone(),
            store: self.store.clone(),
            mirror: mirror.clone(),
            trigger,
            retries_left,
            kill: self.kill.child_token(),
            allow_mass_change,
        };
        let (permits, updater) = (self.permits.clone(), self.updater.clone());
        let job = tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            reading.store(true, Ordering::SeqCst);
            updater.update(update).await
        });
        let (store, events, name) = (self.store.clone(), self.events.clone(), name.clone());
        tokio::spawn(async move {
            let outcome = match job.await {
                Ok(outcome) => outcome,
                Err(panic) => {
                    error!(mirror = %mirror.name, error = %panic, "the update panicked");
                    record_panic(&store, &mirror, trigger)
                }
            };
            let _ = events.send(Event::Done(Done {
                name,
                mirror,
                outcome,
            }));
        });
    }

    /// Ends a job: tells its waiters, schedules what follows, and empties the queue when
    /// nothing is left to do.
    pub(super) fn finish(&mut self, done: Done) {
        self.running = self.running.saturating_sub(1);
        let Done {
            name,
            mirror,
            outcome,
        } = done;
        let (ended, mut result) = ending(&name, &mirror, &outcome);
        if let Ok(JobOutcome::Ran { state, .. }) = &outcome {
            // Operations: alerts. Told without waiting: deliveries never delay updates.
            self.alerts.ended(&mirror, state);
        }
        let Some(tracked) = self.mirrors.get_mut(&name) else {
            return; // removed by a reload meanwhile
        };
        self.exporter.metrics.update_ended(&name, &outcome);
        let now = Instant::now();
        let due = tracked.schedule.end(now, ended);
        if result.update_status == SyncStatus::ToRetry {
            match due {
                // The waiters are told when the retry comes, as `status` would say.
                Some(due) => {
                    let wait = due.saturating_duration_since(now);
                    result.next_update_at = Some(Timestamp::now().saturating_add(wait));
                }
                // Nothing follows (no retry left): what the waiters asked for failed.
                None => result.update_status = SyncStatus::Failed,
            }
        }
        for waiter in tracked.waiting_running.drain(..) {
            let _ = waiter.send(result.clone());
        }
        self.schedule_at(name, due);
        self.compact_if_idle();
    }

    /// Empties the queue when no update runs or waits and every acknowledged append is
    /// marked; what held mirrors (paused, or silent mode) have pending is kept in it. Sent
    /// now, so that it cannot overtake an entry appended for a later event.
    pub(super) fn compact_if_idle(&mut self) {
        let idle = self.running == 0
            && self.unmarked_appends == 0
            && self
                .mirrors
                .iter()
                .all(|(name, t)| !t.schedule.is_pending() || self.is_held(name.as_str()));
        if !idle {
            return;
        }
        let compacted = self.queue.compact(self.pending());
        tokio::spawn(async move {
            if let Err(e) = compacted.await {
                warn!(error = %chain(&e), "cannot compact the queue");
            }
        });
    }

    /// Returns the mirrors with work waiting or in flight, for the queue at shutdown.
    pub(super) fn pending(&self) -> Pending {
        self.mirrors
            .iter()
            .filter(|(_, t)| t.schedule.is_pending())
            .map(|(name, t)| (name.to_string(), t.next_trigger == Trigger::Forced))
            .collect()
    }
}

/// Returns how a job ended, for the scheduler and for `sync --wait` callers.
fn ending(
    name: &MirrorName,
    mirror: &Mirror,
    outcome: &Result<JobOutcome, JobError>,
) -> (Ended, SyncResult) {
    let result = |update_status: SyncStatus, last_error: Option<String>| SyncResult {
        name: name.to_string(),
        update_status,
        last_error,
        next_update_at: None,
    };
    match outcome {
        Ok(JobOutcome::Ran { state, .. }) => (
            match state.update_status {
                UpdateStatus::Finished => Ended::Finished,
                UpdateStatus::ToRetry => Ended::Transient,
                _ => Ended::Permanent,
            },
            result(state.update_status.into(), state.last_error.clone()),
        ),
        Ok(JobOutcome::Busy) => (
            Ended::Transient,
            result(
                SyncStatus::ToRetry,
                Some("another process was updating this mirror".into()),
            ),
        ),
        Err(e) => {
            error!(mirror = %mirror.name, error = %chain(e), "cannot record the update");
            (
                Ended::Transient,
                result(SyncStatus::ToRetry, Some(chain(e))),
            )
        }
    }
}

/// Records a panicked update of `mirror` as failed in its state (a small write, done in
/// place as `job::run` does its own).
fn record_panic(
    store: &StateStore,
    mirror: &Mirror,
    trigger: Trigger,
) -> Result<JobOutcome, JobError> {
    let (mut state, _) = store.load(&mirror.name)?;
    state.end(
        Timestamp::now(),
        trigger,
        RefCounts::default(),
        Ending::Failed {
            error: "internal error: the update panicked (see the daemon log)".into(),
            retry: false,
            divergent_refs: Vec::new(),
            rejected_refs: Vec::new(),
        },
    );
    let unsaved = store.save(&mirror.name, &state).err();
    Ok(JobOutcome::Ran {
        state: Box::new(state),
        unsaved,
    })
}
