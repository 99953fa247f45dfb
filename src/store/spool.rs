//! The spool: where `pushmirror notify` leaves a notification when the daemon is down or does
//! not answer in time (SPEC.md section 7), and where the daemon takes it in when it starts
//! and whenever it is notified.
//!
//! One file per notification, `<state_dir>/spool/<unix-nanos>-<pid>.json`, holding the
//! [`Notification`] as JSON. One file each, so writers (many hooks at once, as different
//! users of the socket group) never contend and a reader never sees half a file: each is
//! written with `store::write_atomically` (hidden temporary name, fsync, rename, fsync of the
//! directory). Unlike state files these are written by the hook's user
//! and read by the daemon's, so the directory is `2770` (setgid: files take the directory's
//! group) and the files `0640`.
//!
//! Reading is tolerant: temporary files of writers still writing are skipped, and a file that
//! does not parse is set aside as `*.bad` with a warning, never a crash. The daemon removes a
//! file only after the notification is durable in its own queue.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::warn;

use super::write_atomically;
use crate::protocol::Notification;

/// Mode of the spool directory: owner and group may add and remove files, the setgid bit
/// makes new files belong to the directory's group.
const SPOOL_DIR_MODE: u32 = 0o2770;

/// Mode of a spooled file: readable by the group (the daemon may run as another user).
const SPOOL_FILE_MODE: u32 = 0o640;

/// Why a notification could not be spooled or a spooled one removed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the state directory {path} does not exist (has the daemon never run?)")]
    NoStateDir { path: PathBuf },
    #[error("cannot create the spool directory {path}")]
    CreateDir {
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
    #[error("cannot remove {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// One notification found in the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spooled {
    /// The file it was read from; give it back to [`remove`].
    pub path: PathBuf,
    pub notification: Notification,
}

/// Returns the spool directory of `state_dir`.
pub fn spool_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("spool")
}

/// Creates the spool directory of `state_dir` if missing (mode 2770, group of the state
/// directory) and returns it. The daemon calls this at start so that the directory is its
/// own; [`write`] does the same for a hook that finds it missing.
pub fn prepare(state_dir: &Path) -> Result<PathBuf, SpoolError> {
    let dir = spool_dir(state_dir);
    ensure_dir(state_dir, &dir)?;
    Ok(dir)
}

/// Writes `notification` durably into the spool of `state_dir` and returns the new file.
///
/// The spool directory is created if missing, but not the state directory: one made by the
/// hook's user could leave the daemon unable to write its own state.
pub fn write(state_dir: &Path, notification: &Notification) -> Result<PathBuf, SpoolError> {
    let dir = prepare(state_dir)?;
    let bytes = serde_json::to_vec(notification).expect("notifications always serialize");
    let pid = std::process::id();
    let mut nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // Names sort by time; one process writing twice within a nanosecond takes the next one.
    let mut path = dir.join(file_name(nanos, pid));
    while path.exists() {
        nanos += 1;
        path = dir.join(file_name(nanos, pid));
    }
    write_atomically(&path, &bytes, SPOOL_FILE_MODE).map_err(|source| SpoolError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

fn file_name(nanos: u128, pid: u32) -> String {
    // Zero-padded so that names also sort by time as plain strings (`ls`).
    format!("{nanos:020}-{pid}.json")
}

fn ensure_dir(state_dir: &Path, dir: &Path) -> Result<(), SpoolError> {
    if dir.is_dir() {
        return Ok(());
    }
    if !state_dir.is_dir() {
        return Err(SpoolError::NoStateDir {
            path: state_dir.to_owned(),
        });
    }
    let create_error = |source| SpoolError::CreateDir {
        path: dir.to_owned(),
        source,
    };
    match fs::create_dir(dir) {
        Ok(()) => {}
        // Another hook made it first.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(create_error(e)),
    }
    // The state directory's group is the one the daemon and the hooks share; a hook user
    // may only hand the directory to a group it belongs to, so failing here is not fatal
    // (the directory then has this user's group, which the operator can fix).
    if let Ok(meta) = fs::metadata(state_dir) {
        let _ = std::os::unix::fs::chown(dir, None, Some(meta.gid()));
    }
    // Explicitly, as the umask may have removed group bits at creation (and chown may have
    // cleared the setgid bit).
    fs::set_permissions(dir, fs::Permissions::from_mode(SPOOL_DIR_MODE)).map_err(create_error)?;
    File::open(state_dir)
        .and_then(|d| d.sync_all())
        .map_err(create_error)
}

/// Returns every notification in the spool of `state_dir`, oldest first. Files that do not
/// parse are renamed to `*.bad` and reported; unreadable ones are reported and left for the
/// next time; a missing spool is empty.
pub fn read_all(state_dir: &Path) -> Vec<Spooled> {
    let dir = spool_dir(state_dir);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            warn!(spool = %dir.display(), cause = %e, "cannot list the spool");
            return Vec::new();
        }
    };
    let mut found: Vec<((u128, u32), Spooled)> = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                warn!(spool = %dir.display(), cause = %e, "cannot list the spool");
                continue;
            }
        };
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        // Hidden names are writers still writing; `*.bad` and others are not ours to read.
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let path = entry.path();
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            // Taken in by another reader meanwhile.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                warn!(file = %path.display(), cause = %e, "cannot read a spooled notification");
                continue;
            }
        };
        match serde_json::from_slice::<Notification>(&bytes) {
            Ok(notification) => found.push((sort_key(name), Spooled { path, notification })),
            Err(e) => set_aside(&path, &e),
        }
    }
    found.sort_by(|(a, a_spooled), (b, b_spooled)| {
        a.cmp(b).then_with(|| a_spooled.path.cmp(&b_spooled.path))
    });
    found.into_iter().map(|(_, spooled)| spooled).collect()
}

/// Returns (nanos, pid) from `<nanos>-<pid>.json`; names of another shape sort first.
fn sort_key(name: &str) -> (u128, u32) {
    let stem = name.trim_end_matches(".json");
    let (nanos, pid) = stem.split_once('-').unwrap_or((stem, "0"));
    (nanos.parse().unwrap_or(0), pid.parse().unwrap_or(0))
}

fn set_aside(path: &Path, cause: &serde_json::Error) {
    let mut bad = path.as_os_str().to_owned();
    bad.push(".bad");
    match fs::rename(path, &bad) {
        Ok(()) => warn!(
            file = %path.display(),
            cause = %cause,
            "a spooled notification does not parse; set aside as .bad"
        ),
        Err(e) => warn!(
            file = %path.display(),
            cause = %cause,
            rename_error = %e,
            "a spooled notification does not parse and cannot be set aside"
        ),
    }
}

/// Removes a spooled notification (once it is durable in the daemon's own queue) and fsyncs
/// the directory. A file already gone is not an error.
pub fn remove(spooled: &Spooled) -> Result<(), SpoolError> {
    let remove_error = |source| SpoolError::Remove {
        path: spooled.path.clone(),
        source,
    };
    match fs::remove_file(&spooled.path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(remove_error(e)),
    }
    let dir = spooled.path.parent().unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(remove_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RefChange;

    fn notification(repo: &str, refname: &str) -> Notification {
        Notification {
            repo: repo.into(),
            refs: vec![RefChange {
                old: "0".repeat(40),
                new: "a".repeat(40),
                name: refname.into(),
            }],
            all_refs: false,
        }
    }

    #[test]
    fn written_notifications_are_read_back_oldest_first() {
        let state = tempfile::tempdir().expect("temporary directory");
        let first = notification("/srv/a.git", "refs/heads/main");
        let second = notification("/srv/b.git", "refs/tags/v1");
        let third = notification("/srv/a.git", "refs/heads/dev");
        let paths: Vec<PathBuf> = [&first, &second, &third]
            .iter()
            .map(|n| write(state.path(), n).expect("spooled"))
            .collect();
        let read = read_all(state.path());
        assert_eq!(
            read.iter().map(|s| &s.notification).collect::<Vec<_>>(),
            vec![&first, &second, &third]
        );
        assert_eq!(
            read.iter().map(|s| &s.path).collect::<Vec<_>>(),
            paths.iter().collect::<Vec<_>>()
        );
        let text = fs::read_to_string(&paths[0]).expect("readable");
        assert!(text.contains("\"repo\":\"/srv/a.git\""), "{text}");
        assert!(text.contains("\"ref\":\"refs/heads/main\""), "{text}");
    }

    #[test]
    fn modes_let_the_group_in() {
        let state = tempfile::tempdir().expect("temporary directory");
        let path = write(state.path(), &notification("/r.git", "refs/heads/x")).expect("spooled");
        let dir_mode = fs::metadata(spool_dir(state.path())).expect("dir").mode();
        assert_eq!(dir_mode & 0o7777, SPOOL_DIR_MODE);
        assert_eq!(
            fs::metadata(&path).expect("file").mode() & 0o777,
            SPOOL_FILE_MODE
        );
    }

    #[test]
    fn missing_state_dir_is_reported_not_created() {
        let root = tempfile::tempdir().expect("temporary directory");
        let state = root.path().join("missing");
        let error = write(&state, &notification("/r.git", "refs/heads/x")).expect_err("no dir");
        assert!(matches!(error, SpoolError::NoStateDir { .. }), "{error:?}");
        assert!(!state.exists());
    }

    #[test]
    fn empty_or_missing_spool_reads_empty() {
        let state = tempfile::tempdir().expect("temporary directory");
        assert!(read_all(state.path()).is_empty());
        fs::create_dir(spool_dir(state.path())).expect("mkdir");
        assert!(read_all(state.path()).is_empty());
    }

    #[test]
    fn garbage_is_set_aside_and_temporaries_are_skipped() {
        let state = tempfile::tempdir().expect("temporary directory");
        let good = write(state.path(), &notification("/r.git", "refs/heads/x")).expect("spooled");
        let dir = spool_dir(state.path());
        fs::write(dir.join("00000000000000000001-7.json"), "{\"repo\": tru").expect("write");
        fs::write(dir.join(".00000000000000000002-8.json.tmp"), "{").expect("write");
        fs::write(dir.join("README"), "not a notification").expect("write");
        let read = read_all(state.path());
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].path, good);
        assert!(dir.join("00000000000000000001-7.json.bad").exists());
        assert!(!dir.join("00000000000000000001-7.json").exists());
        assert!(dir.join(".00000000000000000002-8.json.tmp").exists());
        // Set aside once, not again.
        assert_eq!(read_all(state.path()).len(), 1);
        assert!(dir.join("00000000000000000001-7.json.bad").exists());
    }

    #[test]
    fn removed_notifications_are_gone_and_removing_twice_is_fine() {
        let state = tempfile::tempdir().expect("temporary directory");
        write(state.path(), &notification("/r.git", "refs/heads/x")).expect("spooled");
        let read = read_all(state.path());
        remove(&read[0]).expect("removed");
        remove(&read[0]).expect("already gone is fine");
        assert!(read_all(state.path()).is_empty());
    }

    #[test]
    fn order_follows_the_time_in_the_name() {
        assert!(sort_key("00000000000000000010-1.json") > sort_key("00000000000000000009-99.json"));
        assert_eq!(sort_key("odd.json"), (0, 0));
    }
}
