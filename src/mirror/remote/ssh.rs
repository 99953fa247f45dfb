//! The ssh that git runs for `ssh://` and scp-like remotes, built as one `GIT_SSH_COMMAND`.
//!
//! Nothing of the daemon user's SSH setup takes part: `-F /dev/null` (an empty file: no
//! `~/.ssh/config`, no `/etc/ssh/ssh_config`), the pinned host keys of the mirror as the only
//! known hosts (`UserKnownHostsFile` the file the engine wrote, `GlobalKnownHostsFile
//! /dev/null`) checked strictly, the mirror's key as the only identity (`IdentitiesOnly`,
//! `IdentityAgent none`), and never a prompt (`BatchMode`). OpenSSH takes `~` from the passwd
//! entry, not from `$HOME`, so these options are the only way to keep `~/.ssh` out.
//!
//! The key is named by its path; ssh reads it itself at each connection, so no key material
//! is ever in an argv or an environment, and a rotated key file is used by the next update.
//! `LogLevel DEBUG1` makes ssh print the offered host key's fingerprint
//! (`debug1: Server host key: ...`), which `classify` puts in the error of a mismatch or an
//! unknown host; the debug lines are dropped from every error shown.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// What ssh needs for one mirror: the private key and the known_hosts file holding the
/// pinned host keys. Paths only: no secret lives here.
#[derive(Debug, Clone)]
pub struct SshAccess {
    pub key: PathBuf,
    pub known_hosts_file: PathBuf,
}

/// Seconds ssh waits for the TCP connection before giving up (a transient failure).
const CONNECT_TIMEOUT_SECS: u32 = 30;

/// Returns the variables that make git run ssh as the module documentation says. Without
/// `access` (a remote that is not SSH) ssh trusts no host at all, so that nothing can make
/// git connect over SSH with another mirror's or the user's keys.
pub(super) fn ssh_env(access: Option<&SshAccess>) -> Vec<(String, OsString)> {
    vec![
        (
            "GIT_SSH_COMMAND".to_owned(),
            OsString::from(command(access)),
        ),
        // git then passes the port as `-p` and knows which options the program takes.
        ("GIT_SSH_VARIANT".to_owned(), OsString::from("ssh")),
    ]
}

/// Returns the shell command line of ssh (git runs `GIT_SSH_COMMAND` through `sh -c`).
fn command(access: Option<&SshAccess>) -> String {
    let known_hosts = access.map_or(Path::new("/dev/null"), |a| a.known_hosts_file.as_path());
    let mut options = vec![
        "BatchMode=yes".to_owned(),
        "StrictHostKeyChecking=yes".to_owned(),
        format!("UserKnownHostsFile={}", ssh_path(known_hosts)),
        "GlobalKnownHostsFile=/dev/null".to_owned(),
        "UpdateHostKeys=no".to_owned(),
        "CheckHostIP=no".to_owned(),
        "IdentitiesOnly=yes".to_owned(),
        "IdentityAgent=none".to_owned(),
        "PasswordAuthentication=no".to_owned(),
        "KbdInteractiveAuthentication=no".to_owned(),
        "ControlMaster=no".to_owned(),
        "ControlPath=none".to_owned(),
        format!("ConnectTimeout={CONNECT_TIMEOUT_SECS}"),
        "ServerAliveInterval=15".to_owned(),
        "ServerAliveCountMax=4".to_owned(),
        "LogLevel=DEBUG1".to_owned(),
    ];
    match access {
        Some(access) => options.push(format!("IdentityFile={}", ssh_path(&access.key))),
        None => options.push("PubkeyAuthentication=no".to_owned()),
    }
    let mut line = String::from("ssh -F /dev/null");
    for option in options {
        line.push_str(" -o ");
        line.push_str(&shell_quote(&option));
    }
    line
}

/// Returns `path` as ssh's configuration reads it: `%` starts a token there, so it is doubled.
fn ssh_path(path: &Path) -> String {
    path.to_string_lossy().replace('%', "%%")
}

/// Returns `word` quoted for `sh`: in single quotes, each `'` written `'\''`.
fn shell_quote(word: &str) -> String {
    if word
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"=/._-:,+@".contains(&b))
    {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_pins_everything_and_quotes_paths() {
        let access = SshAccess {
            key: PathBuf::from("/var/lib/pm/keys/it's 100%"),
            known_hosts_file: PathBuf::from("/var/lib/pm/ssh/app.known_hosts"),
        };
        let line = command(Some(&access));
        assert!(
            line.starts_with("ssh -F /dev/null -o BatchMode=yes "),
            "{line}"
        );
        for option in [
            "StrictHostKeyChecking=yes",
            "UserKnownHostsFile=/var/lib/pm/ssh/app.known_hosts",
            "GlobalKnownHostsFile=/dev/null",
            "IdentitiesOnly=yes",
            "IdentityAgent=none",
            r"'IdentityFile=/var/lib/pm/keys/it'\''s 100%%'",
        ] {
            assert!(
                line.contains(&format!(" -o {option}")),
                "{option} in {line}"
            );
        }
        let sh = std::process::Command::new("sh")
            .args(["-c", &format!("printf '%s\\n' {line}")])
            .output()
            .expect("sh runs");
        let words = String::from_utf8(sh.stdout).expect("utf-8");
        assert!(
            words
                .lines()
                .any(|w| w == "IdentityFile=/var/lib/pm/keys/it's 100%%"),
            "{words}"
        );
    }

    #[test]
    fn without_access_no_host_is_trusted() {
        let line = command(None);
        assert!(line.contains("UserKnownHostsFile=/dev/null"), "{line}");
        assert!(line.contains("PubkeyAuthentication=no"), "{line}");
        assert!(!line.contains("IdentityFile"), "{line}");
    }
}
