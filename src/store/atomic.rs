//! The one way pushmirror replaces a file: whole or not at all, and durable once it returns.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// What follows a temporary file's name: `.<name>.tmp-<pid>`.
const TMP_MARK: &str = ".tmp-";

/// Writes `bytes` to `path` with file mode `mode` so that a reader sees the whole file or
/// none of it, and a crash leaves either the old or the new content: a hidden temporary file
/// (`.<name>.tmp-<pid>`, which directory readers skip), fsync, rename, fsync of the directory.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!("{TMP_MARK}{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed the mode (the spool must stay readable by the group).
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Removes from `dir` the temporary files of [`write_atomically`] left by processes that no
/// longer run (a crash between write and rename); returns how many. Files of live processes
/// (a hook spooling right now) are kept.
pub fn sweep_temporaries(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = temporary_owner(&name.to_string_lossy()) else {
            continue;
        };
        if !process_exists(pid) && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Returns the pid that wrote temporary file `name`, if it is one.
fn temporary_owner(name: &str) -> Option<u32> {
    let (stem, pid) = name.strip_prefix('.')?.rsplit_once(TMP_MARK)?;
    if stem.is_empty() {
        return None;
    }
    pid.parse().ok()
}

fn process_exists(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporaries_of_dead_writers_are_swept_and_others_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dead = dir.path().join(".m.json.tmp-999999999");
        let live = dir
            .path()
            .join(format!(".m.json.tmp-{}", std::process::id()));
        let plain = dir.path().join("m.json");
        for path in [&dead, &live, &plain] {
            fs::write(path, "x").expect("write");
        }
        assert_eq!(sweep_temporaries(dir.path()), 1);
        assert!(!dead.exists() && live.exists() && plain.exists());
        assert_eq!(temporary_owner(".tmp-12"), None);
        assert_eq!(temporary_owner("m.tmp-12"), None);
    }
}
