//! Prometheus metrics (SPEC.md section 11): the registry the daemon's loop records into, and
//! the lag it tracks per mirror; [`server`] serves them over HTTP with `/healthz`.
//!
//! The registry and the text format are `prometheus-client`'s (Prometheus' own Rust client),
//! so that the format is the library's business, not ours. The loop records as things happen
//! (an update ended, a push was marked, a mirror was removed); a scrape never runs on the
//! loop: it asks the loop for two counts through a channel ([`Probe`], answered in
//! microseconds from the loop's own table) and encodes on a blocking thread, the per-mirror
//! families only when one of them changed since the last scrape.
//! The registry's families are read-locked while one is encoded; the loop only takes their
//! write lock to add or remove a mirror's series (at start, at reload, and for a mirror whose
//! series were never made), so a scrape of 10,000 mirrors never holds up an update's end.
//!
//! Labels carry the mirror's name only (`[A-Za-z0-9._-]+`, validated): no URL, no user, no
//! secret can reach a label or a value.

pub(super) mod server;

pub use server::ListenError;
use server::MetricsServer;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hyper::body::Bytes;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info};

use super::Daemon;
use crate::config::MirrorName;
use crate::error::chain;
use crate::mirror::job::{JobError, JobOutcome};
use crate::store::state::{MirrorState, Timestamp, UpdateStatus};

/// Upper bounds of the update duration buckets, in seconds: from a no-op or a small push
/// (under a second) to a first sync of a large repository (the 1 h default timeout). Few
/// buckets on purpose: each is one series per mirror, and a server has thousands.
const DURATION_BUCKETS: [f64; 6] = [1.0, 5.0, 30.0, 120.0, 600.0, 3600.0];

/// The label of every per-mirror series: the mirror's name, nothing else.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MirrorLabels {
    mirror: String,
}

/// The labels of `pushmirror_updates_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpdateLabels {
    mirror: String,
    outcome: Outcome,
}

/// How an update ended, as `pushmirror_updates_total` counts it: what the scheduler does
/// next, so that `retry` + `failed` are all failed attempts and `failed` the streaks' ends.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(super) enum Outcome {
    Finished,
    /// Failed after its retries, or permanently at once.
    Failed,
    /// A transient failure that will be retried (`to_retry`), or an update that could not
    /// even start (another process held the mirror's lock, its state could not be read).
    Retry,
}

impl Outcome {
    const ALL: [Outcome; 3] = [Outcome::Finished, Outcome::Failed, Outcome::Retry];

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Finished => "finished",
            Outcome::Failed => "failed",
            Outcome::Retry => "retry",
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// What the loop answers a [`Probe`] with: the counts only its table knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct LoopCounts {
    /// Mirrors with an update waiting (its window, a retry's backoff, a permit) or running.
    pub(super) pending: usize,
    /// Updates running (dispatched, holding or waiting for a permit).
    pub(super) running: usize,
}

/// A question to the daemon's loop from the HTTP side: answering it at all proves the loop
/// turns (`/healthz`), and the answer gives `/metrics` the loop's counts.
pub(super) type Probe = oneshot::Sender<LoopCounts>;

/// The pushes not yet mirrored, per mirror (`pushmirror_oldest_pending_seconds`).
#[derive(Debug, Default)]
struct Lag {
    mirrors: HashMap<MirrorName, Unmirrored>,
}

/// The oldest pushes of one mirror that no successful update has covered yet.
#[derive(Debug, Default, Clone, Copy)]
struct Unmirrored {
    /// The oldest push that the next successful update ends (it came before that update read
    /// the local refs).
    before_read: Option<SystemTime>,
    /// The oldest push that came while an update ran, after it had read the refs: that
    /// update does not carry it; the one after does.
    after_read: Option<SystemTime>,
}

impl Unmirrored {
    fn oldest(&self) -> Option<SystemTime> {
        earliest(self.before_read, self.after_read)
    }
}

fn earliest(a: Option<SystemTime>, b: Option<SystemTime>) -> Option<SystemTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Every series the daemon exposes, and the registries that encode them: the per-mirror
/// families in one, whose text is kept until one of them changes (a scrape of an idle
/// daemon with 10,000 mirrors then costs a copy of a reference, not an encoding of 150,000
/// samples), and the daemon-wide series in the other, encoded at every scrape.
pub(super) struct Metrics {
    per_mirror: Registry,
    daemon_wide: Registry,
    /// Bumped by every change of a per-mirror series.
    generation: AtomicU64,
    /// The per-mirror text of the generation it was encoded at.
    per_mirror_text: Mutex<Option<(u64, Bytes)>>,
    updates: Family<UpdateLabels, Counter>,
    duration: Family<MirrorLabels, Histogram, fn() -> Histogram>,
    last_success: Family<MirrorLabels, Gauge<f64, AtomicU64>>,
    failing: Family<MirrorLabels, Gauge>,
    lfs_uploaded: Family<MirrorLabels, Counter>,
    drift_refs: Family<MirrorLabels, Gauge>,
    drift_checked: Family<MirrorLabels, Gauge<f64, AtomicU64>>,
    notifications: Counter,
    pending: Gauge,
    running: Gauge,
    oldest_pending: Gauge<f64, AtomicU64>,
    /// Held for a few map operations by the loop, and by a scrape for one pass over the
    /// mirrors with unmirrored pushes (idle mirrors are not in it).
    lag: Mutex<Lag>,
}

impl Metrics {
    pub(super) fn new() -> Metrics {
        let metrics = Metrics {
            per_mirror: Registry::default(),
            daemon_wide: Registry::default(),
            generation: AtomicU64::new(0),
            per_mirror_text: Mutex::new(None),
            updates: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new(DURATION_BUCKETS.iter().copied())
            }),
            last_success: Family::default(),
            failing: Family::default(),
            lfs_uploaded: Family::default(),
            drift_refs: Family::default(),
            drift_checked: Family::default(),
            notifications: Counter::default(),
            pending: Gauge::default(),
            running: Gauge::default(),
            oldest_pending: Gauge::default(),
            lag: Mutex::new(Lag::default()),
        };
        metrics.register()
    }

    /// Registers every family under its exposed name (counters get `_total` from the
    /// library).
    fn register(mut self) -> Metrics {
        let r = &mut self.per_mirror;
        r.register(
            "pushmirror_updates",
            "Updates of each mirror by how they ended: finished, failed (after the retries, \
             or permanently) or retry (a transient failure that will be retried)",
            self.updates.clone(),
        );
        r.register(
            "pushmirror_update_duration_seconds",
            "How long each mirror's updates took, from start to recorded end",
            self.duration.clone(),
        );
        r.register(
            "pushmirror_last_success_timestamp_seconds",
            "When each mirror's last successful update ended (Unix time); absent until one has",
            self.last_success.clone(),
        );
        r.register(
            "pushmirror_mirror_failing",
            "1 from the update that left the mirror failed until its next finished update, \
             else 0",
            self.failing.clone(),
        );
        r.register(
            "pushmirror_lfs_uploaded_bytes",
            "Bytes of LFS objects uploaded to each mirror's LFS server",
            self.lfs_uploaded.clone(),
        );
        r.register(
            "pushmirror_drift_refs",
            "Refs whose remote value differs from what the mirror should hold, as the last \
             plan or verify of the mirror read them; absent until one ran",
            self.drift_refs.clone(),
        );
        r.register(
            "pushmirror_drift_checked_timestamp_seconds",
            "When the last plan or verify read the mirror's remote (Unix time)",
            self.drift_checked.clone(),
        );
        let r = &mut self.daemon_wide;
        r.register(
            "pushmirror_notifications",
            "Push notifications the daemon took in (from the hook, or from its spool)",
            self.notifications.clone(),
        );
        r.register(
            "pushmirror_mirrors_pending",
            "Mirrors with an update waiting (for its window, a retry or a free slot) or running",
            self.pending.clone(),
        );
        r.register(
            "pushmirror_updates_running",
            "Updates in flight (at most max_parallel_pushes hold a slot)",
            self.running.clone(),
        );
        r.register(
            "pushmirror_oldest_pending_seconds",
            "Age of the oldest push not yet mirrored (0 when every push is): the lag",
            self.oldest_pending.clone(),
        );
        self
    }

    /// Makes the series of a mirror the daemon starts tracking, from its stored state, so
    /// that a restart keeps its last success and whether it is failing.
    pub(super) fn track(&self, name: &MirrorName, state: &MirrorState) {
        self.changed();
        let labels = labels(name);
        for outcome in Outcome::ALL {
            drop(self.updates.get_or_create(&UpdateLabels {
                mirror: labels.mirror.clone(),
                outcome,
            }));
        }
        drop(self.duration.get_or_create(&labels));
        drop(self.lfs_uploaded.get_or_create(&labels));
        if let Some(at) = state.last_successful_update_at {
            self.last_success
                .get_or_create(&labels)
                .set(unix_seconds(at));
        }
        self.failing
            .get_or_create(&labels)
            .set(i64::from(is_failing(state)));
    }

    /// Drops every series and the lag of a mirror removed from the configuration.
    pub(super) fn forget(&self, name: &MirrorName) {
        self.changed();
        let labels = labels(name);
        for outcome in Outcome::ALL {
            self.updates.remove(&UpdateLabels {
                mirror: labels.mirror.clone(),
                outcome,
            });
        }
        self.duration.remove(&labels);
        self.last_success.remove(&labels);
        self.failing.remove(&labels);
        self.lfs_uploaded.remove(&labels);
        self.drift_refs.remove(&labels);
        self.drift_checked.remove(&labels);
        self.lock_lag().mirrors.remove(name);
    }

    /// Counts `count` notifications taken in.
    pub(super) fn notifications(&self, count: usize) {
        self.notifications
            .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
    }

    /// Records that `name` has a push to mirror since `at`; `after_read` when an update of it
    /// is running and has read the local refs already (so the push waits for the next one).
    pub(super) fn unmirrored(&self, name: &MirrorName, at: SystemTime, after_read: bool) {
        let mut lag = self.lock_lag();
        let entry = lag.mirrors.entry(name.clone()).or_default();
        let slot = if after_read {
            &mut entry.after_read
        } else {
            &mut entry.before_read
        };
        *slot = earliest(*slot, Some(at));
    }

    /// Forgets the pushes waiting for `name` (disabled: nothing will mirror them).
    pub(super) fn nothing_pending(&self, name: &MirrorName) {
        self.lock_lag().mirrors.remove(name);
    }

    /// Records the end of an update of `name`.
    pub(super) fn update_ended(&self, name: &MirrorName, outcome: &Result<JobOutcome, JobError>) {
        self.changed();
        let labels = labels(name);
        let ended = match outcome {
            Ok(JobOutcome::Ran { state, .. }) => {
                // The state holds what this update uploaded (the job records it each time).
                if state.lfs_bytes_uploaded > 0 {
                    self.record_lfs_upload(name, state.lfs_bytes_uploaded);
                }
                if let Some(last) = state.history.back() {
                    self.duration
                        .get_or_create(&labels)
                        .observe(Duration::from_millis(last.duration_ms).as_secs_f64());
                }
                match state.update_status {
                    UpdateStatus::Finished => {
                        if let Some(at) = state.last_successful_update_at {
                            self.last_success
                                .get_or_create(&labels)
                                .set(unix_seconds(at));
                        }
                        self.failing.get_or_create(&labels).set(0);
                        Outcome::Finished
                    }
                    UpdateStatus::ToRetry => Outcome::Retry,
                    _ => {
                        self.failing.get_or_create(&labels).set(1);
                        Outcome::Failed
                    }
                }
            }
            // Nothing ran; the scheduler retries it as a transient failure.
            Ok(JobOutcome::Busy) | Err(_) => Outcome::Retry,
        };
        self.updates
            .get_or_create(&UpdateLabels {
                mirror: labels.mirror,
                outcome: ended,
            })
            .inc();
        let mut lag = self.lock_lag();
        if let Some(entry) = lag.mirrors.get_mut(name) {
            *entry = match ended {
                // The pushes it read are mirrored; those after its read are next.
                Outcome::Finished => Unmirrored {
                    before_read: entry.after_read,
                    after_read: None,
                },
                // Nothing is mirrored; the next update reads everything again.
                Outcome::Failed | Outcome::Retry => Unmirrored {
                    before_read: entry.oldest(),
                    after_read: None,
                },
            };
            if entry.oldest().is_none() {
                lag.mirrors.remove(name);
            }
        }
    }

    /// Adds `bytes` of LFS objects uploaded to `name`'s LFS server.
    pub(super) fn record_lfs_upload(&self, name: &MirrorName, bytes: u64) {
        self.changed();
        self.lfs_uploaded.get_or_create(&labels(name)).inc_by(bytes);
    }

    /// Records what a plan or verify of `name` found at `at`: `differing` refs.
    pub(super) fn drift(&self, name: &MirrorName, differing: usize, at: SystemTime) {
        self.changed();
        let labels = labels(name);
        self.drift_refs
            .get_or_create(&labels)
            .set(i64::try_from(differing).unwrap_or(i64::MAX));
        self.drift_checked.get_or_create(&labels).set(
            at.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_secs_f64(),
        );
    }

    /// Marks the per-mirror text out of date. Called before the change: an encoding that
    /// overlaps the change is then either newer than the mark or encoded again next time.
    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Returns every series in the Prometheus text format, with the loop's `counts` (none:
    /// the loop did not answer, and the last counts stay) and the lag as of `now`: the
    /// per-mirror part (encoded again only if it changed since the last time) and the
    /// daemon-wide part.
    pub(super) fn encode(&self, counts: Option<LoopCounts>, now: SystemTime) -> Bytes {
        if let Some(counts) = counts {
            self.pending.set(gauge_value(counts.pending));
            self.running.set(gauge_value(counts.running));
        }
        self.oldest_pending.set(self.oldest_pending_seconds(now));
        let per_mirror = self.per_mirror_text();
        let daemon_wide = text_of(&self.daemon_wide);
        // One copy (a few milliseconds for 10,000 mirrors) buys a body of one buffer.
        let mut body = Vec::with_capacity(per_mirror.len() + daemon_wide.len());
        body.extend_from_slice(&per_mirror);
        body.extend_from_slice(daemon_wide.as_bytes());
        Bytes::from(body)
    }

    /// Returns the per-mirror text, from the last encoding if nothing changed since.
    fn per_mirror_text(&self) -> Bytes {
        let generation = self.generation.load(Ordering::SeqCst);
        let mut cached = self
            .per_mirror_text
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((at, text)) = cached.as_ref()
            && *at == generation
        {
            return text.clone();
        }
        let text = Bytes::from(text_of(&self.per_mirror));
        *cached = Some((generation, text.clone()));
        text
    }

    /// Returns the age of the oldest push not yet mirrored, in seconds (0 when none waits).
    fn oldest_pending_seconds(&self, now: SystemTime) -> f64 {
        let oldest = self
            .lock_lag()
            .mirrors
            .values()
            .filter_map(Unmirrored::oldest)
            .min();
        oldest.map_or(0.0, |oldest| {
            now.duration_since(oldest)
                .unwrap_or(Duration::ZERO)
                .as_secs_f64()
        })
    }

    fn lock_lag(&self) -> std::sync::MutexGuard<'_, Lag> {
        // A panic while holding it leaves a map that is still consistent: keep using it.
        self.lag
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Returns `registry` in the Prometheus text format.
fn text_of(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail; an encoding error would be the library's bug, and
    // leaves what was written so far.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, registry);
    text
}

fn labels(name: &MirrorName) -> MirrorLabels {
    MirrorLabels {
        mirror: name.to_string(),
    }
}

fn gauge_value(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Returns `at` as Unix seconds (0 before 1970).
fn unix_seconds(at: Timestamp) -> f64 {
    at.0.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// Returns true if the mirror's failure streak has not ended: its last update that did not
/// end `to_retry` ended `failed` (a retry after a failure keeps the streak going).
fn is_failing(state: &MirrorState) -> bool {
    if state.update_status == UpdateStatus::Failed {
        return true;
    }
    state
        .history
        .iter()
        .rev()
        .map(|update| update.outcome)
        .find(|outcome| *outcome != UpdateStatus::ToRetry)
        == Some(UpdateStatus::Failed)
}

/// Shared between the loop (which records) and the HTTP side (which encodes).
pub(super) type SharedMetrics = Arc<Metrics>;

/// Requests of the HTTP side waiting for the loop; more wait to be queued, within their
/// own timeout.
const PROBE_QUEUE: usize = 16;

/// The daemon's share of metrics: the series, the listener serving them, and the channel
/// through which the listener asks the loop.
pub(super) struct Exporter {
    pub(super) metrics: SharedMetrics,
    server: Option<MetricsServer>,
    probes: mpsc::Sender<Probe>,
    /// Taken by the loop when it starts (see [`Exporter::take_probes`]).
    probe_rx: Option<mpsc::Receiver<Probe>>,
}

impl Exporter {
    pub(super) fn new() -> Exporter {
        let (probes, probe_rx) = mpsc::channel(PROBE_QUEUE);
        Exporter {
            metrics: Arc::new(Metrics::new()),
            server: None,
            probes,
            probe_rx: Some(probe_rx),
        }
    }

    /// Returns the receiver of the listener's probes, for the loop to answer; a receiver
    /// that never yields on a second call.
    pub(super) fn take_probes(&mut self) -> mpsc::Receiver<Probe> {
        self.probe_rx.take().unwrap_or_else(|| mpsc::channel(1).1)
    }

    /// Starts serving on `listen`, if set (at daemon start: a port that cannot be bound
    /// stops the daemon, as the control socket does).
    pub(super) fn listen(&mut self, listen: Option<SocketAddr>) -> Result<(), ListenError> {
        let Some(addr) = listen else {
            return Ok(());
        };
        let listener = server::bind(addr)?;
        self.server = Some(server::spawn(
            addr,
            listener,
            self.metrics.clone(),
            self.probes.clone(),
        )?);
        Ok(())
    }

    /// Follows a reload's `metrics_listen`: a new address is bound first, and only then is
    /// the old listener stopped, so that a port that cannot be bound keeps the old one
    /// serving (logged); removed, the listener stops.
    pub(super) fn reconfigure(&mut self, listen: Option<SocketAddr>) {
        let current = self.server.as_ref().map(|s| s.configured);
        if current == listen {
            return;
        }
        let Some(addr) = listen else {
            self.stop();
            info!("metrics listener stopped: `metrics_listen` was removed");
            return;
        };
        let started = server::bind(addr).and_then(|listener| {
            server::spawn(addr, listener, self.metrics.clone(), self.probes.clone())
        });
        match started {
            Ok(server) => {
                self.stop();
                self.server = Some(server);
            }
            Err(e) => error!(
                error = %chain(&e),
                "the new `metrics_listen` is not in force; the old listener stays"
            ),
        }
    }

    /// Stops the listener, if one runs.
    pub(super) fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop();
        }
    }
}

impl Daemon {
    /// Answers the listener's probe with the counts of the loop's table.
    pub(super) fn answer_probe(&self, probe: Probe) {
        let pending = self
            .mirrors
            .values()
            .filter(|t| t.schedule.is_pending())
            .count();
        let _ = probe.send(LoopCounts {
            pending,
            running: self.running,
        });
    }
}

#[cfg(test)]
mod tests;
