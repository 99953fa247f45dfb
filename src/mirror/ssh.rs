//! The SSH side of a mirror's credentials, checked at the moment of each update: the key file
//! (present, mode 0600 or stricter, by the one rule of `credentials::too_open`) and the
//! known_hosts file that holds the pinned host keys.
//!
//! The key itself is never read here: ssh reads it from its path at each connection, so a
//! rotated key file is used by the next update without a restart, and no key material passes
//! through the daemon. The known_hosts file is written under `state_dir` from the
//! configuration (`<state_dir>/ssh/<name>.known_hosts`), and rewritten whenever its content
//! differs, so a reload that changes `ssh_known_hosts` takes effect at the next update.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::config::Mirror;
use crate::mirror::credentials::too_open;
use crate::mirror::remote::SshAccess;
use crate::store::write_atomically;

/// Why a mirror's SSH access could not be prepared. All are permanent until the operator acts.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error(
        "no pinned host keys: an SSH remote needs `ssh_known_hosts` (`pushmirror \
         detect-host-keys URL` prints the host's keys and their fingerprints)"
    )]
    NoPinnedHostKeys,
    #[error("ssh key {path} does not exist: `pushmirror ssh-keygen {mirror}` makes one")]
    KeyMissing { path: PathBuf, mirror: String },
    #[error("cannot read ssh key {path}")]
    KeyUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "refusing ssh key {path}: it is readable by group or others (mode {mode:04o}); chmod \
         600 it"
    )]
    KeyTooOpen { path: PathBuf, mode: u32 },
    #[error("cannot write the pinned host keys to {path}")]
    KnownHostsWrite {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Returns what ssh needs for `mirror`'s remote, or `None` when its URL does not run ssh.
pub fn prepare(mirror: &Mirror) -> Result<Option<SshAccess>, SshError> {
    if !mirror.url.is_ssh() {
        return Ok(None);
    }
    let ssh = &mirror.ssh;
    if ssh.known_hosts.is_empty() {
        return Err(SshError::NoPinnedHostKeys);
    }
    check_key(&ssh.key, mirror.name.as_str())?;
    write_known_hosts(&ssh.known_hosts_file, &ssh.known_hosts)?;
    Ok(Some(SshAccess {
        key: ssh.key.clone(),
        known_hosts_file: ssh.known_hosts_file.clone(),
    }))
}

/// Checks that the key file at `path` exists and is readable by its owner only.
fn check_key(path: &Path, mirror: &str) -> Result<(), SshError> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(SshError::KeyMissing {
                path: path.to_owned(),
                mirror: mirror.to_owned(),
            });
        }
        Err(source) => {
            return Err(SshError::KeyUnreadable {
                path: path.to_owned(),
                source,
            });
        }
    };
    let mode = meta.permissions().mode();
    if too_open(mode) {
        return Err(SshError::KeyTooOpen {
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

/// Writes `lines` to `path` (mode 0600, in a 0700 directory) unless it holds them already.
fn write_known_hosts(path: &Path, lines: &[String]) -> Result<(), SshError> {
    let error = |source| SshError::KnownHostsWrite {
        path: path.to_owned(),
        source,
    };
    let mut content = lines.join("\n");
    content.push('\n');
    if std::fs::read(path).is_ok_and(|current| current == content.as_bytes()) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(error)?;
    }
    write_atomically(path, content.as_bytes(), 0o600).map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_is_written_once_and_rewritten_when_it_changes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ssh").join("m.known_hosts");
        write_known_hosts(&path, &["a ssh-ed25519 AAAA".to_owned()]).expect("written");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "a ssh-ed25519 AAAA\n"
        );
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(path.parent().expect("parent"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let lines = ["a ssh-ed25519 BBBB".to_owned(), "b ssh-rsa CCCC".to_owned()];
        write_known_hosts(&path, &lines).expect("rewritten");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "a ssh-ed25519 BBBB\nb ssh-rsa CCCC\n"
        );
    }

    #[test]
    fn a_key_open_to_others_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = dir.path().join("k");
        assert!(matches!(
            check_key(&key, "m"),
            Err(SshError::KeyMissing { .. })
        ));
        std::fs::write(&key, "not read").expect("written");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let error = check_key(&key, "m").expect_err("too open");
        assert!(error.to_string().contains("mode 0640"), "{error}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        check_key(&key, "m").expect("0600 is fine");
    }
}
