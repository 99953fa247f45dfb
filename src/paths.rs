//! Path helpers shared by every process, so that the hook, the admin commands and the daemon
//! name a repository or a configured file the same way.

use std::path::{Component, Path, PathBuf};

/// Returns `path` resolved against `base` lexically: `.` dropped, `..` taken off the path so
/// far, symbolic links left alone (configuration paths are relative to the file's directory
/// as written, whatever links lie below it).
pub fn resolve(base: &Path, path: impl AsRef<Path>) -> PathBuf {
    let mut out = PathBuf::new();
    for component in base.join(path).components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Returns `path` absolute (against the current directory) and canonical when it exists, as
/// given otherwise. Repositories are matched by this form: the hook's `GIT_DIR`, a
/// `sync --repo` argument and a configured `repo` meet here.
pub fn canonical(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    std::fs::canonicalize(&absolute).unwrap_or(absolute)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_is_lexical() {
        assert_eq!(
            resolve(Path::new("/etc/pm"), "../state/./x"),
            Path::new("/etc/state/x")
        );
        assert_eq!(resolve(Path::new("/etc"), "/abs"), Path::new("/abs"));
    }

    #[test]
    fn canonical_follows_links_when_the_path_exists() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let real = dir.path().join("real");
        std::fs::create_dir(&real).expect("mkdir");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let real = std::fs::canonicalize(&real).expect("canonical");
        assert_eq!(canonical(&link), real);
        assert_eq!(canonical(&link.join("missing")), link.join("missing"));
    }
}
