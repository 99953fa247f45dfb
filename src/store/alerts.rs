//! What alerting must not forget (SPEC.md section 11): whether each mirror's current failure
//! streak was announced, and the events not yet delivered. One JSON file per mirror,
//! `<state_dir>/alerts/<name>.json`, replaced atomically, written only by the daemon's alerts
//! task (`daemon::alerts`), so no two writers race.
//!
//! The streak and the events that it caused are in the same file, written in one atomic
//! replace: a crash leaves either the streak unopened and no event (the daemon then opens it
//! at start from the mirror's state file, which says `failed`), or both. So a failure is
//! announced once, never twice and never forgotten; a delivery cut short by a crash is made
//! again after the restart.
//!
//! Boundary: an on-disk format (`version`; readers ignore unknown fields and default missing
//! ones; a file that does not parse is set aside as `<name>.json.corrupt-<unix time>`).

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::state::{Timestamp, UpdateStatus};
use crate::config::MirrorName;

/// The directory of the alert files, under `state_dir`.
pub const ALERTS_DIR: &str = "alerts";

const ALERTS_VERSION: u32 = 1;

/// Which transition an event announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// The mirror entered `failed` (after its retries).
    MirrorFailed,
    /// The mirror finished an update after a streak that was announced.
    MirrorRecovered,
}

/// One event, exactly the JSON object of SPEC.md section 11 that receivers get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub event: AlertKind,
    pub mirror: String,
    pub repo: String,
    /// Masked: `https://*****:*****@host/path`.
    pub url: String,
    pub update_status: UpdateStatus,
    /// The mirror's `last_error` (credentials masked); `null` for `mirror_recovered`.
    pub error: Option<String>,
    /// When the streak's first failed attempt ended.
    pub failing_since: Option<Timestamp>,
    /// When the transition happened (the end of the update that caused it).
    pub at: Timestamp,
}

/// An event with the receivers that still have to get it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingAlert {
    /// Unique within the mirror's file.
    pub id: u64,
    pub event: AlertEvent,
    /// Still to POST to `webhook_url`.
    pub webhook: bool,
    /// Still to give to `command`.
    pub command: bool,
}

/// The content of one mirror's alert file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MirrorAlerts {
    pub version: u32,
    /// Set while a failure streak is open and was announced: when it began.
    pub streak_since: Option<Timestamp>,
    /// Whether a streak is open (announced with `mirror_failed`, not yet recovered).
    pub failing: bool,
    pub next_id: u64,
    pub pending: Vec<PendingAlert>,
}

impl Default for MirrorAlerts {
    fn default() -> Self {
        MirrorAlerts {
            version: ALERTS_VERSION,
            streak_since: None,
            failing: false,
            next_id: 1,
            pending: Vec::new(),
        }
    }
}

/// Why an alert file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum AlertStoreError {
    #[error("cannot create the alerts directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read alert file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write alert file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The directory of alert files.
#[derive(Debug, Clone)]
pub struct AlertStore {
    dir: PathBuf,
}

impl AlertStore {
    /// Opens (creating it, mode 0700) `<state_dir>/alerts`.
    pub fn open(state_dir: &Path) -> Result<AlertStore, AlertStoreError> {
        let dir = state_dir.join(ALERTS_DIR);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| AlertStoreError::CreateDir {
                path: dir.clone(),
                source,
            })?;
        Ok(AlertStore { dir })
    }

    /// The directory, for the sweep of temporary files at start.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Returns the names of the mirrors that have an alert file.
    pub fn names(&self) -> Vec<MirrorName> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                MirrorName::new(name.strip_suffix(".json")?)
            })
            .collect()
    }

    /// Returns the alert file of `name` (the default when it has none). A file that does not
    /// parse is renamed aside, reported in the second value, and the default returned.
    pub fn load(
        &self,
        name: &MirrorName,
    ) -> Result<(MirrorAlerts, Option<String>), AlertStoreError> {
        let path = self.path(name.as_str());
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok((MirrorAlerts::default(), None));
            }
            Err(source) => return Err(AlertStoreError::Read { path, source }),
        };
        match serde_json::from_slice(&bytes) {
            Ok(alerts) => Ok((alerts, None)),
            Err(e) => {
                let unix = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or(Duration::ZERO)
                    .as_secs();
                let moved_to = self.dir.join(format!("{name}.json.corrupt-{unix}"));
                std::fs::rename(&path, &moved_to).map_err(|source| AlertStoreError::Write {
                    path: path.clone(),
                    source,
                })?;
                Ok((
                    MirrorAlerts::default(),
                    Some(format!(
                        "{} set aside as {}: {e}",
                        path.display(),
                        moved_to.display()
                    )),
                ))
            }
        }
    }

    /// Writes the alert file of `name` atomically.
    pub fn save(&self, name: &MirrorName, alerts: &MirrorAlerts) -> Result<(), AlertStoreError> {
        let path = self.path(name.as_str());
        let json = serde_json::to_vec_pretty(alerts).expect("alert files always serialize");
        super::write_atomically(&path, &json, 0o600)
            .map_err(|source| AlertStoreError::Write { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_and_the_event_has_the_documented_fields() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = AlertStore::open(dir.path()).expect("open");
        let name = MirrorName::new("m").expect("name");
        let at = Timestamp(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000));
        let event = AlertEvent {
            event: AlertKind::MirrorFailed,
            mirror: "m".into(),
            repo: "/srv/git/app.git".into(),
            url: "https://*****:*****@github.com/acme/app.git".into(),
            update_status: UpdateStatus::Failed,
            error: Some("the remote refused the credentials".into()),
            failing_since: Some(at),
            at,
        };
        assert_eq!(
            serde_json::to_string(&event).expect("json"),
            "{\"event\":\"mirror_failed\",\"mirror\":\"m\",\"repo\":\"/srv/git/app.git\",\
             \"url\":\"https://*****:*****@github.com/acme/app.git\",\"update_status\":\"failed\",\
             \"error\":\"the remote refused the credentials\",\
             \"failing_since\":\"2027-01-15T08:00:00.000Z\",\"at\":\"2027-01-15T08:00:00.000Z\"}"
        );
        let alerts = MirrorAlerts {
            failing: true,
            streak_since: Some(at),
            next_id: 2,
            pending: vec![PendingAlert {
                id: 1,
                event,
                webhook: true,
                command: false,
            }],
            ..MirrorAlerts::default()
        };
        store.save(&name, &alerts).expect("save");
        assert_eq!(store.load(&name).expect("load").0, alerts);
        assert_eq!(store.names(), vec![name.clone()]);
        std::fs::write(dir.path().join("alerts/m.json"), "{").expect("corrupt");
        let (loaded, aside) = store.load(&name).expect("load corrupt");
        assert_eq!(loaded, MirrorAlerts::default());
        assert!(aside.is_some());
    }
}
