//! The persisted per-mirror status of SPEC section 6: the only types that touch disk.
//!
//! One JSON file per mirror, `<state_dir>/mirrors/<name>.json`, so that an update rewrites a
//! few hundred bytes however many mirrors there are. Writes are atomic: write a temporary file,
//! fsync it, rename it over the old one, fsync the directory. Reads are tolerant: unknown
//! fields are ignored, missing ones take their defaults, and a file that does not parse is set
//! aside as `<name>.json.corrupt-<unix time>` and reported, never a crash.
//!
//! Boundary: the on-disk format. `version` is bumped on incompatible changes; a reader must
//! keep loading every older version (see the checked-in sample in the tests).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::MirrorName;

/// The version written by this build.
pub const STATE_VERSION: u32 = 1;

/// The directory of the state files, under `state_dir`.
pub const MIRRORS_DIR: &str = "mirrors";

/// Update summaries kept per mirror.
pub const HISTORY_LEN: usize = 20;

/// `update_status` of SPEC section 6 (GitLab's state machine plus `scheduled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateStatus {
    #[default]
    None,
    Scheduled,
    Started,
    Finished,
    Failed,
    ToRetry,
}

impl UpdateStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateStatus::None => "none",
            UpdateStatus::Scheduled => "scheduled",
            UpdateStatus::Started => "started",
            UpdateStatus::Finished => "finished",
            UpdateStatus::Failed => "failed",
            UpdateStatus::ToRetry => "to_retry",
        }
    }
}

/// A point in time, stored as RFC 3339 UTC with seconds (`2026-11-22T19:53:27Z`).
///
/// RFC 3339 writes years 0000 to 9999 and humantime only times since 1970, so a time outside
/// those (a clock set wrong, a due time far ahead) is written as the nearest one it can
/// write: formatting a timestamp never fails, and what is written always reads back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub SystemTime);

/// Milliseconds from 1970 to the last millisecond of year 9999, the latest time RFC 3339 can
/// write.
const LATEST_UNIX_MILLIS: u64 = 253_402_300_799_999;

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp(SystemTime::now())
    }

    /// Returns the latest time a timestamp can write: 9999-12-31T23:59:59.999Z.
    pub fn latest() -> Timestamp {
        Timestamp(SystemTime::UNIX_EPOCH + Duration::from_millis(LATEST_UNIX_MILLIS))
    }

    /// Returns the time `wait` after this one, or [`Timestamp::latest`] if that is later.
    pub fn saturating_add(self, wait: Duration) -> Timestamp {
        let latest = Timestamp::latest();
        self.0
            .checked_add(wait)
            .map_or(latest, |later| Timestamp(later).min(latest))
    }

    /// Returns the time in RFC 3339 UTC, to the millisecond, clamped to what RFC 3339 and
    /// humantime can write (1970 to 9999).
    pub fn rfc3339(&self) -> String {
        let writable = self.0.clamp(SystemTime::UNIX_EPOCH, Timestamp::latest().0);
        humantime::format_rfc3339_millis(writable).to_string()
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339(&text)
            .map(Timestamp)
            .map_err(serde::de::Error::custom)
    }
}

/// A ref the remote refused, with its reason in the remote's words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedRef {
    #[serde(rename = "ref")]
    pub refname: String,
    pub reason: String,
}

/// What started an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// A push notified by the post-receive hook.
    Push,
    /// `pushmirror sync`, SIGUSR1 or `pushmirror update`.
    Forced,
    /// A retry of a transient failure.
    Retry,
    /// Taken up again at daemon start (pending before a stop, or local refs changed).
    Startup,
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Trigger::Push => "push",
            Trigger::Forced => "forced",
            Trigger::Retry => "retry",
            Trigger::Startup => "startup",
        })
    }
}

/// Ref counts of one update.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RefCounts {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
}

/// One past update, for `status` and post-mortems.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateSummary {
    pub trigger: Trigger,
    pub started_at: Timestamp,
    pub duration_ms: u64,
    #[serde(flatten)]
    pub counts: RefCounts,
    /// `finished`, `failed` or `to_retry`.
    pub outcome: UpdateStatus,
    pub error: Option<String>,
}

/// The persisted status of one mirror.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MirrorState {
    pub version: u32,
    pub update_status: UpdateStatus,
    pub last_update_started_at: Option<Timestamp>,
    /// The last finished or failed attempt.
    pub last_update_at: Option<Timestamp>,
    pub last_successful_update_at: Option<Timestamp>,
    pub next_update_at: Option<Timestamp>,
    /// Credentials masked.
    pub last_error: Option<String>,
    pub divergent_refs: Vec<String>,
    pub rejected_refs: Vec<RejectedRef>,
    /// Of the last update.
    #[serde(flatten)]
    pub counts: RefCounts,
    /// Transient failures in a row; reset by a success or a fresh trigger.
    pub retries: u32,
    /// A digest of the mirrored local refs at the last success: at start the daemon updates
    /// every mirror whose refs changed since.
    pub fingerprint: Option<String>,
    /// The last [`HISTORY_LEN`] updates, oldest first.
    pub history: VecDeque<UpdateSummary>,
    // Git LFS (SPEC sections 6 and 9), by the last update; see `MirrorState::record_lfs`.
    pub lfs_objects_uploaded: u64,
    pub lfs_bytes_uploaded: u64,
    /// Objects the remote's LFS server lacks and the local store lacks too, with the refs
    /// that need them (those refs were not pushed).
    pub lfs_missing: Vec<LfsMissing>,
}

/// An LFS object missing from the local store, and the refs that need it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LfsMissing {
    pub oid: String,
    pub refs: Vec<String>,
}

impl Default for MirrorState {
    fn default() -> Self {
        MirrorState {
            version: STATE_VERSION,
            update_status: UpdateStatus::None,
            last_update_started_at: None,
            last_update_at: None,
            last_successful_update_at: None,
            next_update_at: None,
            last_error: None,
            divergent_refs: Vec::new(),
            rejected_refs: Vec::new(),
            counts: RefCounts::default(),
            retries: 0,
            fingerprint: None,
            history: VecDeque::new(),
            lfs_objects_uploaded: 0,
            lfs_bytes_uploaded: 0,
            lfs_missing: Vec::new(),
        }
    }
}

/// How an update ended, as the state records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    Finished {
        fingerprint: Option<String>,
    },
    /// `to_retry` when `retry` is true, else `failed`.
    Failed {
        error: String,
        retry: bool,
        divergent_refs: Vec<String>,
        rejected_refs: Vec<RejectedRef>,
    },
}

impl MirrorState {
    /// Records that an update started at `now` (GitLab's `update_start`).
    pub fn start(&mut self, now: Timestamp) {
        self.update_status = UpdateStatus::Started;
        self.last_update_started_at = Some(now);
        self.next_update_at = None;
    }

    /// Records the end of the update that [`MirrorState::start`] recorded.
    pub fn end(&mut self, now: Timestamp, trigger: Trigger, counts: RefCounts, ending: Ending) {
        let started_at = self.last_update_started_at.unwrap_or(now);
        let duration_ms = now
            .0
            .duration_since(started_at.0)
            .unwrap_or(Duration::ZERO)
            .as_millis()
            .try_into()
            .unwrap_or(u64::MAX);
        self.last_update_at = Some(now);
        self.counts = counts;
        let (outcome, error) = match ending {
            Ending::Finished { fingerprint } => {
                self.update_status = UpdateStatus::Finished;
                self.last_successful_update_at = Some(now);
                self.last_error = None;
                self.divergent_refs.clear();
                self.rejected_refs.clear();
                self.retries = 0;
                self.fingerprint = fingerprint;
                (UpdateStatus::Finished, None)
            }
            Ending::Failed {
                error,
                retry,
                divergent_refs,
                rejected_refs,
            } => {
                self.update_status = if retry {
                    self.retries = self.retries.saturating_add(1);
                    UpdateStatus::ToRetry
                } else {
                    self.retries = 0;
                    UpdateStatus::Failed
                };
                self.last_error = Some(error.clone());
                self.divergent_refs = divergent_refs;
                self.rejected_refs = rejected_refs;
                (self.update_status, Some(error))
            }
        };
        self.history.push_back(UpdateSummary {
            trigger,
            started_at,
            duration_ms,
            counts,
            outcome,
            error,
        });
        while self.history.len() > HISTORY_LEN {
            self.history.pop_front();
        }
    }
}

impl MirrorState {
    /// Records what the LFS part of the update that just ended did (after
    /// [`MirrorState::end`]).
    pub fn record_lfs(&mut self, objects: u64, bytes: u64, missing: Vec<LfsMissing>) {
        self.lfs_objects_uploaded = objects;
        self.lfs_bytes_uploaded = bytes;
        self.lfs_missing = missing;
    }
}

/// Why the state store failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create state directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read state file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write state file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot lock state file {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A state file that could not be parsed and was set aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub path: PathBuf,
    pub moved_to: PathBuf,
    pub reason: String,
}

/// The directory of per-mirror state files.
#[derive(Debug, Clone)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    /// Opens (creating it, mode 0700) `<state_dir>/mirrors`.
    pub fn open(state_dir: &Path) -> Result<StateStore, StateError> {
        let dir = state_dir.join(MIRRORS_DIR);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| StateError::CreateDir {
                path: dir.clone(),
                source,
            })?;
        Ok(StateStore { dir })
    }

    fn path(&self, name: &MirrorName) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Returns the state of `name` (the default if it has none yet). A file that does not
    /// parse is renamed aside, and the default is returned with what was recovered.
    pub fn load(&self, name: &MirrorName) -> Result<(MirrorState, Option<Recovered>), StateError> {
        let path = self.path(name);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok((MirrorState::default(), None));
            }
            Err(source) => return Err(StateError::Read { path, source }),
        };
        match serde_json::from_slice::<MirrorState>(&bytes) {
            Ok(state) => Ok((state, None)),
            Err(e) => {
                let unix = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or(Duration::ZERO)
                    .as_secs();
                let moved_to = self.dir.join(format!("{name}.json.corrupt-{unix}"));
                fs::rename(&path, &moved_to).map_err(|source| StateError::Write {
                    path: path.clone(),
                    source,
                })?;
                let recovered = Recovered {
                    path,
                    moved_to,
                    reason: e.to_string(),
                };
                Ok((MirrorState::default(), Some(recovered)))
            }
        }
    }

    /// Writes the state of `name` atomically: temporary file, fsync, rename, fsync directory.
    pub fn save(&self, name: &MirrorName, state: &MirrorState) -> Result<(), StateError> {
        let path = self.path(name);
        let json = serde_json::to_vec_pretty(state).expect("mirror state always serializes");
        super::write_atomically(&path, &json, 0o600)
            .map_err(|source| StateError::Write { path, source })
    }

    /// Takes the per-mirror update lock, so that two processes (the daemon, a foreground
    /// `pushmirror update`) never update one mirror at once. Returns `None` if it is held.
    pub fn try_lock(&self, name: &MirrorName) -> Result<Option<UpdateLock>, StateError> {
        let path = self.dir.join(format!("{name}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| StateError::Lock {
                path: path.clone(),
                source,
            })?;
        match file.try_lock() {
            Ok(()) => Ok(Some(UpdateLock { file })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(source)) => Err(StateError::Lock { path, source }),
        }
    }
}

/// Held while a mirror is being updated; released on drop (or by the kernel if the process
/// dies).
#[derive(Debug)]
pub struct UpdateLock {
    file: File,
}

impl Drop for UpdateLock {
    /// Unlocks before the file is closed. An `flock` belongs to the open file, which every
    /// child forked meanwhile (git, for another mirror's update) shares until its `exec`:
    /// closing our descriptor alone left the lock held by such a child, and the mirror's
    /// next update found it busy ("another process was updating this mirror"). An explicit
    /// unlock releases it for every copy.
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> MirrorName {
        MirrorName::new(s).expect("valid test name")
    }

    fn at(secs: u64) -> Timestamp {
        Timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn times_rfc3339_cannot_write_are_clamped_and_read_back() {
        let latest = "9999-12-31T23:59:59.999Z";
        let far = Timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(100_000_000_000 * 3600));
        assert_eq!(far.rfc3339(), latest);
        assert_eq!(Timestamp::latest().rfc3339(), latest);
        let before_1970 = Timestamp(SystemTime::UNIX_EPOCH - Duration::from_secs(1));
        assert_eq!(before_1970.rfc3339(), "1970-01-01T00:00:00.000Z");
        let json = serde_json::to_string(&far).expect("serializes");
        let back: Timestamp = serde_json::from_str(&json).expect("reads back");
        assert_eq!(back, Timestamp::latest());
    }

    #[test]
    fn adding_to_a_timestamp_stops_at_the_latest() {
        assert_eq!(at(100).saturating_add(Duration::from_secs(5)), at(105));
        assert_eq!(at(100).saturating_add(Duration::MAX), Timestamp::latest());
        let year = Duration::from_secs(365 * 86_400);
        assert_eq!(
            Timestamp::latest().saturating_add(year),
            Timestamp::latest()
        );
    }

    #[test]
    fn the_retry_count_of_any_state_file_goes_up_without_overflow() {
        let mut state: MirrorState =
            serde_json::from_str(&format!("{{\"retries\": {}}}", u32::MAX)).expect("parses");
        state.start(at(100));
        let ending = Ending::Failed {
            error: "timed out".into(),
            retry: true,
            divergent_refs: Vec::new(),
            rejected_refs: Vec::new(),
        };
        state.end(at(101), Trigger::Retry, RefCounts::default(), ending);
        assert_eq!(state.retries, u32::MAX);
    }

    #[test]
    fn transitions_follow_gitlab() {
        let mut state = MirrorState::default();
        state.start(at(100));
        assert_eq!(state.update_status, UpdateStatus::Started);
        let counts = RefCounts {
            created: 2,
            updated: 1,
            deleted: 0,
        };
        state.end(
            at(103),
            Trigger::Push,
            counts,
            Ending::Finished {
                fingerprint: Some("f".into()),
            },
        );
        assert_eq!(state.update_status, UpdateStatus::Finished);
        assert_eq!(state.last_successful_update_at, Some(at(103)));
        assert_eq!(state.history.back().map(|h| h.duration_ms), Some(3000));

        state.start(at(200));
        state.end(
            at(201),
            Trigger::Push,
            RefCounts::default(),
            Ending::Failed {
                error: "cannot reach the remote".into(),
                retry: true,
                divergent_refs: vec![],
                rejected_refs: vec![],
            },
        );
        assert_eq!(state.update_status, UpdateStatus::ToRetry);
        assert_eq!(state.retries, 1);
        assert_eq!(state.last_update_at, Some(at(201)));
        assert_eq!(state.last_successful_update_at, Some(at(103)));
    }

    #[test]
    fn history_keeps_the_last_twenty() {
        let mut state = MirrorState::default();
        for i in 0..25 {
            state.start(at(i * 10));
            state.end(
                at(i * 10 + 1),
                Trigger::Forced,
                RefCounts::default(),
                Ending::Finished { fingerprint: None },
            );
        }
        assert_eq!(state.history.len(), HISTORY_LEN);
        assert_eq!(state.history.front().map(|h| h.started_at), Some(at(50)));
    }

    #[test]
    fn save_load_round_trip_and_corruption_is_recovered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path()).expect("open store");
        let n = name("app");
        let mut state = MirrorState::default();
        state.start(at(1_700_000_000));
        store.save(&n, &state).expect("save");
        let (loaded, recovered) = store.load(&n).expect("load");
        assert_eq!(loaded, state);
        assert_eq!(recovered, None);

        fs::write(
            dir.path().join("mirrors/app.json"),
            b"{\"version\": 1, \"update_st",
        )
        .expect("truncate");
        let (loaded, recovered) = store.load(&n).expect("load corrupt");
        assert_eq!(loaded, MirrorState::default());
        let recovered = recovered.expect("corruption reported");
        assert!(recovered.moved_to.exists(), "{recovered:?}");
        assert!(recovered.reason.contains("EOF"), "{recovered:?}");
        // The next load starts clean.
        assert_eq!(store.load(&n).expect("load again").1, None);
    }

    #[test]
    fn old_and_unknown_fields_load() {
        let text = r#"{"version": 1, "update_status": "failed", "last_error": "x",
                       "future_field": [1, 2], "last_update_at": "2026-01-02T03:04:05Z"}"#;
        let state: MirrorState = serde_json::from_str(text).expect("tolerant read");
        assert_eq!(state.update_status, UpdateStatus::Failed);
        assert_eq!(
            state.last_update_at.map(|t| t.rfc3339()).as_deref(),
            Some("2026-01-02T03:04:05.000Z")
        );
    }

    #[test]
    fn the_update_lock_is_exclusive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path()).expect("open store");
        let n = name("app");
        let held = store.try_lock(&n).expect("lock").expect("free");
        assert!(store.try_lock(&n).expect("lock").is_none());
        drop(held);
        assert!(store.try_lock(&n).expect("lock").is_some());
    }

    /// A child forked while the lock was held, and not yet at its `exec`, does not keep the
    /// lock once it is dropped (it did when the lock was released by closing the file).
    #[test]
    fn a_child_forked_while_the_lock_was_held_does_not_keep_it() {
        use std::io::Write as _;
        use std::os::fd::AsRawFd as _;
        use std::os::unix::process::CommandExt as _;

        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path()).expect("open store");
        let n = name("app");
        let held = store.try_lock(&n).expect("lock").expect("free");
        let (gate_read, gate_write) = std::io::pipe().expect("pipe");
        let gate = gate_read.as_raw_fd();
        // Opens the gate however the test ends, so the child never waits forever.
        struct Gate(std::io::PipeWriter);
        impl Drop for Gate {
            fn drop(&mut self) {
                let _ = self.0.write_all(b"x");
            }
        }
        let gate_write = Gate(gate_write);
        let mut child = std::process::Command::new("true");
        // SAFETY: the hook only calls read(2), which is async-signal-safe.
        unsafe {
            child.pre_exec(move || {
                let mut byte = 0u8;
                libc::read(gate, (&raw mut byte).cast(), 1);
                Ok(())
            });
        }
        // Held between fork and exec until the gate opens, with a copy of every descriptor.
        let spawner = std::thread::spawn(move || child.status().expect("run true"));
        let lock_file = dir.path().join(MIRRORS_DIR).join("app.lock");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !another_process_has_open(&lock_file) {
            assert!(
                std::time::Instant::now() < deadline,
                "the child never forked"
            );
            std::thread::yield_now();
        }
        drop(held);
        let again = store.try_lock(&n).expect("lock");
        drop(gate_write);
        drop(gate_read);
        assert!(spawner.join().expect("spawner").success());
        assert!(again.is_some(), "a forked child kept the lock");
    }

    /// Returns true if a process other than this one has `path` open.
    fn another_process_has_open(path: &Path) -> bool {
        let me = std::process::id().to_string();
        let Ok(processes) = fs::read_dir("/proc") else {
            return false;
        };
        processes.flatten().any(|p| {
            p.file_name().to_str().is_some_and(|pid| pid != me)
                && fs::read_dir(p.path().join("fd")).is_ok_and(|fds| {
                    fds.flatten()
                        .any(|fd| fs::read_link(fd.path()).is_ok_and(|target| target == path))
                })
        })
    }
}
