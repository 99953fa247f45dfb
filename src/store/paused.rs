//! The mirrors paused by `pushmirror pause` (SPEC.md section 2): one small file,
//! `<state_dir>/paused.json`, replaced atomically at every pause and resume, so that a paused
//! mirror stays paused across a stop, a crash or `kill -9`.
//!
//! The file holds only the names. What a paused mirror has pending is not kept here: the
//! queue and the state files hold it as they do for any mirror (notifications and forced
//! syncs are journalled before they are answered), and the daemon simply does not start the
//! update while the mirror is paused.
//!
//! Boundary: an on-disk format (`version`; readers ignore unknown fields). A file that does
//! not parse is set aside as `paused.json.corrupt-<unix time>` and reported.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// The file's name under `state_dir`.
pub const PAUSED_FILE: &str = "paused.json";

const PAUSED_VERSION: u32 = 1;

/// The file's content.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct PausedFile {
    version: u32,
    /// Names of the paused mirrors, sorted.
    mirrors: BTreeSet<String>,
}

/// Why the paused mirrors could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PausedError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A paused file that did not parse and was set aside.
#[derive(Debug)]
pub struct SetAside {
    pub moved_to: PathBuf,
    pub reason: String,
}

/// The handle to `<state_dir>/paused.json`. Clones share one write lock, so that writes made
/// from several blocking tasks land in the order of their generations.
#[derive(Debug, Clone)]
pub struct PausedStore {
    path: PathBuf,
    /// The generation last written: an older snapshot arriving late is not written over a
    /// newer one.
    written: Arc<Mutex<u64>>,
}

impl PausedStore {
    pub fn new(state_dir: &Path) -> PausedStore {
        PausedStore {
            path: state_dir.join(PAUSED_FILE),
            written: Arc::new(Mutex::new(0)),
        }
    }

    /// Returns the paused mirrors (none when the file does not exist). A file that does not
    /// parse is renamed aside and reported with an empty set.
    pub fn load(&self) -> Result<(BTreeSet<String>, Option<SetAside>), PausedError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((BTreeSet::new(), None)),
            Err(source) => {
                return Err(PausedError::Read {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        match serde_json::from_slice::<PausedFile>(&bytes) {
            Ok(file) => Ok((file.mirrors, None)),
            Err(e) => {
                let unix = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or(Duration::ZERO)
                    .as_secs();
                let moved_to = self
                    .path
                    .with_file_name(format!("{PAUSED_FILE}.corrupt-{unix}"));
                std::fs::rename(&self.path, &moved_to).map_err(|source| PausedError::Write {
                    path: self.path.clone(),
                    source,
                })?;
                Ok((
                    BTreeSet::new(),
                    Some(SetAside {
                        moved_to,
                        reason: e.to_string(),
                    }),
                ))
            }
        }
    }

    /// Writes `mirrors` as the paused set of generation `generation`, atomically; a
    /// generation not newer than the last one written is skipped (a newer set is on disk).
    pub fn save(&self, generation: u64, mirrors: &BTreeSet<String>) -> Result<(), PausedError> {
        // A poisoned lock only means another writer panicked; the number is still right.
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if generation <= *written {
            return Ok(());
        }
        let file = PausedFile {
            version: PAUSED_VERSION,
            mirrors: mirrors.clone(),
        };
        let json = serde_json::to_vec_pretty(&file).expect("the paused set always serializes");
        super::write_atomically(&self.path, &json, 0o600).map_err(|source| PausedError::Write {
            path: self.path.clone(),
            source,
        })?;
        *written = generation;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_sets_load_back_and_late_generations_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = PausedStore::new(dir.path());
        assert!(store.load().expect("load").0.is_empty());
        let two: BTreeSet<String> = ["a".into(), "b".into()].into();
        store.save(2, &two).expect("save");
        store.save(1, &BTreeSet::new()).expect("late write");
        assert_eq!(store.load().expect("load").0, two);
        // A fresh handle (a restarted daemon) writes from generation 1 again.
        let again = PausedStore::new(dir.path());
        again.save(1, &BTreeSet::new()).expect("save");
        assert!(again.load().expect("load").0.is_empty());
    }

    #[test]
    fn a_corrupt_file_is_set_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(PAUSED_FILE), b"{\"mirrors\": [\"a\"").expect("write");
        let (set, aside) = PausedStore::new(dir.path()).load().expect("load");
        assert!(set.is_empty());
        assert!(aside.expect("set aside").moved_to.exists());
    }
}
